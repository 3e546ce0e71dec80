"""What a connection hands its requests to: a table from command type to the use case that
serves it. The node carries one (Node.handlers), filled at bootstrap from
application.dispatch, so that the connection imports no use case."""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from attrs import Factory, frozen

from chatserver.application.results import Result

# A use case: (command, *, connection) -> its result.
UseCase = Callable[..., Awaitable[Result]]
# A use case that can serve a command without a coroutine of its own, by joining the inbox
# batch being gathered: (command, *, connection, answer, lead) -> whether it did.
JoiningUseCase = Callable[..., bool]


@frozen
class Handlers:
    """The use cases of a node, by the type of command they serve."""

    use_cases: Mapping[type[Any], UseCase] = Factory(dict)
    # Those that can also join the batch being gathered (Connection.handle_joining).
    joining: Mapping[type[Any], JoiningUseCase] = Factory(dict)
