"""The express lane: the common request recognised whole, in C, without llhttp's callbacks.

Most requests a server sees are one bodiless head that arrives in one read on a
keep-alive connection at rest (or several, pipelined). ``HttpHandler`` first offers
such a read to ``match_next``, head by head: a compiled regular expression (C) checks
each *whole* head against a strict subset of
the grammar that ``HttpProtocol`` + ``validate`` enforce, and a second one lists its
fields. What the lane cannot vouch for it declines (returns None), and the read goes
the general way (llhttp, ``HttpProtocol``, ``validate``), which then answers exactly
as it always did, errors included. So the lane adds no rule and relaxes none: every
head it accepts, the general path accepts too and reads the same way, and every head
the general path refuses, the lane declines. ``tests/http/test_express.py`` holds
the two paths to that, head by head and on generated heads.

What the lane takes (anything else is declined):

* a whole head: request line, fields, empty line (``match``: and nothing after it;
  ``match_next``: the next head may follow, and is matched from where this one ends);
* request line ``METHOD SP origin-form SP HTTP/1.x CRLF`` with single spaces, a
  method from ``_METHODS``, a target that starts with ``/`` and holds only the
  characters llhttp's strict table allows, minus ``%``, ``#`` and ``\\`` (those go
  through ``validate.check_target``);
* fields ``token ":" OWS value CRLF``, values of HTAB, SP, VCHAR and obs-text
  (llhttp's strict rule) that do not end in OWS, no obs-fold, no bare CR or LF;
* at most ``max_headers`` fields; the head no longer than ``max_request_line`` and
  ``max_header_size`` allow, counted so that it is within both limits however the
  general path counts it (``match``); each field name at most once (spelling aside),
  no name with ``_`` (the general path drops those);
* no ``Content-Length``, ``Transfer-Encoding``, ``Expect``, ``Upgrade`` or
  ``Proxy-Connection`` field: no body, no interim response, no protocol switch, and
  no second reading of keep-alive (llhttp reads ``Proxy-Connection`` as
  ``Connection``; the general path decides it, ``protocol.py``);
* ``Host``: exactly one on HTTP/1.1 (at most one on 1.0) and valid
  (``validate.check_authority``, remembered once valid);
* ``Connection``: absent, ``keep-alive`` or ``close`` (any case); other lists
  (``Upgrade``, several tokens) go the general way.

``match`` returns the environ keys the head sets (a dict to merge into the
connection's base environ) and the keep-alive decision; the handler does the rest.

Linear by construction (issue 19). A regular expression that fails backtracks: it
tries every other way its quantifiers could have split the text. The first version
let a field's ``[\t ]*`` and its value both take a leading SP, and let the path give
bytes back to the query, so a head that failed late (no final CRLF, trailing OWS, a
body or a second head in the read) was tried in 2**fields ways, and a long path times
the fields again: 22 fields stalled the process for seconds. Here no two adjacent
parts of ``_HEAD`` can match the same character, so each byte is matched one way
only and a failed match gives each quantifier back at most once: a declined read
costs time proportional to its bytes (``tests/http/test_linear.py`` feeds heads of
up to 1,000 fields in every failing shape, with a time bound an exponential or
quadratic matcher cannot meet). Keep it so: a new part of the pattern must begin
with a character the part before it cannot end with.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import HTTPError
from .validate import check_authority
from .wsgi import environ_key

__all__ = ["CLOSE", "KEEP_ALIVE_10", "ExpressKeys", "match", "match_next"]

#: The connection lines ``match`` returns: what the response head says about keep-alive.
CLOSE = b"Connection: close\r\n"
KEEP_ALIVE_10 = b"Connection: keep-alive\r\n"  # HTTP/1.0 keep-alive must be said

# RFC 9110 section 9 methods that llhttp knows and that may come without a body.
_METHODS = "GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH"
# llhttp's strict URL characters (``STRICT_URL_CHAR``: ALPHANUM and !"$%&'()*+,-./:;<=>@[\]^_`{|}~),
# less "%" and "\" (validate.check_target looks at those), "?" (the query's start) and "#".
_PATH = r"/[!\"$&-/0-9:;<=>@A-Z\[\]^_`a-z{|}~]*"
_QUERY = r"[!\"$&-/0-9:;<=>?@A-Z\[\]^_`a-z{|}~]*"
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A field value after the colon: OWS and a value of HTAB, SP, VCHAR, obs-text
# (0x80-0xff), no other control byte, no DEL; and here no trailing OWS (the general
# path strips it; the lane declines it, so that ``_FIELDS`` can take a value to its
# CRLF). Written as two alternatives that cannot match the same text: a run that
# ends in a visible byte (leading OWS included), or OWS alone (an empty value). The
# first form of this pattern, ``[\t ]*`` then a value that could also begin with SP,
# matched a leading SP two ways (the module docstring says what that cost).
_VALUE = r"(?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f]|[\t ]*)"

# The query is taken only after a "?": the path cannot end in "?", so the two cannot
# trade bytes (``\??`` before a query class that also holds the path's bytes could).
# ``match`` (not ``fullmatch``): a head that ends where the read ends is the common
# case, and a pipelined read holds more heads after it (``match_next``). The head
# ends at its empty line: no field can begin with CR, so the fields' repetition
# stops there, one way only.
_HEAD = re.compile(
    rf"({_METHODS}) (({_PATH})(?:\?({_QUERY}))?) (HTTP/1\.[01])\r\n"
    rf"(?:{_TOKEN}:{_VALUE}\r\n)*\r\n"
).match
# Each field's name and value, leading OWS off; ``pos`` is where the fields begin.
# No ``^``: a search that starts with the token class finds each field at once.
_FIELDS = re.compile(rf"({_TOKEN}):[\t ]*([^\r\n]*)\r\n").findall

_DECLINE = ""  # the environ key of a field the lane does not take
_NOT_EXPRESS = frozenset(
    ("content-length", "transfer-encoding", "expect", "upgrade", "proxy-connection")
)
_KEYS_MAX = 1024
_GOOD_HOSTS: set[str] = set()
_GOOD_HOSTS_MAX = 256


class ExpressKeys(dict[str, str]):
    """Field name as sent -> environ key; ``""`` for a name the lane declines.

    A dict with ``__missing__``: a name seen before costs one subscript, with no
    Python call per field. The rule for a new name is the general path's
    (``wsgi.environ_key``: ``""`` for a name with ``_``), less the names the lane
    declines. Bounded; cleared when full.
    """

    def __missing__(self, name: str) -> str:
        if name.lower() in _NOT_EXPRESS:
            key = _DECLINE
        else:
            key = environ_key(name.encode("latin-1"))  # a token: ASCII
        if len(name) <= 64:
            if len(self) >= _KEYS_MAX:
                self.clear()
            self[name] = key
        return key


_KEYS = ExpressKeys()


def match(
    data: bytes, base: dict[str, Any], max_size: int, max_fields: int
) -> tuple[dict[str, Any], bytes] | None:
    """The environ of the one head ``data`` and its keep-alive decision, or None.

    Args:
        data: one read from the connection.
        base: the connection's base environ (``wsgi.base_environ``), copied.
        max_size: the most bytes a head may have here (``min(max_request_line,
            max_header_size)``). The general path counts a field as its name, its
            value without OWS and 4 bytes, which is at most one byte more than the
            field's line (``Name:value``); so a head whose bytes plus its field count
            stay within ``max_size`` is within both limits however it is counted
            there, and any other is declined (the general path then says 414 or 431,
            or serves it).
        max_fields: ``max_headers``.

    Returns:
        ``(environ, connection)`` (``wsgi.input`` is the base's ``EMPTY_BODY``; ``connection``
        is the line the response head needs: ``b""`` for HTTP/1.1 keep-alive,
        ``KEEP_ALIVE_10`` or ``CLOSE``), or None when the general path must parse
        ``data``.
    """
    if len(data) > max_size:
        return None
    text = data.decode("latin-1")
    found = match_next(text, 0, base, max_size, max_fields)
    if found is None or found[2] != len(text):
        return None
    return found[0], found[1]


def match_next(
    text: str, pos: int, base: dict[str, Any], max_size: int, max_fields: int
) -> tuple[dict[str, Any], bytes, int] | None:
    """The environ of the whole head at ``pos`` of a read, its keep-alive line and its end.

    The lane's one matcher: ``match`` is it for a read that is exactly one head, and
    the handler calls it head after head for a pipelined read (TechEmpower's plaintext
    shape: 16 heads per write). The pattern is tried at ``pos`` only, over at most
    ``max_size`` characters, and is linear by construction (module docstring), so a
    read of N heads costs each of its bytes one pass, declined or not.

    Args:
        text: the read, decoded as latin-1 (one character per byte).
        pos: where the head begins.
        base, max_size, max_fields: as for ``match``.

    Returns:
        ``(environ, connection, end)``, ``end`` the index just after the head's empty
        line; or None when the general path must parse from ``pos`` on.
    """
    m = _HEAD(text, pos, pos + max_size)
    if m is None:
        return None
    end = m.end()
    length = end - pos
    method, target, path, query, protocol = m.groups("")
    keys = base.copy()
    keys["REQUEST_METHOD"] = method
    keys["PATH_INFO"] = path
    keys["QUERY_STRING"] = query  # "" when there is no "?" (the path takes all before it)
    keys["RAW_URI"] = keys["REQUEST_URI"] = target
    keys["SERVER_PROTOCOL"] = protocol
    http11 = protocol == "HTTP/1.1"
    # The fields begin after "METHOD SP target SP HTTP/1.x CRLF".
    fields = _FIELDS(text, pos + len(method) + len(target) + 12, end)
    if fields:
        count = len(fields)
        if count > max_fields or length + count > max_size:
            return None
        size = len(keys) + count
        for name, value in fields:
            keys[_KEYS[name]] = value  # a subscript: __missing__ only for a new name
        # A declined name, or one name twice (in any spelling): the general way.
        if len(keys) != size or _DECLINE in keys:
            return None
    host = keys.get("HTTP_HOST")
    if host is None:
        if http11:
            return None  # 400 on the general path
    elif host not in _GOOD_HOSTS:
        try:
            check_authority(host.encode("latin-1"), "Host")
        except HTTPError:
            return None
        if len(_GOOD_HOSTS) >= _GOOD_HOSTS_MAX:
            _GOOD_HOSTS.clear()
        _GOOD_HOSTS.add(host)
    connection = keys.get("HTTP_CONNECTION")
    if connection is None:
        return keys, b"" if http11 else CLOSE, end
    token = connection.lower()
    if token == "keep-alive":
        return keys, b"" if http11 else KEEP_ALIVE_10, end
    if token == "close":
        return keys, CLOSE, end
    return None
