"""Group memberships kept in memory, so a group message needs no database to find its members."""

from attrs import Factory, define, frozen

from chatserver.domain.errors import UnknownGroup
from chatserver.domain.groups import Group, Member
from chatserver.domain.ports import Transaction, UnitOfWork


@frozen
class GroupRoster:
    group: Group
    members: dict[int, Member]


@define
class GroupDirectory:
    """A cache of group rosters, loaded on first use and forgotten when membership changes."""

    uow: UnitOfWork
    # Past this many, the roster loaded first is dropped (a group message to any group id,
    # a member's or not, loads one). Insertion order: a hit costs nothing more.
    limit: int = 10_000
    rosters: dict[int, GroupRoster] = Factory(dict)

    async def roster(self, group_id: int) -> GroupRoster:
        roster = self.rosters.get(group_id)
        if roster is None:

            def load(tx: Transaction) -> GroupRoster:
                group = tx.groups.get(group_id)
                if group is None:
                    raise UnknownGroup()
                return GroupRoster(group, {m.user.id: m for m in tx.groups.members(group_id)})

            roster = await self.uow.run(load)
            rosters = self.rosters
            if len(rosters) >= self.limit:
                del rosters[next(iter(rosters))]
            rosters[group_id] = roster
        return roster

    def forget(self, group_id: int) -> None:
        self.rosters.pop(group_id, None)
