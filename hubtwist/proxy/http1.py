"""
The HTTP/1.1 wire rules every path of the proxy shares, as pure functions: which headers
are hop-by-hop, what a C{Connection} header names, how a response head is parsed and
cleaned, how its body is framed, how a chunked body is decoded, and how heads are written.

One module, because the same rule written in several places drifts, and the drift becomes a
hole: a lone LF that one path cleans and another passes on, a C{Connection} token that one
path honours and another does not. The lean path, the twisted.web path, the upstream
client and the WebSocket handshake all call these. Values in, values out; no reactor.

Every parser here raises L{WireError} (and nothing else) for input it cannot accept, and
its output is clean whatever the input: header names are tokens, values and phrases hold
no CR, LF or NUL.
"""

from __future__ import annotations

import re
from typing import Iterable

__all__ = [
    "HOP_BY_HOP", "MAX_HEAD", "NEVER_HOP_BY_HOP", "ChunkedDecoder", "ResponseHead", "WireError",
    "are_header_names", "clean_value", "connection_tokens", "has_line_breaks", "is_header_name",
    "is_idempotent", "only_crlf_line_ends", "parse_response_head", "request_head",
    "response_head", "response_head_end", "strip_hop_by_hop", "without_line_breaks",
]

MAX_HEAD = 64 * 1024
"""The longest response head accepted from an app."""

MAX_CHUNK_LINE = 4096
"""The longest chunk-size line (with extensions) or trailer line accepted."""

# RFC 9110 7.6.1 connection-specific headers, plus the ones a proxy must recompute.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authenticate", b"proxy-authorization", b"content-length",
})

NEVER_HOP_BY_HOP = frozenset({b"host"})
"""Headers a C{Connection} header cannot make hop-by-hop: a client's C{Connection: host}
must not make the app see another host than the one the request was routed by."""

# Methods a client may send twice with the same effect (RFC 9110 9.2.2), as far as a proxy
# may assume: the only ones retried when a reused connection dies before the answer.
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})

