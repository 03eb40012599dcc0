"""The request-head rules llhttp leaves to us, in one place (RFC 9112, RFC 9110).

``HttpProtocol.on_headers_complete`` calls ``check_head`` once per request, after
httptools (llhttp, strict mode) has parsed the head. llhttp already enforces the
grammar of method names (unknown tokens are 501), header names (tokens only), header
values (no NUL, no bare CR, no other control character, no obs-fold), line endings
(CRLF only), ``Content-Length`` digits and duplicates, and keeps non-ASCII and control
bytes out of the target. What it lets through, and this module rejects:

* more than one SP between the parts of the request line (``GET  / HTTP/1.1``);
* targets that are none of the four forms, a fragment, ``\\``, ``%00``/``%0D``/``%0A``
  and malformed percent-escapes; ``*`` for a method other than OPTIONS; any byte
  outside visible ASCII (a loose llhttp build lets non-ASCII, HTAB and FF through);
* a missing, repeated or malformed ``Host``; an absolute-form target with a scheme
  other than http/https or a bad authority;
* ``Content-Length`` with leading zeros; an ``Expect`` other than ``100-continue``.

Every rule names its RFC section where it is checked; ``docs/http.md`` has the table,
with what gunicorn, uvicorn and waitress answer for the same bytes.

Hot path: the common request (origin-form target, one ``Host`` seen before) costs a
few ``in`` tests and one dict lookup: a ``Host`` value that passed once is remembered
(``_GOOD_HOSTS``, bounded), as ``wsgi.StartResponse`` remembers header lists.
"""

from __future__ import annotations

import ipaddress
import re

from .errors import BadRequest, ExpectationFailed, NotImplemented501

__all__ = [
    "FORBIDDEN_TRAILERS",
    "check_authority",
    "check_content_length",
    "check_expect",
    "check_target",
    "parse_authority",
]

# RFC 3986 section 3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ), with
# the comma taken out: a comma in Host is what a proxy makes of two Host lines joined,
# and no DNS name has one. Port: RFC 3986 section 3.2.3, 1 to 5 digits (an empty
# port after ":" is refused: no client sends it, and readers disagree on what it means).
_REG_NAME_AUTHORITY = re.compile(
    rb"((?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})+)(?::([0-9]{1,5}))?\Z"
).match
_IP_LITERAL_AUTHORITY = re.compile(rb"\[([0-9A-Fa-f:.]+)\](?::([0-9]{1,5}))?\Z").match
# RFC 9112 section 3.2.2: absolute-form = absolute-URI; only http and https are ours
# (RFC 9110 section 4.2). The authority ends at the first "/", "?" or "#".
_ABSOLUTE = re.compile(rb"([Hh][Tt][Tt][Pp][Ss]?)://([^/?#]*)(.*)\Z", re.DOTALL).match
# RFC 3986 section 2.1: pct-encoded = "%" HEXDIG HEXDIG.
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})|%0[0aAdD]").search
# RFC 9112 section 3.2 and RFC 3986 section 2: a target is made of visible ASCII; a
# raw byte outside it (a control, SP, DEL, 0x80-0xff, an over-long UTF-8 sequence)
# is not in the grammar. docs/http.md says which visible ones outside RFC 3986 pass.
_OUTSIDE_GRAMMAR = re.compile(rb"[^!-~]").search

_GOOD_HOSTS: dict[bytes, tuple[str, str]] = {}
_GOOD_HOSTS_MAX = 256

#: Trailer fields refused with 400 (RFC 9110 section 6.5.1: fields that describe
#: framing, routing, request modifiers, authentication or the content's format cannot
#: be processed after the content). We drop every trailer field (WSGI has no API for
#: them), so these change nothing here; they are refused because a proxy in front
#: that merges trailers into the header section would frame, route or authenticate
#: the request differently from us.
FORBIDDEN_TRAILERS = frozenset(
    (
        b"authorization", b"connection", b"content-encoding", b"content-length",
        b"content-range", b"content-type", b"cookie", b"expect", b"forwarded", b"host",
        b"keep-alive", b"max-forwards", b"proxy-authorization", b"proxy-connection",
        b"range", b"te", b"trailer", b"transfer-encoding", b"upgrade",
        b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto",
    )
)


