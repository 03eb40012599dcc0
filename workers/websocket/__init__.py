"""WebSocket (RFC 6455, RFC 7692 permessage-deflate): a sans-IO protocol core.

Owns: ``handshake`` (checks an upgrade request, makes the 101 response or a denial),
``connection`` (``WebSocketConnection``: bytes in, events and frames out; the close
handshake as a table of states), ``frames`` (opcodes, close codes, masking, one
frame's bytes), ``deflate`` (permessage-deflate negotiation and a decompressor bounded
while it inflates) and ``events`` (what the application is handed).

May import: the standard library only. No socket, no thread, no HTTP parser: the
ASGI glue and raw handlers drive it with the bytes they read and write what it returns.
"""

from __future__ import annotations

from .connection import (
    DEFAULT_MAX_SIZE,
    TRANSITIONS,
    LocalProtocolError,
    State,
    WebSocketConnection,
)
from .deflate import DeflateConfig, DeflateParams, PerMessageDeflate
from .events import BytesMessage, CloseReceived, Event, Failed, Ping, Pong, TextMessage
from .frames import CloseCode, Opcode, apply_mask, close_payload, frame_bytes
from .handshake import (
    HandshakeError,
    UpgradeRequest,
    accept,
    accept_key,
    deny,
    is_upgrade_request,
    parse_upgrade_request,
)

__all__ = [
    "DEFAULT_MAX_SIZE",
    "TRANSITIONS",
    "BytesMessage",
    "CloseCode",
    "CloseReceived",
    "DeflateConfig",
    "DeflateParams",
    "Event",
    "Failed",
    "HandshakeError",
    "LocalProtocolError",
    "Opcode",
    "PerMessageDeflate",
    "Ping",
    "Pong",
    "State",
    "TextMessage",
    "UpgradeRequest",
    "WebSocketConnection",
    "accept",
    "accept_key",
    "apply_mask",
    "close_payload",
    "deny",
    "frame_bytes",
    "is_upgrade_request",
    "parse_upgrade_request",
]
