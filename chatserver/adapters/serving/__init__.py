"""What every listener shares, whatever its transport (asyncio Protocols, anyio streams,
WebSocket): the settings a listener is built with and the count of connections per address
(settings), serving one request frame (requests), and serving one connection on anyio around a
ConnectionCore (streaming). No listener imports another's package: each imports this one."""