# RFC 9110 5.1: a header name is a token, one or more of these.
_TOKEN_CHARS = (b"!#$%&'*+-.^_`|~0123456789"
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_LINE_BREAKS = b"\x00\r\n"
_NO_BODY_CODES = frozenset({204, 304})
_STANDARD_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade"})


class WireError(ValueError):
    """What was received is not an HTTP/1.x message hubtwist can pass on."""


def is_idempotent(method: bytes) -> bool:
    """Whether a request with this method may be sent again after a connection died."""
    return method in _IDEMPOTENT


def is_header_name(name: bytes) -> bool:
    """Whether C{name} is a valid header name (a token)."""
    return bool(name) and not name.translate(None, _TOKEN_CHARS)


def are_header_names(names: list[bytes]) -> bool:
    """Whether every one of C{names} is a valid header name: L{is_header_name} for a whole
    head in one pass over its names (the common case: all are)."""
    return all(names) and not b"".join(names).translate(None, _TOKEN_CHARS)


def only_crlf_line_ends(head: bytes) -> bool:
    """Whether every CR and LF in a message head is part of a CRLF, and it has no NUL: the
    common case, in which its lines need no further checks for stray line breaks."""
    # every CR, LF and NUL counted, against two per CRLF: one pass and one search
    breaks = len(head) - len(head.translate(None, _LINE_BREAKS))
    return breaks == 2 * head.count(b"\r\n")


def has_line_breaks(value: bytes) -> bool:
    """Whether C{value} holds a CR, LF or NUL (never valid in a header, RFC 9110 5.5)."""
    return len(value.translate(None, _LINE_BREAKS)) != len(value)


def without_line_breaks(value: bytes) -> bytes:
    """C{value} with every CR, LF and NUL replaced by a space (what twisted.web does)."""
    return value.replace(b"\r", b" ").replace(b"\n", b" ").replace(b"\x00", b" ")


def clean_value(value: bytes) -> bytes:
    """A header value or reason phrase safe to write: trimmed, no CR, LF or NUL."""
    value = value.strip(b" \t")
    return without_line_breaks(value) if has_line_breaks(value) else value


_KNOWN_CONNECTIONS: dict[tuple[bytes, ...], frozenset[bytes]] = {}


def connection_tokens(values: Iterable[bytes]) -> frozenset[bytes]:
    """The lower-cased tokens of C{Connection} header values (C{close}, C{upgrade}, and
    the names of headers the sender made hop-by-hop). The same few values come with
    almost every message (C{keep-alive}, C{close}): each is split once."""
    values = tuple(values)
    known = _KNOWN_CONNECTIONS.get(values)
    if known is None:
        known = frozenset(token.strip().lower() for value in values
                          for token in value.split(b",") if token.strip())
        if len(_KNOWN_CONNECTIONS) >= 256:
            _KNOWN_CONNECTIONS.clear()
        _KNOWN_CONNECTIONS[values] = known
    return known


def hop_by_hop_names(connection_values: Iterable[bytes]) -> frozenset[bytes]:
    """Every header name (lower case) that must not cross this hop, given the message's
    C{Connection} values: the fixed set plus what they name, never L{NEVER_HOP_BY_HOP}."""
    named = connection_tokens(connection_values)
    if not named:
        return HOP_BY_HOP
    return HOP_BY_HOP | (named - NEVER_HOP_BY_HOP)


def strip_hop_by_hop(headers: Iterable[tuple[bytes, list[bytes]]]) -> list[tuple[bytes, list[bytes]]]:
    """
    Drop hop-by-hop headers and any header the C{Connection} header names
    (C{Connection: close, X-Foo} makes X-Foo hop-by-hop too), except L{NEVER_HOP_BY_HOP}.
    C{headers} are (name, [values]) pairs; names compare case-blind and are returned as
    given.
    """
    items = list(headers)
    connection = [value for name, values in items if name.lower() == b"connection"
                  for value in values]
    named = hop_by_hop_names(connection)
    return [(name, values) for name, values in items if name.lower() not in named]


class ResponseHead:
    """
    A parsed, cleaned response head.

    @ivar version: C{b"HTTP/1.1"} or C{b"HTTP/1.0"} (other minor versions as given).
    @ivar code: the status code.
    @ivar phrase: the reason phrase, without CR/LF/NUL.
    @ivar headers: the end-to-end headers as (name, value) pairs in order: names are
        tokens, values are clean, hop-by-hop headers and those C{Connection} names are gone.
    @ivar connection: the C{Connection} tokens, lower case.
    @ivar upgrade: the C{Upgrade} values, lower case, comma-joined (C{b""} if none).
    @ivar length: the C{Content-Length}, or L{None} when there is none (or chunked wins).
    @ivar chunked: whether the body is chunked (C{chunked} is the last transfer coding).
    @ivar transfer_encoded: whether any C{Transfer-Encoding} was given.
    """

    __slots__ = ("version", "code", "phrase", "headers", "connection", "upgrade", "length",
                 "chunked", "transfer_encoded")

    def __init__(self, version: bytes, code: int, phrase: bytes, headers, connection,
                 upgrade: bytes, length: int | None, chunked: bool, transfer_encoded: bool) -> None:
        self.version = version
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.connection = connection
        self.upgrade = upgrade
        self.length = length
        self.chunked = chunked
        self.transfer_encoded = transfer_encoded

    @property
    def interim(self) -> bool:
        """A 1xx other than 101: the real response follows."""
        return 100 <= self.code < 200 and self.code != 101

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request after this response (as far
        as the head says: a body read until close also ends it)."""
        return self.version == b"HTTP/1.1" and b"close" not in self.connection

    def get(self, name: bytes) -> list[bytes]:
        """All values of end-to-end header C{name} (lower case)."""
        return [value for key, value in self.headers if key.lower() == name]

    def body_length(self, request_method: bytes) -> int | None:
        """
        How the body is framed, for a request made with C{request_method}: 0 when there
        is none (HEAD, 1xx, 204, 304), the length when known, L{None} when chunked or read
        until the connection closes (check L{chunked}).
        """
        if request_method == b"HEAD" or self.code in _NO_BODY_CODES or 100 <= self.code < 200:
            return 0
        if self.transfer_encoded:
            return None
        return self.length


def response_head_end(buffer: bytes) -> tuple[int, int]:
    """
    Where the response head at the start of C{buffer} ends: C{(end, rest)}, the head being
    C{buffer[:end]} and what follows it C{buffer[rest:]}; C{(-1, -1)} while the empty line
    has not arrived. Lines end with LF, a CR before it being part of the line end (RFC 9112
    2.2 lets a recipient take a lone LF as a line end, as browsers and nginx do: busybox
    httpd passes a CGI script's LF-only header lines after its own CRLF status line).
    """
    crlf = buffer.find(b"\n\r\n")
    lf = buffer.find(b"\n\n", 0, len(buffer) if crlf < 0 else crlf)
    if lf >= 0:
        return (lf - 1 if lf and buffer[lf - 1] == 13 else lf), lf + 2
    if crlf < 0:
        return -1, -1
    return (crlf - 1 if crlf and buffer[crlf - 1] == 13 else crlf), crlf + 3


def parse_response_head(head: bytes) -> ResponseHead:
    """
    Parse a response head (the bytes before the empty line, without it; see
    L{response_head_end}). Lines end with CRLF or a lone LF; a lone CR or a NUL inside a
    line becomes a space, so it can never start a header the app did not send as one.
    Lines that are not headers (no colon, or a name that is not a token) are dropped, as
    are obsolete line foldings; a C{Content-Length} that is not one non-negative number (or
    several different ones) is an error (RFC 9112 6.3), as is a status line that is not
    HTTP/1.x. A head with a lone LF is never followed by another response on the same
    connection (C{close} is added to its L{ResponseHead.connection}): where one part of a
    stack takes LF as a line end and another does not, a header value with an LF in it
    (an app's injection bug) could make the next response on a shared connection one the
    app's client chose.

    @raise WireError: for a head that cannot be passed on.
    """
    if len(head) > MAX_HEAD:
        raise WireError(f"the response head is longer than {MAX_HEAD} bytes")
    # The common head has CRLF line ends only; the rare other one has its values cleaned.
    suspect = not only_crlf_line_ends(head)
    lone_lf = suspect and head.count(b"\n") != head.count(b"\r\n")
    if lone_lf:  # lines cut at every LF, their CR dropped
        lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    else:
        lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    version = status[0]
    if (len(status) < 2 or not version.startswith(b"HTTP/1.") or len(status[1]) != 3
            or not status[1].isdigit()):
        raise WireError(f"the answer is not HTTP/1.x: {lines[0][:80]!r}")
    code = int(status[1])
    phrase = status[2] if len(status) > 2 else b""
    if suspect:
        phrase = clean_value(phrase)
    headers = []
    connection_values = []
    upgrade = []
    lengths = set()
    codings = []
    fields = [line.partition(b":") for line in lines[1:]]
    # every line a header (the common case) is checked for all lines at once
    checked = all(colon for _, colon, _ in fields) and are_header_names(
        [name for name, _, _ in fields])
    for name, colon, value in fields:
        if not checked and (not colon or not is_header_name(name)):
            continue  # obs-fold, junk: nothing a client could be made to read as a header
        value = clean_value(value) if suspect else value.strip(b" \t")
        lower = name.lower()
        if lower not in HOP_BY_HOP:
            headers.append((name, value))
        elif lower == b"content-length":
            lengths.update(part.strip() for part in value.split(b","))
        elif lower == b"transfer-encoding":
            codings += [part.strip().lower() for part in value.split(b",") if part.strip()]
        elif lower == b"connection":
            connection_values.append(value)
        elif lower == b"upgrade":
            upgrade.append(value.lower())
    length = None
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise WireError(f"invalid Content-Length {b', '.join(sorted(lengths))[:80]!r}")
        length = int(next(iter(lengths)))
    connection = connection_tokens(connection_values) if connection_values else frozenset()
    if lone_lf:
        connection |= {b"close"}
    named = connection - NEVER_HOP_BY_HOP - _STANDARD_TOKENS
    if named:
        headers = [(name, value) for name, value in headers if name.lower() not in named]
    chunked = bool(codings) and codings[-1] == b"chunked"
    if codings:
        length = None  # RFC 9112 6.1: Transfer-Encoding overrides Content-Length
    return ResponseHead(version, code, phrase, headers, connection, b", ".join(upgrade), length,
                        chunked, bool(codings))


class ChunkedDecoder:
    """
    Decodes a C{Transfer-Encoding: chunked} body as it arrives: L{feed} returns the body
    bytes found in the data given, L{done} is set after the last chunk and its trailers,
    and L{rest} then holds what followed the body. Strict: chunk sizes are hex digits
    only (no sign, C{0x} or underscores, which C{int(x, 16)} would take), the CRLF after
    each chunk must be there, lines are bounded.

    @ivar done: the body ended.
    @ivar rest: the bytes after the body's end (another response, or junk).
    """

    __slots__ = ("done", "rest", "_left", "_state", "_buffer")

    _SIZE, _DATA, _CRLF, _TRAILER = range(4)

    def __init__(self) -> None:
        self.done = False
        self.rest = b""
        self._left = 0
        self._state = self._SIZE
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """
        Decode C{data}; returns the body pieces in it (possibly none).

        @raise WireError: for a malformed chunked body.
        """
        if self.done:
            self.rest += data
            return []
        pieces = []
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        position = 0
        size = len(buffer)
        while position < size:
            state = self._state
            if state == self._DATA:
                take = min(self._left, size - position)
                pieces.append(buffer[position:position + take])
                position += take
                self._left -= take
                if not self._left:
                    self._state = self._CRLF
                continue
            if state == self._CRLF:
                if size - position < 2:
                    break
                if buffer[position:position + 2] != b"\r\n":
                    raise WireError("a chunk is not followed by CRLF")
                position += 2
                self._state = self._SIZE
                continue
            end = buffer.find(b"\r\n", position)
            if end < 0:
                if size - position > MAX_CHUNK_LINE:
                    raise WireError("a chunk-size or trailer line is too long")
                break
            line = buffer[position:end]
            position = end + 2
            if state == self._SIZE:
                digits = line.split(b";", 1)[0].strip(b" \t")
                if _CHUNK_SIZE.fullmatch(digits) is None or has_line_breaks(line):
                    raise WireError(f"malformed chunk size {line[:40]!r}")
                self._left = int(digits, 16)
                self._state = self._DATA if self._left else self._TRAILER
            elif not line:  # the empty line after the trailers: the end
                self.done = True
                self.rest = buffer[position:]
                return pieces
            elif len(line) > MAX_CHUNK_LINE:
                raise WireError("a trailer line is too long")
        self._buffer = buffer[position:]
        return pieces


def request_head(method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]],
                 framing: bytes = b"") -> bytes:
    """
    A request head, ready to send: the request line, C{headers} ((name, value) pairs,
    already clean), then C{framing} (a C{Content-Length}/C{Transfer-Encoding} line with
    its CRLF, or nothing) and the empty line.
    """
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines += (framing, b"\r\n")
    return b"".join(lines)


def response_head(code: int, phrase: bytes, headers: Iterable[tuple[bytes, bytes]],
                  end: bool = True) -> list[bytes]:
    """
    The pieces of a response head (a list, so callers can append framing headers before
    joining): the status line and C{headers} ((name, value) pairs, already clean), with
    the empty line when C{end}.
    """
    lines = [b"HTTP/1.1 %d %s\r\n" % (code, phrase)]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    if end:
        lines.append(b"\r\n")
    return lines
