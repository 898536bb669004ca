"""
WebSocket framing (RFC 6455 section 5) for the bridge: pure code, no reactor.

Two readers, one per kind of bridge:

  - L{FrameSplicer} relays the frames of one direction of a WebSocket-to-WebSocket
    connection I{unchanged} (still masked, still compressed): it reads only the frame
    headers, to count messages, enforce the message size limit, see close frames and find
    the frame boundaries where hubtwist may insert a frame of its own (a ping, a close).
  - L{FrameDecoder} terminates a client's WebSocket for the raw-socket bridge: it unmasks
    data frames into a byte stream and hands control frames over whole.

Both hold back an incomplete frame header, and an incomplete control frame (at most 131
bytes), until the rest arrives, so what they pass on always ends at a frame boundary or
inside a data frame's payload, never inside a header.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from typing import Callable

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: bytes) -> bytes:
    """The C{Sec-WebSocket-Accept} value answering C{Sec-WebSocket-Key: key}."""
    return base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())


def apply_mask(payload: bytes, key: bytes, offset: int = 0) -> bytes:
    """
    XOR C{payload} with the 4-byte masking C{key}, starting at byte C{offset} of the
    frame's payload (masking is its own inverse). One big-integer XOR, so it runs at
    memory speed rather than a Python loop per byte.
    """
    size = len(payload)
    if not size:
        return b""
    shift = offset % 4
    if shift:
        key = key[shift:] + key[:shift]
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        size, "little")


def frame_header(opcode: int, length: int, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """The header of a frame with a C{length}-byte payload (and C{mask}, if given)."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 0x10000:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    return header + mask if mask is not None else header


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool = False) -> bytes:
    """
    One complete frame. C{masked} frames (what a client sends) get a fresh random key.
    """
    if masked:
        key = os.urandom(4)
        return frame_header(opcode, len(payload), fin=fin, mask=key) + apply_mask(payload, key)
    return frame_header(opcode, len(payload), fin=fin) + payload


def close_payload(code: int | None, reason: str = "") -> bytes:
    """The payload of a close frame: nothing for no code, else the code and a UTF-8 reason
    cut to fit the 125-byte control frame limit (on a character boundary)."""
    if code is None or code == CLOSE_NO_STATUS:
        return b""
    encoded = reason.encode("utf-8")[:123]
    return struct.pack("!H", code) + encoded.decode("utf-8", "ignore").encode("utf-8")


def close_frame(code: int | None, reason: str = "", *, masked: bool = False) -> bytes:
    """A complete close frame."""
    return encode_frame(OP_CLOSE, close_payload(code, reason), masked=masked)


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a close frame's (unmasked) payload; 1005 when it has none."""
    if len(payload) < 2:
        return CLOSE_NO_STATUS, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


def _discard(data: bytes) -> None:
    pass



def parse_frame_head(data: bytes, position: int, size: int) -> tuple[int, int] | None:
    """
    The frame header starting at C{data[position]}: (header length including the masking
    key, payload length), or None while fewer than a whole header's bytes are there.
    """
    available = size - position
    if available < 2:
        return None
    second = data[position + 1]
    length = second & 0x7F
    head = 2
    if length == 126:
        if available < 4:
            return None
        length = (data[position + 2] << 8) | data[position + 3]
        head = 4
    elif length == 127:
        if available < 10:
            return None
        length = int.from_bytes(data[position + 2:position + 10], "big")
        head = 10
    if second & 0x80:
        head += 4
    return (head, length) if available >= head else None

