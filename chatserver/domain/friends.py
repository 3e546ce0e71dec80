"""Friendship rules: mutual friendships that start with a request the other side answers."""

import enum

from chatserver.domain.errors import InvalidRequest


class RequestOutcome(enum.Enum):
    """What asking someone to be your friend does, given where the two of you stand."""

    ALREADY_FRIENDS = "already friends"
    ACCEPTS_THEIRS = "accepts their request"
    SENT = "request sent"


def outcome_of_request(
    requester_id: int, addressee_id: int, *, are_friends: bool, they_asked_first: bool
) -> RequestOutcome:
    if requester_id == addressee_id:
        raise InvalidRequest("you cannot befriend yourself")
    if are_friends:
        return RequestOutcome.ALREADY_FRIENDS
    if they_asked_first:
        return RequestOutcome.ACCEPTS_THEIRS
    return RequestOutcome.SENT


def check_answer(responder_id: int, requester_id: int) -> None:
    if responder_id == requester_id:
        raise InvalidRequest("you cannot answer a request of your own")
