"""
The HTTP side of the WebSocket bridge, as pure functions: the handshake request hubtwist
sends to the app, the app's response head, the 101 hubtwist sends to the client, and the
body of a refusal (Content-Length, chunked, or up to the end of the connection).

hubtwist does the backend handshake itself rather than with an HTTP or WebSocket client
library because it must forward every header as given (repeated C{Set-Cookie} headers
stay separate), pass a refusal on with its status and body, and hand over the bytes that
follow the 101 untouched.
"""

from __future__ import annotations

from typing import Iterable

from hubtwist.proxy.rewrite import HOP_BY_HOP

MAX_HEAD = 64 * 1024
"""The longest response head accepted from an app."""


class HandshakeError(Exception):
    """The app's answer to the handshake is not HTTP, or not a usable 101."""


def handshake_request(target: bytes, headers: Iterable[tuple[bytes, list[bytes]]]) -> bytes:
    """
    The upgrade request for the app: C{GET target}, the end-to-end C{headers} as given
    (hop-by-hop ones already removed by the caller), then C{Connection: Upgrade} and
    C{Upgrade: websocket}.
    """
    lines = [b"GET " + target + b" HTTP/1.1"]
    for name, values in headers:
        for value in values:
            lines.append(name + b": " + value)
    lines.append(b"Connection: Upgrade")
    lines.append(b"Upgrade: websocket")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class ResponseHead:
    """A parsed response head: C{code}, C{phrase}, C{headers} (name, value pairs in order)."""

    __slots__ = ("code", "phrase", "headers")

    def __init__(self, code: int, phrase: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.code = code
        self.phrase = phrase
        self.headers = headers

    def get(self, name: bytes) -> list[bytes]:
        """All values of header C{name} (lower case)."""
        return [value for key, value in self.headers if key.lower() == name]

    def tokens(self, name: bytes) -> set[bytes]:
        """The comma-separated tokens of header C{name}, lower-cased."""
        return {token.strip().lower() for value in self.get(name) for token in value.split(b",")}


def parse_head(data: bytes) -> tuple[ResponseHead, bytes] | None:
    """
    The response head at the start of C{data} and the bytes after it, or L{None} while it
    is incomplete. Raises L{HandshakeError} for something that is not an HTTP response or a
    head longer than L{MAX_HEAD}.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise HandshakeError(f"the response head is longer than {MAX_HEAD} bytes")
        if data[:5] != b"HTTP/"[: len(data[:5])]:
            raise HandshakeError("the answer is not HTTP")
        return None
    lines = data[:end].split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
        raise HandshakeError(f"the answer is not HTTP: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + b" " + line.strip())
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise HandshakeError(f"malformed response header {line[:80]!r}")
        headers.append((name, value.strip()))
    phrase = status[2] if len(status) > 2 else b""
    return ResponseHead(int(status[1]), phrase, headers), data[end + 4:]


def end_to_end(head: ResponseHead) -> list[tuple[bytes, bytes]]:
    """The headers of C{head} minus hop-by-hop ones (and those its C{Connection} names)."""
    named = set(HOP_BY_HOP) | head.tokens(b"connection")
    return [(name, value) for name, value in head.headers if name.lower() not in named]


def switching_protocols(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """hubtwist's 101 to the client, with C{headers} after C{Upgrade} and C{Connection}."""
    lines = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade"]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def select_raw_subprotocol(offered: list[bytes]) -> bytes | None:
    """
    The subprotocol of a raw-socket connection: C{binary} (websockify, noVNC) when offered,
    else the first one offered (jupyter-server-proxy's choice), else none.
    """
    tokens = [token.strip() for value in offered for token in value.split(b",") if token.strip()]
    if not tokens:
        return None
    return b"binary" if b"binary" in tokens else tokens[0]


class BodyReader:
    """
    The body of a refusal, as it arrives: C{feed} returns the decoded bytes (and sets
    C{done} at its end). C{length} is the Content-Length, L{None} for chunked or
    until-close bodies.
    """

    def __init__(self, head: ResponseHead) -> None:
        self.chunked = b"chunked" in head.tokens(b"transfer-encoding")
        self.length: int | None = None
        self.done = False
        self.until_close = False
        self._left = 0
        self._buffer = b""
        self._state = "size"
        if head.code in (204, 304) or 100 <= head.code < 200:
            self.length = 0
            self.done = True
        elif not self.chunked:
            lengths = head.get(b"content-length")
            if lengths:
                try:
                    self.length = int(lengths[0])
                except ValueError:
                    raise HandshakeError(f"bad Content-Length {lengths[0][:40]!r}") from None
                self._left = self.length
                self.done = self.length == 0
            else:
                self.until_close = True

    def feed(self, data: bytes) -> bytes:
        """Decode C{data}; bytes after the end of the body are ignored."""
        if self.done:
            return b""
        if self.until_close:
            return data
        if not self.chunked:
            data = data[: self._left]
            self._left -= len(data)
            self.done = self._left == 0
            return data
        return self._chunks(data)

    def _chunks(self, data: bytes) -> bytes:
        out = []
        buffer = self._buffer + data
        position = 0
        while not self.done:
            if self._state == "data":
                take = min(self._left, len(buffer) - position)
                out.append(buffer[position:position + take])
                position += take
                self._left -= take
                if self._left:
                    break
                self._state = "crlf"
                continue
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                if len(buffer) - position > 4096:
                    raise HandshakeError("malformed chunked body")
                break
            line = buffer[position:line_end]
            position = line_end + 2
            if self._state == "crlf":
                if line:
                    raise HandshakeError("malformed chunked body")
                self._state = "size"
            elif self._state == "size":
                try:
                    self._left = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise HandshakeError("malformed chunk size") from None
                self._state = "data" if self._left else "trailer"
            elif not line:  # the empty line after the trailers
                self.done = True
        self._buffer = buffer[position:]
        return b"".join(out)
