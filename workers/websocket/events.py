"""What the codec hands the application: messages, pings, pongs and the ends of a connection.

One small frozen value per event (``slots=True``): the ASGI glue turns them into
``websocket.receive`` / ``websocket.disconnect`` messages, a raw handler matches on
them. Control frames the codec answers itself (a ping's pong, the reply to a close)
are still reported, so an application can count or log them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BytesMessage", "CloseReceived", "Event", "Failed", "Ping", "Pong", "TextMessage"]


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A whole text message (all its fragments), decoded and checked as UTF-8."""

    data: str


@dataclass(frozen=True, slots=True)
class BytesMessage:
    """A whole binary message (all its fragments)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """The peer pinged. With ``auto_pong`` (the default) the pong is already queued."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """The peer answered a ping (or sent an unsolicited pong, which RFC 6455 allows)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer's close frame arrived.

    Attributes:
        code: the status code, 1005 when the frame carried none.
        reason: the reason, decoded as UTF-8 ("" when none).

    If we had sent our close frame already, the handshake is complete. If not, the
    state is ``REMOTE_CLOSING``: send what is owed, then ``close()`` (which echoes the
    code by default). Then the server closes the TCP connection (RFC 6455 §7.1.1: the
    server closes first).
    """

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The peer broke the protocol; the codec failed the connection (RFC 6455 §7.1.7).

    Attributes:
        code: the close code sent to the peer: 1002 (protocol error), 1007 (invalid
            UTF-8), 1009 (message too big).
        reason: a short, human-readable reason (also sent in the close frame).

    The close frame is queued in ``data_to_send()``; nothing more is parsed. Flush it,
    then close the connection (lingering: the peer may still be sending).
    """

    code: int
    reason: str


Event = TextMessage | BytesMessage | Ping | Pong | CloseReceived | Failed