class FrameSplicer:
    """
    Pass one direction's frames through unchanged while reading their headers.

    @ivar out: where the bytes go (the other side's C{transport.write}).
    @ivar remaining: payload bytes of the current frame still to come; 0 at a boundary.
    @ivar close_code: the code of the close frame seen in this direction, or L{None}.
    @ivar forwarding: L{False} once L{stop} was called: frames are still read (to see the
        other side's close frame) but no longer passed on.
    """

    __slots__ = (
        "out", "write", "remaining", "max_message", "message_size", "held", "pending",
        "close_code", "close_reason", "forwarding", "own_pong", "masked",
        "on_messages", "on_close", "on_too_big", "on_own_pong", "too_big",
    )

    def __init__(
        self, out: Callable[[bytes], None], *, masked: bool, max_message: int = 0,
        on_messages: Callable[[int], None] | None = None,
        on_close: Callable[[], None] | None = None,
        on_too_big: Callable[[], None] | None = None,
        on_own_pong: Callable[[], None] | None = None,
    ) -> None:
        """
        @param out: called with the bytes to pass on.
        @param masked: whether frames in this direction are masked (client to server).
        @param max_message: largest data message in payload bytes; 0 for no limit.
        @param on_messages: called with the number of data messages completed by a chunk.
        @param on_close: called once the first close frame has been passed on (or read).
        @param on_too_big: called when a message exceeds C{max_message}, at the start of the
            offending frame; nothing of that frame has been passed on, and the splicer stops
            forwarding.
        @param on_own_pong: called when a pong answering L{own_pong} is dropped.
        """
        self.out = out
        self.write = out
        self.masked = masked
        self.remaining = 0
        self.max_message = max_message
        self.message_size = 0
        self.held = b""
        self.pending: list[bytes] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.forwarding = True
        self.too_big = False
        self.own_pong: bytes | None = None
        self.on_messages = on_messages
        self.on_close = on_close
        self.on_too_big = on_too_big
        self.on_own_pong = on_own_pong

    @property
    def at_boundary(self) -> bool:
        """Whether a frame may be inserted now (nothing of a frame is half passed on)."""
        return self.remaining == 0

    def inject(self, frame: bytes, *, then_stop: bool = False) -> None:
        """
        Send C{frame} at the next frame boundary (now, if the stream is at one), then stop
        forwarding if C{then_stop}.
        """
        if not self.forwarding:
            return
        self.pending.append(frame)
        if then_stop:
            self.pending.append(b"")  # marks the stop
        if self.remaining == 0:
            self._flush_pending()

    def stop(self) -> None:
        """Pass nothing more on (frames are still read)."""
        self.forwarding = False
        self.write = _discard
        self.pending.clear()

    def _flush_pending(self) -> None:
        pending, self.pending = self.pending, []
        for frame in pending:
            if not frame:
                self.stop()
                return
            self.out(frame)

    def feed(self, data: bytes) -> None:
        """Read C{data} from this direction's source and pass it on."""
        if self.held:
            data = self.held + data
            self.held = b""
        size = len(data)
        position = self.remaining
        if position > size:
            # Inside a payload: the bulk of a large message takes only this path.
            self.remaining = position - size
            self.write(data)
            return
        self.remaining = 0  # until the end of this chunk, the loop is at boundaries
        start = 0  # first byte not passed on yet
        completed = 0
        closed = False
        while True:
            # `position` is a frame boundary.
            if self.pending:
                if position > start:
                    self.write(data[start:position])
                start = position
                self._flush_pending()
            parsed = parse_frame_head(data, position, size)
            if parsed is None:
                break
            head, length = parsed
            first = data[position]
            second = data[position + 1]
            opcode = first & 0x0F
            end = position + head + length
            if opcode & 0x8:
                if length > 125:
                    # Not a valid control frame: pass it on for the receiver to refuse,
                    # without holding it back (it could be of any size).
                    if end >= size:
                        self.remaining = end - size
                        position = size
                        break
                    position = end
                    continue
                # A control frame (at most 125 bytes of payload): only ever handled whole.
                if end > size:
                    break
                if opcode == OP_CLOSE:
                    if self.close_code is None:
                        payload = data[position + head:end]
                        if second & 0x80:
                            payload = apply_mask(payload, data[position + head - 4:position + head])
                        self.close_code, self.close_reason = parse_close(payload)
                        closed = True
                elif opcode == OP_PONG and self.own_pong is not None and length == len(self.own_pong):
                    payload = data[position + head:end]
                    if second & 0x80:
                        payload = apply_mask(payload, data[position + head - 4:position + head])
                    if payload == self.own_pong:
                        # The answer to hubtwist's own keepalive ping: not for the app.
                        if position > start:
                            self.write(data[start:position])
                        start = position = end
                        if self.on_own_pong is not None:
                            self.on_own_pong()
                        continue
            else:
                if opcode == OP_CONTINUATION:
                    self.message_size += length
                else:
                    self.message_size = length
                if self.max_message and self.message_size > self.max_message and not self.too_big:
                    if position > start:
                        self.write(data[start:position])
                    start = position
                    self.too_big = True
                    # At a boundary: the callback may still inject (a close frame).
                    if self.on_too_big is not None:
                        self.on_too_big()
                    self.stop()
                if first & 0x80:
                    completed += 1
            if end >= size:
                self.remaining = end - size
                position = size
                if end == size and self.pending:
                    continue  # flush at this boundary
                break
            position = end
        # Pass on everything up to `position`; hold back an incomplete header.
        if position < size:
            if start < position:
                self.write(data[start:position])
            self.held = data[position:]
            self.remaining = 0
        elif start == 0:
            self.write(data)
        elif start < size:
            self.write(data[start:])
        if completed and self.on_messages is not None:
            self.on_messages(completed)
        if closed and self.on_close is not None:
            self.on_close()


