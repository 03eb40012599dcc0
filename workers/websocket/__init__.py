"""WebSocket (RFC 6455, RFC 7692 permessage-deflate): a sans-IO protocol core.

Owns: ``handshake`` (checks an upgrade request, makes the 101 response or a denial),
``connection`` (``WebSocketConnection``: bytes in, events and frames out; the close
handshake as a table of states), ``frames`` (opcodes, close codes, masking, one
frame's bytes), ``deflate`` (permessage-deflate negotiation and a decompressor bounded
while it inflates) and ``events`` (what the application is handed).

Beside the core, ``handler`` (``WebSocketHandler``): a raw handler that takes over a
connection with the upgrade and echoes nothing by itself; subclass it.

May import: the sans-IO modules, the standard library only (no socket, no thread, no
HTTP parser: the ASGI glue and raw handlers drive them with the bytes they read and
write what they return); ``handler``, also ``mioreactor.workers.core`` (the handler
protocol) and httptools, to read the upgrade request's head.
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
from .handler import Session, WebSocketHandler
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
    "Session",
    "State",
    "TextMessage",
    "UpgradeRequest",
    "WebSocketConnection",
    "WebSocketHandler",
    "accept",
    "accept_key",
    "apply_mask",
    "close_payload",
    "deny",
    "frame_bytes",
    "is_upgrade_request",
    "parse_upgrade_request",
]
