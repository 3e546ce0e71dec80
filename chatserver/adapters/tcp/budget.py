"""Moved to chatserver.adapters.serving.settings (shared by every listener); kept for imports."""

from chatserver.adapters.serving.settings import ConnectionsPerAddress, RequestBudget
from chatserver.adapters.serving.settings import ListenerSettings as TcpSettings

__all__ = ["ConnectionsPerAddress", "RequestBudget", "TcpSettings"]
