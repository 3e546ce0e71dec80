"""Friendship rules: mutual friendships that start with a request the other side answers."""

import enum

from chatserver.domain.errors import InvalidRequest, RateLimited

# A requester who was declined may ask the one who declined again once this has passed
# (issue 13.4), so friend requests cannot be used to pester.
ASK_AGAIN_AFTER_DECLINE_MS = 86_400_000


class RequestOutcome(enum.Enum):
    """What asking someone to be your friend does, given where the two of you stand."""

    ALREADY_FRIENDS = "already friends"
    ACCEPTS_THEIRS = "accepts their request"
    SENT = "request sent"


def outcome_of_request(
    requester_id: int,
    addressee_id: int,
    *,
    are_friends: bool,
    they_asked_first: bool,
    declined_at_ms: int | None = None,
    now_ms: int = 0,
) -> RequestOutcome:
    """declined_at_ms: when the addressee last declined the requester's request, if they did.
    A new request within a day of it is RateLimited (errno 9); answering a request the
    addressee made since, or asking a friend, is not a new request and is never refused."""
    if requester_id == addressee_id:
        raise InvalidRequest("you cannot befriend yourself")
    if are_friends:
        return RequestOutcome.ALREADY_FRIENDS
    if they_asked_first:
        return RequestOutcome.ACCEPTS_THEIRS
    if declined_at_ms is not None and decline_still_counts(declined_at_ms, now_ms):
        raise RateLimited("that user declined your request: you may ask again a day after")
    return RequestOutcome.SENT


def decline_still_counts(declined_at_ms: int, now_ms: int) -> bool:
    """Whether a decline made at declined_at_ms still refuses a new request at now_ms."""
    return now_ms < declined_at_ms + ASK_AGAIN_AFTER_DECLINE_MS


def check_answer(responder_id: int, requester_id: int) -> None:
    if responder_id == requester_id:
        raise InvalidRequest("you cannot answer a request of your own")
