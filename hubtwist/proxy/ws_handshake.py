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

from hubtwist.proxy.http1 import (
    MAX_HEAD, ChunkedDecoder, ResponseHead, WireError, parse_response_head, response_head,
    response_head_end,
)

__all__ = [
    "MAX_HEAD", "BodyReader", "HandshakeError", "ResponseHead",
    "handshake_request", "parse_head", "select_raw_subprotocol", "switching_protocols",
]


class HandshakeError(WireError):
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


def parse_head(data: bytes) -> tuple[ResponseHead, bytes] | None:
    """
    The response head at the start of C{data} (parsed and cleaned by
    L{hubtwist.proxy.http1.parse_response_head}, as every response from an app is) and the
    bytes after it, or L{None} while it is incomplete. Raises L{HandshakeError} for
    something that is not an HTTP response or a head longer than L{MAX_HEAD}.
    """
    end, rest = response_head_end(data)
    if end < 0:
        if len(data) > MAX_HEAD:
            raise HandshakeError(f"the response head is longer than {MAX_HEAD} bytes")
        if data[:5] != b"HTTP/"[: len(data[:5])]:
            raise HandshakeError("the answer is not HTTP")
        return None
    try:
        head = parse_response_head(data[:end])
    except WireError as error:
        raise HandshakeError(str(error)) from None
    return head, data[rest:]


def switching_protocols(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """hubtwist's 101 to the client, with C{headers} (clean) after C{Upgrade} and
    C{Connection}."""
    return b"".join(response_head(101, b"Switching Protocols", [
        (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), *headers]))


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
        length = head.body_length(b"GET")
        self.chunked = head.chunked and length is None
        self.length: int | None = length
        self.until_close = length is None and not self.chunked
        self.done = length == 0
        self._left = length or 0
        self._chunks = ChunkedDecoder() if self.chunked else None

    def feed(self, data: bytes) -> bytes:
        """Decode C{data}; bytes after the end of the body are ignored."""
        if self.done:
            return b""
        if self.until_close:
            return data
        if self._chunks is None:
            data = data[: self._left]
            self._left -= len(data)
            self.done = self._left == 0
            return data
        try:
            pieces = self._chunks.feed(data)
        except WireError as error:
            raise HandshakeError(str(error)) from None
        self.done = self._chunks.done
        return b"".join(pieces)
