"""What a ProtocolClient needs of its listener (protocol_server.ProtocolServer), as a Protocol:
the driver's two modules then import each other in one direction only."""

import asyncio
import ssl
from collections.abc import Coroutine
from typing import Any, Protocol

from chatserver.adapters.connection_core import TransportLimits
from chatserver.adapters.metrics import PrometheusMetrics
from chatserver.adapters.proxy_header import TrustedProxies
from chatserver.adapters.serving.admission import Admission
from chatserver.adapters.serving.settings import ConnectionsPerAddress
from chatserver.application.node import Node


class Listener(Protocol):
    node: Node
    limits: TransportLimits
    metrics: PrometheusMetrics | None
    trusted: TrustedProxies
    tls: ssl.SSLContext | None
    per_address: ConnectionsPerAddress
    admission: Admission
    shutting_down: bool
    receive_buffer: memoryview  # one for every client: the loop fills and empties it at once

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def admit(self, client: Any) -> bool: ...

    def flush_soon(self, client: Any) -> None: ...

    def run_batch(self, leading: Coroutine[Any, Any, None]) -> None: ...
