"""Password hashing with scrypt (memory-hard), run in worker threads off the event loop.

The threads are the hasher's own (adapters.worker_threads: cheaper to hand work to than
anyio.to_thread's).

Cost: n=2**14, r=8, p=1 uses 16 MiB and about 85 ms of one core per hash on this project's
reference machine. Hashes are stored as ``scrypt$n$r$p$salt$hash`` (base64), so a later cost
can be adopted without breaking stored ones.
"""

import base64
import hashlib
import hmac
import os

from attrs import define, field

from chatserver.adapters.worker_threads import WorkerThreads, run_in

DEFAULT_COST = 2**14
_DUMMY_SALT = b"chatserver-dummy"


@define
class ScryptHasher:
    n: int = DEFAULT_COST
    r: int = 8
    p: int = 1
    # Hashing is CPU-bound: more threads than cores only queue up inside the kernel.
    threads: int = 2
    _pool: WorkerThreads | None = field(default=None, init=False, repr=False, eq=False)

    async def hash(self, password: str) -> str:
        salt = os.urandom(16)
        digest = await self._derive(password, salt, self.n, self.r, self.p)
        return "$".join(
            ["scrypt", str(self.n), str(self.r), str(self.p), _b64(salt), _b64(digest)]
        )

    async def verify(self, password: str, password_hash: str | None) -> bool:
        parsed = _parse(password_hash) if password_hash else None
        if parsed is None:
            # Spend the same time as a real check, so a missing user cannot be told apart.
            await self._derive(password, _DUMMY_SALT, self.n, self.r, self.p)
            return False
        n, r, p, salt, expected = parsed
        digest = await self._derive(password, salt, n, r, p)
        return hmac.compare_digest(digest, expected)

    async def _derive(self, password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        def derive() -> bytes:
            return hashlib.scrypt(
                password.encode("utf-8", "surrogatepass"),
                salt=salt,
                n=n,
                r=r,
                p=p,
                maxmem=256 * 1024 * 1024,
                dklen=32,
            )

        pool = self._pool
        if pool is None:
            pool = self._pool = WorkerThreads(self.threads, "chatserver-hash")
        # A hash under way is waited for, as its hashing slot (Node.hashing) stands for it.
        return await run_in(pool, derive)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse(password_hash: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = password_hash.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        return n, r, p, base64.b64decode(parts[4]), base64.b64decode(parts[5])
    except ValueError:
        return None
