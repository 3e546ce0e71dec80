"""What a node does with events other nodes send it over the bus."""

from attrs import define

from chatserver.application.accounts import kick
from chatserver.application.node import Node
from chatserver.domain.messages import Event


@define
class NodeInbox:
    """The bus handler of a node: deliver to a session here, or end one that was replaced."""

    node: Node

    async def deliver(self, user_id: int, event: Event) -> bool:
        session = self.node.sessions.get(user_id)
        return session is not None and session.push(event)

    async def kick(self, user_id: int) -> None:
        await kick(user_id, node=self.node)