class FrameDecoder:
    """
    Decode a client's frames (the raw-socket bridge): data payloads, unmasked, go to
    C{on_data} as they arrive (a byte stream: message boundaries are not kept, as with
    websockify); control frames go whole to C{on_control(opcode, payload)}.
    """

    __slots__ = (
        "on_data", "on_control", "on_messages", "on_too_big", "on_invalid", "max_message", "held",
        "remaining", "mask", "mask_offset", "message_size", "failed",
    )

    def __init__(
        self, *, on_data: Callable[[bytes], None],
        on_control: Callable[[int, bytes], None],
        on_messages: Callable[[int], None] | None = None,
        on_too_big: Callable[[], None] | None = None,
        on_invalid: Callable[[str], None] | None = None,
        max_message: int = 0,
    ) -> None:
        self.on_data = on_data
        self.on_invalid = on_invalid
        self.on_control = on_control
        self.on_messages = on_messages
        self.on_too_big = on_too_big
        self.max_message = max_message
        self.held = b""
        self.remaining = 0
        self.mask: bytes | None = None
        self.mask_offset = 0
        self.message_size = 0
        self.failed = False

    def feed(self, data: bytes) -> None:
        """Decode C{data}; nothing is decoded after a size violation."""
        if self.failed:
            return
        if self.held:
            data = self.held + data
            self.held = b""
        size = len(data)
        position = 0
        completed = 0
        while position < size:
            if self.remaining:
                take = min(self.remaining, size - position)
                chunk = data[position:position + take]
                if self.mask is not None:
                    chunk = apply_mask(chunk, self.mask, self.mask_offset)
                    self.mask_offset += take
                self.remaining -= take
                position += take
                self.on_data(chunk)
                continue
            parsed = parse_frame_head(data, position, size)
            if parsed is None:
                break
            head, length = parsed
            first = data[position]
            mask = data[position + head - 4:position + head] if data[position + 1] & 0x80 else None
            opcode = first & 0x0F
            if opcode & 0x8:
                if length > 125:  # no valid control frame is that long
                    self.failed = True
                    if self.on_invalid is not None:
                        self.on_invalid("a control frame longer than 125 bytes")
                    return
                end = position + head + length
                if end > size:
                    break
                payload = data[position + head:end]
                if mask is not None:
                    payload = apply_mask(payload, mask)
                position = end
                self.on_control(opcode, payload)
                if self.failed:
                    return
                continue
            if opcode == OP_CONTINUATION:
                self.message_size += length
            else:
                self.message_size = length
            if self.max_message and self.message_size > self.max_message:
                self.failed = True
                if completed and self.on_messages is not None:
                    self.on_messages(completed)
                if self.on_too_big is not None:
                    self.on_too_big()
                return
            if first & 0x80:
                completed += 1
            self.mask = mask
            self.mask_offset = 0
            self.remaining = length
            position += head
        if position < size:
            self.held = data[position:]
        if completed and self.on_messages is not None:
            self.on_messages(completed)
