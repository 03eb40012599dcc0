"""The fields that decide how a request is framed and whether its connection stays open.

``HttpProtocol.on_headers_complete`` (``protocol.py``) hands the head's fields here
once llhttp has read them: ``Host``, ``Content-Length``, ``Transfer-Encoding``,
``Connection``, ``Proxy-Connection`` and ``Expect``, each read by the rules below, the
single place they are. One pass over the fields, in time linear in their bytes.

Framing (RFC 9112 section 6): ``Content-Length`` together with ``Transfer-Encoding``,
several ``Content-Length`` fields and malformed lengths are 400 (llhttp detects them;
``check_content_length`` too); a ``Transfer-Encoding`` whose final coding is not
``chunked``, or which names ``chunked`` twice, is 400; one which lists codings besides
a final ``chunked`` is 501; any ``Transfer-Encoding`` on HTTP/1.0 is 400. Host (RFC
9112 section 3.2): exactly one on HTTP/1.1, at most one on 1.0, and valid.
``Proxy-Connection`` is no standard field, but llhttp reads it as ``Connection``: its
``close`` closes here too, so that both readings agree.
"""

from __future__ import annotations

from .errors import BadRequest, NotImplemented501, PayloadTooLarge
from .validate import _GOOD_HOSTS, check_authority, check_content_length, check_expect

__all__ = ["read_fields", "split_tokens"]

# host, expect, connection, content-length, proxy-connection, transfer-encoding
_SPECIAL_LENGTHS = frozenset((4, 6, 10, 14, 16, 17))


def split_tokens(values: list[bytes]) -> list[bytes]:
    """Split comma-separated list fields into lower-case tokens, dropping empty ones."""
    out = []
    for value in values:
        for part in value.split(b","):
            token = part.strip(b" \t").lower()
            if token:
                out.append(token)
    return out


def read_fields(
    headers: list[tuple[bytes, bytes]], version: str, max_body_size: int
) -> tuple[int | None, bool, bool, bool]:
    """Framing and connection from a head's fields.

    Args:
        headers: the head's fields as llhttp gave them (values without OWS).
        version: ``"1.1"`` or ``"1.0"``.
        max_body_size: the largest ``Content-Length`` taken (413 beyond).

    Returns:
        ``(content_length, chunked, keep_alive, expect_continue)``: ``keep_alive`` by
        our rule (the caller also asks llhttp, and close wins).

    Raises:
        HTTPError: 400, 413, 417 or 501, by the rules in the module docstring.
    """
    content_length: int | None = None
    te: list[bytes] = []
    connection: list[bytes] = []
    proxy_close = False
    expect: list[bytes] | None = None
    host: bytes | None = None
    hosts = 0
    for name, value in headers:
        if len(name) not in _SPECIAL_LENGTHS:
            continue
        lname = name.lower()
        if lname == b"host":
            hosts += 1
            host = value
        elif lname == b"content-length":
            content_length = check_content_length(value)  # llhttp: digits, one field
        elif lname == b"transfer-encoding":
            te.append(value)
        elif lname == b"connection":
            connection.append(value)
        elif lname == b"proxy-connection":
            # Not a standard field (RFC 9112 has none such), but llhttp reads
            # it as Connection: its "close" closes here too.
            proxy_close = proxy_close or b"close" in split_tokens([value])
        elif lname == b"expect":
            if expect is None:
                expect = []
            expect.append(value)
    # RFC 9112 section 3.2: an HTTP/1.1 request without Host, any request with
    # more than one Host line (equal or not), or an invalid Host value: 400.
    if hosts != 1:
        if hosts or version == "1.1":
            raise BadRequest(f"{hosts} Host fields")
    elif host is not None and host not in _GOOD_HOSTS:
        check_authority(host, "Host")
    expect_continue = check_expect(expect, version) if expect is not None else False
    chunked = False
    if te:
        if version == "1.0":
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        codings = split_tokens(te)
        if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise BadRequest("chunked is not the final transfer coding")
        if len(codings) > 1:
            raise NotImplemented501("unsupported transfer coding")
        chunked = True
    if content_length is not None and content_length > max_body_size:
        raise PayloadTooLarge(f"Content-Length {content_length}")
    tokens = split_tokens(connection) if connection else []
    if version == "1.1":
        keep_alive = b"close" not in tokens
    else:
        keep_alive = b"keep-alive" in tokens and b"close" not in tokens
    return content_length, chunked, keep_alive and not proxy_close, expect_continue
