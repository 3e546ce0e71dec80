"""Which existing user and group names break today's rules for names (issue 16.10).

Names registered before the rules keep working (LOGIN by name is exact); an operator reads
this report (`chatserver db check-names`, and after `db upgrade`) to decide what to do.
"""

from chatserver.domain.groups import MAX_GROUP_NAME_LENGTH
from chatserver.domain.names import name_problems
from chatserver.domain.ports import Transaction
from chatserver.domain.users import MAX_NAME_LENGTH


def names_breaking_the_rules(tx: Transaction) -> list[str]:
    """A line per user or group whose name breaks a rule, saying which."""
    lines = []
    for named in tx.users.names():
        problems = name_problems(named, field="name", max_length=MAX_NAME_LENGTH)
        if problems:
            lines.append(f"user {named.id} {named.name!r}: {'; '.join(problems)}")
    for named in tx.groups.names():
        problems = name_problems(named, field="groupname", max_length=MAX_GROUP_NAME_LENGTH)
        if problems:
            lines.append(f"group {named.id} {named.name!r}: {'; '.join(problems)}")
    return lines
