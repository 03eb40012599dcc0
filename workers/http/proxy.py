"""PROXY protocol v1 and v2 (HAProxy), parsed sans-IO.

A load balancer that speaks the PROXY protocol sends one header before the client's
bytes, naming the real client and server addresses. ``parse_proxy_header`` looks at
the start of a connection's input and says: need more bytes, here is the header, or
this is not a valid PROXY header (answered with 400 and a close).

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct

from .errors import BadRequest

__all__ = ["V2_SIGNATURE", "Address", "ProxyInfo", "parse_proxy_header", "take_proxy_header"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_MAX = 107  # the longest v1 line, CRLF included
_V2_HEADER = struct.Struct("!12sBBH")
_IPV4 = struct.Struct("!4s4sHH")
_IPV6 = struct.Struct("!16s16sHH")

Address = tuple[str, int]
#: ``(consumed, source, destination)``; the addresses are None for LOCAL/UNKNOWN.
ProxyInfo = tuple[int, Address | None, Address | None]


def _v1_port(text: bytes | bytearray) -> int:
    if not text.isdigit() or (len(text) > 1 and text[:1] == b"0"):
        raise BadRequest("PROXY v1: bad port")
    port = int(text)
    if port > 65535:
        raise BadRequest("PROXY v1: bad port")
    return port


def _v1_addr(text: bytes | bytearray, version: int) -> str:
    try:
        addr = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("PROXY v1: bad address") from None
    if addr.version != version:
        raise BadRequest("PROXY v1: address family mismatch")
    return str(addr)


def _parse_v1(data: bytes | bytearray) -> ProxyInfo | None:
    end = data.find(b"\r\n", 0, _V1_MAX)
    if end < 0:
        if len(data) >= _V1_MAX:
            raise BadRequest("PROXY v1: header line too long")
        return None
    parts = data[:end].split(b" ")
    if parts[1:2] == [b"UNKNOWN"]:
        return end + 2, None, None
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise BadRequest("PROXY v1: malformed header")
    version = 4 if parts[1] == b"TCP4" else 6
    src = (_v1_addr(parts[2], version), _v1_port(parts[4]))
    dst = (_v1_addr(parts[3], version), _v1_port(parts[5]))
    return end + 2, src, dst


def _parse_v2(data: bytes | bytearray) -> ProxyInfo | None:
    if len(data) < _V2_HEADER.size:
        return None
    _, ver_cmd, family, length = _V2_HEADER.unpack_from(data)
    if ver_cmd >> 4 != 2 or ver_cmd & 0x0F > 1:
        raise BadRequest("PROXY v2: bad version or command")
    total = _V2_HEADER.size + length
    if len(data) < total:
        return None
    if ver_cmd & 0x0F == 0:  # LOCAL: a health check from the proxy itself
        return total, None, None
    proto = family >> 4
    if proto == 1 and length >= _IPV4.size:
        s, d, sp, dp = _IPV4.unpack_from(data, _V2_HEADER.size)
        return total, (str(ipaddress.IPv4Address(s)), sp), (str(ipaddress.IPv4Address(d)), dp)
    if proto == 2 and length >= _IPV6.size:
        s, d, sp, dp = _IPV6.unpack_from(data, _V2_HEADER.size)
        return total, (str(ipaddress.IPv6Address(s)), sp), (str(ipaddress.IPv6Address(d)), dp)
    if proto in (0, 3):  # UNSPEC or AF_UNIX: keep the socket's own addresses
        return total, None, None
    raise BadRequest("PROXY v2: truncated address block")


def take_proxy_header(
    buf: bytearray, data: bytes
) -> tuple[bytes, Address | None, Address | None] | None:
    """A connection's read while its PROXY header is awaited (WSGI and ASGI alike).

    ``data`` is added to the connection's own ``buf``, which is parsed in place: a
    header trickled in one byte per read costs each read its own bytes (a copy per
    read would be quadratic).

    Returns:
        None while the header is incomplete; else ``(rest, src, dst)``: the bytes
        after the header, and its addresses as ``parse_proxy_header`` gives them.

    Raises:
        BadRequest: not a valid PROXY v1 or v2 header.
    """
    buf += data
    parsed = parse_proxy_header(buf)
    if parsed is None:
        return None
    consumed, src, dst = parsed
    return bytes(buf[consumed:]), src, dst


def parse_proxy_header(data: bytes | bytearray) -> ProxyInfo | None:
    """Parse a PROXY protocol header at the start of ``data``.

    Args:
        data: the first bytes received on a connection (any amount so far). Only
            its first 16 bytes and, once they say how long the header is, the
            header itself are read: a header that arrives in many reads costs each
            read O(1) (the handler passes its buffer, not a copy).

    Returns:
        None when more bytes are needed; otherwise ``(consumed, src, dst)``, where
        ``consumed`` bytes belong to the header and ``src``/``dst`` are ``(host, port)``
        or None when the proxy sent no addresses (``UNKNOWN``, ``LOCAL``, ``AF_UNIX``).

    Raises:
        BadRequest: the bytes are not a valid PROXY v1 or v2 header.
    """
    if data[:1] == b"\r":
        if len(data) < len(V2_SIGNATURE):
            if V2_SIGNATURE.startswith(data):
                return None
            raise BadRequest("not a PROXY protocol header")
        if not data.startswith(V2_SIGNATURE):
            raise BadRequest("not a PROXY protocol header")
        return _parse_v2(data)
    if len(data) < 6:
        if b"PROXY ".startswith(data):
            return None
        raise BadRequest("not a PROXY protocol header")
    if not data.startswith(b"PROXY "):
        raise BadRequest("not a PROXY protocol header")
    return _parse_v1(data)
