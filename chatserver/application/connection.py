"""A client connection as the core sees it: who is logged in on it, and what it asks for."""

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from attrs import Factory, define, field

from chatserver.application import lifecycle
from chatserver.application.commands import ANONYMOUS_COMMANDS, Command
from chatserver.application.handling import JoiningUseCase, UseCase
from chatserver.application.node import Node
from chatserver.application.results import Result
from chatserver.application.sessions import Session
from chatserver.application.turns import Turns
from chatserver.domain.errors import ChatError, Forbidden, NotLoggedIn
from chatserver.domain.ports import Outbox
from chatserver.domain.users import User


@define(eq=False)
class Connection:
    """One client's link to this node; the transport makes one per accepted connection.

    Requests go to the node's use cases (Node.handlers, attached at bootstrap)."""

    node: Node
    outbox: Outbox
    # Where the client connects from, for limits per address.
    address: str = "local"
    session: Session | None = None
    # The order in which its chats join the inbox queue (they may be served concurrently).
    turns: Turns = Factory(Turns)
    _use_cases: Mapping[type[Any], UseCase] = field(init=False)
    _joining: Mapping[type[Any], JoiningUseCase] = field(init=False)

    def __attrs_post_init__(self) -> None:
        handlers = self.node.handlers
        self._use_cases = handlers.use_cases
        self._joining = handlers.joining

    def _live_session(self) -> Session | None:
        session = self.session
        if session is not None and session.ended:
            self.session = session = None  # replaced by a newer login, or ended for lagging
        return session

    @property
    def logged_in(self) -> bool:
        return self._live_session() is not None

    @property
    def user(self) -> User:
        session = self.session
        if session is None or session.ended:  # the hot path reads it once per message
            session = self.require_session()
        return session.user

    def require_session(self) -> Session:
        session = self._live_session()
        if session is None:
            raise NotLoggedIn()
        return session

    async def handle(self, command: Command, claimed_id: int | None = None) -> Result:
        """Serve one request, reporting faults in the protocol's order: 7, 3, 10, then the rest."""
        validate = getattr(command, "validate", None)
        if validate is not None:
            validate()
        session = self.session
        if session is not None and session.ended:  # _live_session, inline: once per request
            self.session = session = None
        if session is None:
            if not isinstance(command, ANONYMOUS_COMMANDS):
                raise NotLoggedIn()
        elif claimed_id is not None and claimed_id != session.user.id:
            raise Forbidden()
        return await self._use_cases[type(command)](command, connection=self)

    def handle_joining(
        self,
        command: Command,
        claimed_id: int | None,
        answer: Callable[[Result | ChatError], None],
        lead: Callable[[Coroutine[Any, Any, None]], None] | None = None,
    ) -> bool:
        """handle(), without a coroutine, for the commands that can join the inbox batch being
        gathered (Handlers.joining): True once it has, and answer is called right after its commit;
        False, with nothing done, when handle() is the way. lead, if given, runs a batch's
        leader in a task of its own (then a batch is started when none is gathering). Faults
        are raised as handle() raises them, in the same order."""
        joining = self._joining.get(type(command))
        if joining is None:
            return False
        validate = getattr(command, "validate", None)
        if validate is not None:
            validate()
        session = self.session
        if session is not None and session.ended:
            self.session = session = None
        if session is None:
            raise NotLoggedIn()
        if claimed_id is not None and claimed_id != session.user.id:
            raise Forbidden()
        return joining(command, connection=self, answer=answer, lead=lead)

    def replied(self) -> None:
        """The hook after LOGIN: call it once the reply to a LOGIN is queued (no other request
        needs it), so that the new session may receive events. Harmless at any other time."""
        lifecycle.login_replied(self.session)

    async def disconnect(self, reason: str = "connection closed") -> None:
        """The connection is gone: end its session as a logout would."""
        await lifecycle.end_connection_session(self, reason)
