"""The ASGI express lane: one bodiless head per read, recognised whole, on bytes.

The ASGI twin of ``mioreactor.workers.http.express`` (the WSGI lane; docs/http.md,
"The express lane"). ``AsgiHandler`` first offers a read to ``match`` when its
connection is at rest (no request in progress, nothing queued, the parser between
messages): a compiled regular expression (C) checks the *whole* read against a strict
subset of the grammar that ``HttpProtocol`` + ``validate`` enforce, and a second lists
its fields, as the raw ``(name, value)`` bytes the general path would list. What the
lane cannot vouch for it declines (None) and the read goes the general way (llhttp,
``HttpProtocol``), which answers as it always did, errors included: the lane adds no
rule and relaxes none. ``tests/asgi/test_asgi_express.py`` holds the two paths to
that (the same ``Request`` for every head the lane takes, the same bytes answered with
the lane on and off) and to the time bound below.

What the lane takes (anything else is declined):

* the read is exactly one head: request line, fields, empty line, nothing after;
* request line ``METHOD SP origin-form SP HTTP/1.x CRLF``, single spaces, a method
  from ``_METHODS``, a target that starts with ``/`` and holds only the characters
  llhttp's strict table allows, minus ``%``, ``#`` and ``\\`` (``validate.check_target``
  looks at those);
* fields ``token ":" OWS value CRLF``, values of HTAB, SP, VCHAR and obs-text that do
  not end in OWS (the general path strips it; declined here), no obs-fold;
* at most ``max_headers`` fields, the head within ``max_request_line`` and
  ``max_header_size`` however the general path counts it (``match``);
* no ``Content-Length``, ``Transfer-Encoding``, ``Expect``, ``Upgrade`` or
  ``Proxy-Connection`` field (no body, no interim response, no protocol switch, and
  no second reading of keep-alive: llhttp reads ``Proxy-Connection`` as
  ``Connection`` and remembers it across messages);
* ``Host``: exactly one on HTTP/1.1 (at most one on 1.0) and valid
  (``validate.check_authority``); ``Connection``: at most one, ``keep-alive`` or
  ``close`` (any case).

Unlike the WSGI lane, names with ``_`` and repeated names are taken: the general path
keeps both in the ASGI scope (only the WSGI environ drops or joins them).

Linear by construction (issue 19, as the WSGI lane after it): no two adjacent parts
of ``_HEAD`` can match the same byte (the path cannot end in ``?`` and the query comes
only after one; a field value is either a run that ends in a visible byte, leading
OWS included, or OWS alone), so each byte is matched one way and a failed match
gives each quantifier back at most once: a declined read costs time proportional to
its bytes. ``tests/asgi/test_asgi_express.py`` feeds heads of 1,000 almost-matching
fields in every failing shape (no final CRLF, trailing OWS, a body or a second head
in the read) under a time bound that a quadratic or exponential matcher cannot meet.
Keep it so: a new part of the pattern must begin with a byte the part before it
cannot end with.
"""

from __future__ import annotations

import re

from ..http.errors import HTTPError
from ..http.validate import check_authority
from .scope import LOWER as _LOWER
from .scope import lower_name

__all__ = ["Express", "match"]

_METHODS = rb"GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH"
# llhttp's strict URL characters less "%", "\\", "#" and "?" (the query's start).
_PATH = rb"/[!\"$&-/0-9:;<=>@A-Z\[\]^_`a-z{|}~]*"
_QUERY = rb"[!\"$&-/0-9:;<=>?@A-Z\[\]^_`a-z{|}~]*"
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# After the colon: a run ending in a visible byte (leading OWS included), or OWS alone.
_VALUE = rb"(?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f]|[\t ]*)"

_HEAD = re.compile(
    rb"(" + _METHODS + rb") ((" + _PATH + rb")(?:\?(" + _QUERY + rb"))?) HTTP/1\.([01])\r\n"
    rb"(?:" + _TOKEN + rb":" + _VALUE + rb"\r\n)*\r\n"
).fullmatch
# Each field's name and value, leading OWS off, from where the fields begin.
_FIELDS = re.compile(rb"(" + _TOKEN + rb"):[\t ]*([^\r\n]*)\r\n").findall

_DECLINED = frozenset(
    (b"content-length", b"transfer-encoding", b"expect", b"upgrade", b"proxy-connection")
)
_SPECIAL = _DECLINED | {b"host", b"connection"}
_GOOD_HOSTS: set[bytes] = set()
_GOOD_HOSTS_MAX = 256

#: ``(method, target, raw_path, query_string, version, headers, lowered, keep_alive)``
Express = tuple[str, bytes, bytes, bytes, str, list[tuple[bytes, bytes]],
                list[tuple[bytes, bytes]], bool]


def match(data: bytes, max_size: int, max_fields: int) -> Express | None:
    """The one bodiless head ``data``, read as the general path reads it, or None.

    Args:
        data: one read from a connection at rest.
        max_size: ``min(max_request_line, max_header_size)``. The general path counts
            a field as its name, its value without OWS and 4 bytes, at most one byte
            more than the field's line; so a head whose length plus its field count
            stays within ``max_size`` is within both limits however it is counted.
        max_fields: ``max_headers``.

    Returns:
        ``(method, target, raw_path, query_string, version, headers, lowered,
        keep_alive)``: ``headers`` are the raw ``(name, value)`` pairs in arrival order
        (names as sent), as ``Request.headers``; ``lowered`` the same with names in
        lower case, as the scope's ``headers``; None when the general path must parse
        ``data``.
    """
    length = len(data)
    if length > max_size:
        return None
    m = _HEAD(data)
    if m is None:
        return None
    method, target, path, query, minor = m.groups(b"")
    fields = _FIELDS(data, len(method) + len(target) + 12)
    count = len(fields)
    if count > max_fields or length + count > max_size:
        return None
    host: bytes | None = None
    hosts = 0
    connection: bytes | None = None
    lowered: list[tuple[bytes, bytes]] = []
    add = lowered.append
    get = _LOWER.get
    for name, value in fields:
        low = get(name) or lower_name(name)  # a call on a miss only
        add((low, value))
        if low in _SPECIAL:
            if low == b"host":
                hosts += 1
                host = value
            elif low == b"connection":
                if connection is not None:
                    return None
                connection = value
            elif low in _DECLINED:
                return None
    http11 = minor == b"1"
    if hosts != 1:
        if hosts or http11:
            return None  # 400 on the general path
    elif host is not None and host not in _GOOD_HOSTS:
        try:
            check_authority(host, "Host")
        except HTTPError:
            return None
        if len(_GOOD_HOSTS) >= _GOOD_HOSTS_MAX:
            _GOOD_HOSTS.clear()
        _GOOD_HOSTS.add(host)
    if connection is None:
        keep_alive = http11
    else:
        token = connection.lower()
        if token == b"close":
            keep_alive = False
        elif token == b"keep-alive":
            keep_alive = True
        else:
            return None
    return (method.decode("ascii"), target, path, query, "1.1" if http11 else "1.0", fields,
            lowered, keep_alive)