def parse_authority(value: bytes) -> tuple[str, str] | None:
    """Split ``uri-host [ ":" port ]`` into (host, port); None if it is not one.

    RFC 9112 section 3.2 (Host = uri-host [ ":" port ]) and RFC 3986 section 3.2: no
    userinfo (``@`` is not allowed), no path, no empty host (RFC 9110 section 4.2.1:
    an http URI with an empty host is invalid), a numeric port up to 65535, an IPv6
    literal in brackets (IPvFuture and zone identifiers are refused).

    Args:
        value: the field value or absolute-form authority, OWS already stripped.

    Returns:
        ``(host, port)`` as latin-1 strings (port ``""`` when absent), or None.
    """
    known = _GOOD_HOSTS.get(value)
    if known is not None:
        return known
    m = _REG_NAME_AUTHORITY(value) or _IP_LITERAL_AUTHORITY(value)
    if m is None:
        return None
    host, port = m.group(1), m.group(2) or b""
    if value[:1] == b"[":
        try:
            ipaddress.IPv6Address(host.decode("ascii"))
        except ValueError:
            return None
        host = b"[" + host + b"]"
    if port and int(port) > 65535:
        return None
    result = (host.decode("latin-1"), port.decode("ascii"))
    if len(_GOOD_HOSTS) >= _GOOD_HOSTS_MAX:
        _GOOD_HOSTS.clear()
    _GOOD_HOSTS[value] = result
    return result


def check_authority(value: bytes, what: str) -> tuple[str, str]:
    """``parse_authority`` or a 400 naming ``what`` was malformed."""
    parsed = parse_authority(value)
    if parsed is None:
        raise BadRequest(f"{what} is not uri-host [':' port]: {value[:64]!r}")
    return parsed


def check_target(method: str, target: bytes) -> bytes | None:
    """Check the request target against the four forms of RFC 9112 section 3.2.

    Args:
        method: the request method.
        target: the raw target bytes (llhttp has kept most CTLs and SP out; a loose
            build lets non-ASCII, HTAB and FF through, refused here).

    Returns:
        The authority of an absolute-form target (which then replaces ``Host``,
        RFC 9112 section 3.2.2), or None for the other forms.

    Raises:
        BadRequest: the target is malformed or its form does not fit the method.
        NotImplemented501: a well-formed authority-form target (CONNECT is not served).
    """
    if _OUTSIDE_GRAMMAR(target):
        raise BadRequest("a byte outside the request-target grammar")
    first = target[:1]
    authority: bytes | None = None
    if first == b"/":
        # RFC 9112 section 3.2.1: origin-form = absolute-path [ "?" query ].
        if method == "CONNECT":
            raise BadRequest("CONNECT needs an authority-form target")
    elif first == b"*":
        # RFC 9112 section 3.2.4: asterisk-form is exactly "*", and only for OPTIONS.
        if target != b"*" or method != "OPTIONS":
            raise BadRequest("asterisk-form target other than 'OPTIONS *'")
        return None
    elif method == "CONNECT":
        # RFC 9112 section 3.2.3: authority-form = uri-host ":" port, for CONNECT only.
        host = parse_authority(target)
        if host is None or not host[1]:
            raise BadRequest("CONNECT target is not host:port")
        raise NotImplemented501("CONNECT is not supported")
    else:
        m = _ABSOLUTE(target)
        if m is None:
            raise BadRequest("request target is none of origin, absolute, authority or asterisk form")
        authority, rest = m.group(2), m.group(3)
        check_authority(authority, "absolute-form authority")
        if rest[:1] not in (b"", b"/", b"?"):
            raise BadRequest("absolute-form target with a malformed path")
    # RFC 9112 section 3.2: the target grammar has no fragment (a client strips it;
    # a proxy may cut the target there, the app would not). RFC 3986 has no "\",
    # which some servers and proxies read as "/". %00 %0D %0A decode to bytes a
    # path or query must not carry to the application (RFC 9110 section 17.3 style
    # injection); a malformed "%" escape is not pct-encoded (RFC 3986 section 2.1).
    if b"#" in target or b"\\" in target:
        raise BadRequest("fragment or backslash in the request target")
    if b"%" in target and _BAD_PERCENT(target):
        raise BadRequest("malformed, NUL, CR or LF percent-escape in the request target")
    return authority


def check_expect(values: list[bytes], version: str) -> bool:
    """RFC 9110 section 10.1.1: True for ``100-continue`` (on HTTP/1.1), 417 otherwise.

    An HTTP/1.0 request's ``100-continue`` is ignored (MUST), not answered with 417.
    """
    for value in values:
        for part in value.split(b","):
            if part.strip(b" \t").lower() != b"100-continue":
                raise ExpectationFailed(f"unsupported expectation {value[:64]!r}")
    return version == "1.1"


def check_content_length(value: bytes) -> int:
    """RFC 9112 section 6.3 / RFC 9110 section 8.6, with leading zeros refused.

    ``Content-Length = 1*DIGIT`` allows ``007``, but readers disagree on it (some
    parse it as octal, some refuse it, some as 7): a proxy in front and this server
    could then frame the same bytes differently, the root of request smuggling.
    llhttp has checked the digits, the sign, overflow and duplicates.
    """
    if len(value) > 1 and value[:1] == b"0":
        raise BadRequest("Content-Length with leading zeros")
    return int(value)
