"""Opening Redis from a `redis://host:port/db?namespace=NAME` URL, and its failures as errno 11."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatserver.domain.errors import Unavailable

DEFAULT_NAMESPACE = "chatserver"
# Every call to Redis is bounded: a dead Redis costs a request 2 s at most, never forever.
TIMEOUT_SECONDS = 2.0
FAILURES = (RedisConnectionError, RedisTimeoutError, OSError)
POOL_SIZE = 100  # connections to Redis per node, pub/sub's included


def split_url(url: str) -> tuple[str, str]:
    """The URL redis-py understands, and the namespace of this chat cluster's keys."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    namespace = query.pop("namespace", DEFAULT_NAMESPACE)
    return urlunsplit(parts._replace(query=urlencode(query))), namespace


def open_redis(url: str) -> aioredis.Redis:
    # redis-py's default pool fails a command at once ("Too many connections") when its 100
    # connections are busy, as they are under load: a sender got errno 11 and a node's lease
    # went unrenewed. This pool makes the command wait for a connection instead (bounded).
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=TIMEOUT_SECONDS,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        health_check_interval=10,
    )
    return aioredis.Redis.from_pool(pool)


class Calls:
    """How a node's calls to Redis go: a failure becomes Unavailable (errno 11), and each
    call's time goes to observe, when set (the metrics' "redis" dependency)."""

    def __init__(self) -> None:
        self.observe: Callable[[float], None] | None = None

    @contextmanager
    def call(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except FAILURES as error:
            raise Unavailable("the message bus is down: try again") from error
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - started)
