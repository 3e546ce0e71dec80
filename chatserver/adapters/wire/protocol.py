"""The message numbers of the wire protocol and the two dialects a client can speak."""

import enum

LOGIN = 1
LOGIN_ACK = 2
LOGOUT = 3
REGISTER = 4
REGISTER_ACK = 5
ONE_CHAT = 6
ADD_FRIEND = 7
CREATE_GROUP = 8
ADD_GROUP = 9
GROUP_CHAT = 10
ACK = 11
FRIEND_REQUEST = 12
FRIEND_RESPONSE = 13
PRESENCE = 14
KICKED = 15
PING = 16
LEAVE_GROUP = 17
REMOVE_FRIEND = 18
RECEIPT = 19
# Version 2
SYNC = 20
HISTORY = 21
READ = 22
GROUP_KICK = 23
GROUP_ROLE = 24
GROUP_TRANSFER = 25
GROUP_DISSOLVE = 26
GROUP_MUTE = 27
GROUP_UPDATE = 28
GROUP_EVENT = 29
BLOCK = 30
FRIEND_REMOVED = 31
ACCOUNT = 32
FILE_UPLOAD = 33
FILE_URL = 34


class Dialect(enum.Enum):
    """How a connection talks: this protocol, or the original C++ server's (NUL-framed) one."""

    MODERN = "modern"
    LEGACY = "legacy"

    @classmethod
    def of(cls, legacy: bool | None) -> "Dialect":
        """The dialect for a connection whose FrameSplitter says ``legacy``."""
        return cls.LEGACY if legacy else cls.MODERN
