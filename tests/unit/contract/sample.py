"""Sample users and text shared by the contract tests."""

from hypothesis import HealthCheck, settings

from chatserver.domain.ports import Transaction
from chatserver.domain.users import User

# Everything that has broken a hand-built SQL string or a careless codec somewhere.
TRICKY_TEXT = "it's \"quoted\" \\ back\\slashed \x00 NUL, 中文, emoji 😀👩‍👩‍👧, ' OR 1=1 --"

# For tests that open a fresh unit of work per example through the function-scoped new_uow;
# 50 examples, as opening a SQLite file takes milliseconds.
per_example = settings(
    max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)


def add_users(tx: Transaction, *names: str) -> list[User]:
    return [tx.users.add(name, "hash") for name in names]
