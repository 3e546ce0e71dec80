"""The UserRepository contract."""

from contextlib import suppress

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatserver.domain.errors import NameTaken
from chatserver.domain.names import name_key
from chatserver.domain.ports import Transaction, UnitOfWork
from chatserver.domain.users import Account, User

from .adapters import NewUnitOfWork
from .sample import TRICKY_TEXT, per_example

pytestmark = pytest.mark.anyio


async def test_users_get_ids_counting_from_one(uow: UnitOfWork) -> None:
    users = await uow.run(lambda tx: [tx.users.add(name, "hash") for name in ("a", "b", "c")])
    assert users == [User(1, "a"), User(2, "b"), User(3, "c")]


async def test_a_user_is_found_by_id_and_by_name(uow: UnitOfWork) -> None:
    alice = await uow.run(lambda tx: tx.users.add("alice", "alice's hash"))

    def find(tx: Transaction) -> tuple[User | None, Account | None, Account | None]:
        return tx.users.get(alice.id), tx.users.account(alice.id), tx.users.account_by_name("alice")

    account = Account(alice, "alice's hash")
    assert await uow.run(find) == (alice, account, account)


async def test_unknown_users_are_none(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: tx.users.add("alice", "hash"))

    def find(tx: Transaction) -> tuple[User | None, Account | None, Account | None]:
        return tx.users.get(2), tx.users.account(2), tx.users.account_by_name("bob")

    assert await uow.run(find) == (None, None, None)


async def test_a_taken_name_raises_name_taken(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: tx.users.add("alice", "first"))
    with pytest.raises(NameTaken):
        await uow.run(lambda tx: tx.users.add("alice", "second"))
    account = await uow.run(lambda tx: tx.users.account_by_name("alice"))
    assert account == Account(User(1, "alice"), "first")


async def test_a_failed_add_uses_up_no_id_and_spoils_no_transaction(uow: UnitOfWork) -> None:
    await uow.run(lambda tx: tx.users.add("alice", "hash"))

    def add_twice(tx: Transaction) -> User:
        with suppress(NameTaken):
            tx.users.add("alice", "hash")
        return tx.users.add("bob", "hash")

    assert await uow.run(add_twice) == User(2, "bob")
    assert await uow.run(lambda tx: tx.users.get(2)) == User(2, "bob")


@per_example
@given(name=st.text(), password_hash=st.text())
@example(name=TRICKY_TEXT, password_hash=TRICKY_TEXT)
@example(name="\x00", password_hash="")
async def test_names_and_hashes_round_trip_unchanged(
    new_uow: NewUnitOfWork, name: str, password_hash: str
) -> None:
    uow = await new_uow()
    user = await uow.run(lambda tx: tx.users.add(name, password_hash))
    account = await uow.run(lambda tx: tx.users.account_by_name(name))
    assert account == Account(User(user.id, name), password_hash)


@per_example
@given(names=st.lists(st.text(), min_size=2, max_size=5, unique_by=name_key))
async def test_distinct_names_stay_distinct(new_uow: NewUnitOfWork, names: list[str]) -> None:
    uow = await new_uow()
    users = await uow.run(lambda tx: [tx.users.add(name, name) for name in names])
    found = await uow.run(lambda tx: [tx.users.account_by_name(name) for name in names])
    assert found == [Account(user, user.name) for user in users]


async def test_a_password_hash_is_replaced_and_an_unknown_user_is_false(uow: UnitOfWork) -> None:
    alice = await uow.run(lambda tx: tx.users.add("alice", "old hash"))

    def replace(tx: Transaction) -> tuple[bool, bool]:
        return tx.users.set_password_hash(alice.id, "new hash"), tx.users.set_password_hash(
            alice.id + 1, "x"
        )

    assert await uow.run(replace) == (True, False)
    found = await uow.run(
        lambda tx: (tx.users.account(alice.id), tx.users.account_by_name("alice"))
    )
    assert found == (Account(alice, "new hash"), Account(alice, "new hash"))


@pytest.mark.parametrize(("first", "other"), [
    ("paypal", "\u0440\u0430\u0443\u0440\u0430l"),  # "раураl": every letter Cyrillic but the l
    ("admin", "\u0430dmin"),  # a Cyrillic а: also refused as mixed-script by the use case
    ("\u0441\u0430\u0440", "cap"),  # the Cyrillic name first, then the Latin look-alike
    ("opa", "\u03bf\u03c1\u03b1"),  # Greek
    ("bill", "BI11"),
    ("modern", "rnodern"),
])
async def test_a_name_that_looks_like_a_taken_one_is_taken(
    uow: UnitOfWork, first: str, other: str
) -> None:
    """Issue 16.10: a whole-script look-alike passed the mixed-script rule; names are now
    keyed by their skeleton (Unicode TR 39), on every store."""
    taken = await uow.run(lambda tx: tx.users.add(first, "hash"))
    with pytest.raises(NameTaken):
        await uow.run(lambda tx: tx.users.add(other, "hash"))
    assert await uow.run(lambda tx: tx.users.account_by_name(other)) is None
    found = await uow.run(lambda tx: tx.users.account_by_name(first))
    assert found is not None and found.user == taken
    # Names that merely share letters are not look-alikes.
    await uow.run(lambda tx: tx.users.add(f"{first}s", "hash"))
    await uow.run(lambda tx: tx.users.add("\u0438\u0432\u0430\u043d", "hash"))  # иван, beside...
    await uow.run(lambda tx: tx.users.add("ivan", "hash"))  # ...ivan: they do not look alike


@pytest.mark.parametrize("other", ["bob", "BOB", "bOB"])
async def test_a_name_differing_only_in_case_is_taken_and_the_first_keeps_working(
    uow: UnitOfWork, other: str
) -> None:
    bob = await uow.run(lambda tx: tx.users.add("Bob", "hash"))
    with pytest.raises(NameTaken):
        await uow.run(lambda tx: tx.users.add(other, "hash"))
    found = await uow.run(lambda tx: tx.users.account_by_name("Bob"))
    assert found is not None and found.user == bob
    assert await uow.run(lambda tx: tx.users.account_by_name(other)) is None
    assert [(n.id, n.name, n.keyed) for n in await uow.run(lambda tx: tx.users.names())] == [
        (bob.id, "Bob", True)
    ]


async def test_a_name_is_in_use_by_itself_its_case_variants_and_look_alikes(
    uow: UnitOfWork,
) -> None:
    await uow.run(lambda tx: tx.users.add("Scope", "hash"))
    found = await uow.run(
        lambda tx: [
            tx.users.name_in_use(name)
            for name in ("Scope", "scope", "SCOPE", "\u0455\u0441\u043e\u0440\u0435", "scopes")
        ]
    )
    assert found == [True, True, True, True, False]
