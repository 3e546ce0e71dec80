"""The TCP transport: an anyio listener that speaks PROTOCOL.md to every client."""
