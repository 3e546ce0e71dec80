"""`python -m benchmarks.inbox_append [--mysql URL]`: what storing in the inbox costs per entry.

One batch is what one loop turn of group commit hands the store: ENTRIES (user, delivery) pairs
over USERS users, appended in one transaction. Timed in one process, wall clock of the whole
transaction (commit included) and its CPU, averaged over ROUNDS batches into a growing
database; SQLite in a temporary file (WAL, synchronous NORMAL, as the server opens it), or
MySQL/MariaDB at --mysql (an empty database of its own, which the run fills).
"""

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import anyio

from chatserver.adapters.mysql.unit_of_work import open_mysql
from chatserver.adapters.sqlite.unit_of_work import open_sqlite
from chatserver.domain.messages import Delivery, DirectMessage, GroupMessage
from chatserver.domain.ports import Transaction, UnitOfWork


def batch(first_msg_id: int, entries: int, users: int) -> list[tuple[int, Delivery]]:
    """Half one-to-one chats (sender's and recipient's copy), half a group message's copies."""
    made: list[tuple[int, Delivery]] = []
    msg_id = first_msg_id
    while len(made) < entries:
        sender, recipient = 1 + msg_id % users, 1 + (msg_id * 7 + 3) % users
        if msg_id % 2:
            chat = DirectMessage(msg_id, sender, "sender", recipient, "hello there " * 3, 0)
            made += [(sender, chat), (recipient, chat)]
        else:
            group: Delivery = GroupMessage(msg_id, 1, sender, "sender", "hi all " * 5, 0)
            made += [(1 + (msg_id + i) % users, group) for i in range(10)]
        msg_id += 1
    return made[:entries]


def append(tx: Transaction, entries: list[tuple[int, Delivery]]) -> list[int]:
    return tx.inbox.append(entries, 0)


async def measure(uow: UnitOfWork, entries: int, users: int, rounds: int) -> tuple[float, float]:
    def add_users(tx: Transaction) -> None:
        for i in range(users):
            tx.users.add(f"user{i}", "hash")

    await uow.run(add_users)
    batches = [batch(1 + i * entries, entries, users) for i in range(rounds + 1)]
    await uow.run(partial(append, entries=batches[0]))  # warm up
    wall = cpu = 0.0
    for one in batches[1:]:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        await uow.run(partial(append, entries=one))
        wall += time.perf_counter() - start_wall
        cpu += time.process_time() - start_cpu
    per = 1e6 / (rounds * entries)
    return wall * per, cpu * per


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--mysql", help="mysql://user@host:port/empty_database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        if args.mysql:
            uow: UnitOfWork = await open_mysql(args.mysql)
            where = "MySQL"
        else:
            uow = await open_sqlite(Path(directory) / "bench.sqlite3")
            where = "SQLite"
        try:
            wall, cpu = await measure(uow, args.entries, args.users, args.rounds)
        finally:
            await uow.aclose()
    print(
        f"{where}: batches of {args.entries} entries over {args.users} users:"
        f" {wall:.1f} µs per entry (wall, commit included), {cpu:.1f} µs CPU"
    )


if __name__ == "__main__":
    anyio.run(main)
