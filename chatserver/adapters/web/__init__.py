"""The web transport: the chat page and the protocol over WebSocket."""
