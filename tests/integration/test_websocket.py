"""
WebSockets through hubtwist (in-process, hubtwist.app.serve) to real apps on loopback:
tests/apps/wsapp.py (the `websockets` package) and its --raw TCP echo. Clients are the
`websockets` sync client (in a thread) or, for byte-level control, a small Twisted client
in this file. The frame and handshake code is also tested alone, without a reactor.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.threads import blockingCallFromThread
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from hubtwist.app import serve
from hubtwist.config.loader import load_dict
from hubtwist.proxy.ws_frames import (
    FrameDecoder, FrameSplicer, accept_key, apply_mask, close_payload, encode_frame, parse_close,
)
from hubtwist.proxy.ws_handshake import BodyReader, HandshakeError, parse_head
from tests.helpers import APPS, in_thread, poll, reactor, sleep, within

WSAPP = [sys.executable, str(APPS / "wsapp.py")]
APP = [*WSAPP, "--port", "{port}"]
MiB = 1 << 20


@pytest.fixture
def hubtwist():
    """Start hubtwist in this process; C{pump=False} keeps bridged sockets on Twisted's
    transports (the path TLS connections take)."""
    running = []

    async def start(pump: bool = True, **raw):
        raw.setdefault("listen", ["tcp:0:interface=127.0.0.1"])
        instance = await serve(reactor(), load_dict(raw, "test"))
        instance.port = instance.ports[0].getHost().port
        instance.url = f"http://127.0.0.1:{instance.port}"
        instance.ws = f"ws://127.0.0.1:{instance.port}"
        instance.bridge = instance.forwarder.upgrades
        instance.bridge.use_pump = pump
        running.append(instance)
        return instance

    yield start
    for instance in running:
        for session in list(instance.bridge.sessions):
            session.abort()
        pytest_twisted.blockon(within(instance.stop(), 30))


@pytest.fixture
def complaints():
    """Log events a bridged connection's end must not produce: failures, and warnings or
    errors from the proxy."""
    from twisted.logger import LogLevel, globalLogPublisher

    seen = []

    def observer(event):
        namespace = event.get("log_namespace", "")
        if "log_failure" in event or (
                namespace.startswith("hubtwist.proxy")
                and event.get("log_level", LogLevel.info) >= LogLevel.warn):
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def ws_connect(url: str, **options):
    options.setdefault("open_timeout", 30)
    options.setdefault("close_timeout", 5)
    options.setdefault("max_size", None)
    return connect(url, **options)


async def running(ht, name: str = "ws"):
    await within(ht.keepers[name].ensure_running(), 30)


def last_close(ht, path: str = "/echo", timeout: float = 5.0) -> dict:
    """What the app's connection on C{path} last received as a close (via /last-close)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        with ws_connect(f"{ht.ws}/ws/last-close") as ws:
            info = json.loads(ws.recv(timeout=10))
        if info.get("path") == path or time.monotonic() > deadline:
            return info
        time.sleep(0.05)


# -- a byte-level client -------------------------------------------------------------------

def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked frame, encoded here independently of hubtwist's code."""
    mask = os.urandom(4)
    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class RawClient(Protocol):
    """A WebSocket client that shows the frames (server frames are unmasked)."""

    def __init__(self, count_only: bool = False) -> None:
        self.count_only = count_only
        self.buffer = b""
        self.head: bytes | None = None
        self.frames: list[tuple[int, bytes]] = []
        self.received = 0
        self.head_received: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self.key = base64.b64encode(os.urandom(16))

    def handshake(self, path: str, host: str, extra: bytes = b"") -> bytes:
        return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {self.key.decode()}\r\n\r\n").encode() + extra

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.count_only and self.head is not None:
            return
        self.buffer += data
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head, self.buffer = self.buffer[:end + 4], self.buffer[end + 4:]
            self.head_received.callback(self.head)
            if self.count_only:
                return
        while len(self.buffer) >= 2:
            length = self.buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
            if len(self.buffer) < offset + length:
                return
            self.frames.append((self.buffer[0] & 0x0F, self.buffer[offset:offset + length]))
            self.buffer = self.buffer[offset + length:]

    def connectionLost(self, reason) -> None:
        self.closed.callback(reason.value)

    def send(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.transport.write(client_frame(opcode, payload, fin))


async def raw_client(ht, path: str, extra: bytes = b"", count_only: bool = False) -> RawClient:
    client = RawClient(count_only)
    await within(connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", ht.port), client), 10)
    client.transport.write(client.handshake(path, f"127.0.0.1:{ht.port}", extra))
    await within(client.head_received, 30)
    return client


# -- framing and handshake, without a reactor ----------------------------------------------

def _messages_stream(masked: bool) -> tuple[bytes, int]:
    frames = [
        encode_frame(0x1, b"hello", masked=masked),
        encode_frame(0x2, os.urandom(300), masked=masked),  # 16-bit length
        encode_frame(0x2, os.urandom(70_000), masked=masked),  # 64-bit length
        encode_frame(0x1, b"frag-", fin=False, masked=masked),
        encode_frame(0x9, b"ping!", masked=masked),  # control frame inside a message
        encode_frame(0x0, b"ment", masked=masked),
        encode_frame(0x2, b"", masked=masked),
    ]
    return b"".join(frames), 5


@pytest.mark.parametrize("masked", [True, False])
def test_splicer_passes_bytes_through_at_any_split(masked):
    stream, messages = _messages_stream(masked)
    closing = encode_frame(0x8, close_payload(4001, "bye"), masked=masked)
    stream += closing
    for step in (1, 2, 3, 7, 64, 1000, len(stream)):
        out = []
        counted = []
        closes = []
        splicer = FrameSplicer(out.append, masked=masked, on_messages=counted.append,
                               on_close=lambda: closes.append(1))
        for index in range(0, len(stream), step):
            splicer.feed(stream[index:index + step])
        assert b"".join(out) == stream, f"split every {step} bytes"
        assert sum(counted) == messages
        assert closes == [1] and splicer.close_code == 4001 and splicer.close_reason == "bye"
        assert splicer.at_boundary


def test_splicer_injects_at_boundaries_and_drops_its_own_pong():
    first = encode_frame(0x2, os.urandom(1000), masked=True)
    out = []
    splicer = FrameSplicer(out.append, masked=True)
    splicer.feed(first[:500])
    assert not splicer.at_boundary
    splicer.inject(b"<ping>")
    assert b"".join(out) == first[:500]  # not in the middle of a frame
    splicer.own_pong = b"keepalive"
    pong = encode_frame(0xA, b"keepalive", masked=True)
    other_pong = encode_frame(0xA, b"app's own", masked=True)
    splicer.feed(first[500:] + pong[:3])
    assert b"".join(out) == first + b"<ping>"
    splicer.feed(pong[3:] + other_pong)
    assert b"".join(out) == first + b"<ping>" + other_pong


def test_splicer_never_holds_back_an_oversized_control_frame():
    out = []
    splicer = FrameSplicer(out.append, masked=False)
    bogus = bytes((0x89, 127)) + struct.pack("!Q", 10_000_000) + b"junk"
    splicer.feed(bogus)
    assert b"".join(out) == bogus and splicer.remaining == 10_000_000 - 4


def test_splicer_enforces_the_message_size_limit():
    out = []
    too_big = []
    splicer = FrameSplicer(out.append, masked=False, max_message=1000,
                           on_too_big=lambda: too_big.append(splicer.at_boundary))
    ok = encode_frame(0x2, b"x" * 1000)
    fragments = encode_frame(0x2, b"y" * 600, fin=False) + encode_frame(0x0, b"z" * 600)
    splicer.feed(ok + fragments)
    assert too_big == [True]
    assert b"".join(out) == ok + encode_frame(0x2, b"y" * 600, fin=False)
    assert not splicer.forwarding


def test_decoder_unmasks_across_splits_and_handles_control_frames():
    payload = os.urandom(5000)
    stream = (encode_frame(0x2, payload[:3000], fin=False, masked=True)
              + encode_frame(0x9, b"are you there", masked=True)
              + encode_frame(0x0, payload[3000:], masked=True)
              + encode_frame(0x8, close_payload(1000, "done"), masked=True))
    for step in (1, 5, 333, len(stream)):
        data, control, counted = [], [], []
        decoder = FrameDecoder(on_data=data.append, on_control=lambda o, p: control.append((o, p)),
                               on_messages=counted.append)
        for index in range(0, len(stream), step):
            decoder.feed(stream[index:index + step])
        assert b"".join(data) == payload
        assert control == [(0x9, b"are you there"), (0x8, close_payload(1000, "done"))]
        assert sum(counted) == 1
    assert parse_close(close_payload(4001, "é" * 100)) == (4001, "é" * 61)


def test_masking_and_accept_key():
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    assert accept_key(key) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455, section 1.3
    data = os.urandom(1001)
    mask = b"\x01\x02\x03\x04"
    assert apply_mask(data, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert apply_mask(apply_mask(data, mask)[7:], mask, 7) == data[7:]


def test_response_head_and_refusal_bodies():
    head, rest = parse_head(b"HTTP/1.1 403 Forbidden\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert head.code == 403 and head.get(b"set-cookie") == [b"a=1", b"b=2"]
    reader = BodyReader(head)
    body = b"".join(reader.feed(rest[i:i + 1]) for i in range(len(rest)))
    assert body == b"hello" and reader.done
    assert parse_head(b"HTTP/1.1 101 Switching") is None
    with pytest.raises(HandshakeError):
        parse_head(b"SSH-2.0-OpenSSH\r\n")


# -- through hubtwist ----------------------------------------------------------------------

@pytest.mark.parametrize("pump", [True, False], ids=["pump", "transports"])
@pytest_twisted.ensureDeferred
async def test_handshake_forwards_headers_subprotocol_and_cookies(hubtwist, pump):
    ht = await hubtwist(pump=pump, base_url="/user/a/", servers={"ws": {"command": APP}})

    def client():
        headers = {"Cookie": "session=abc; other=1", "Origin": "https://public.example",
                   "Authorization": "token secret", "X-Custom": "kept"}
        with ws_connect(f"{ht.ws}/user/a/ws/info?x=1", subprotocols=["chat", "superchat"],
                        additional_headers=headers) as ws:
            info = json.loads(ws.recv(timeout=10))
            ws.send("text é")
            text = ws.recv(timeout=10)
            blob = os.urandom(70_000)
            ws.send(blob)
            echoed = ws.recv(timeout=10)
            repeated = b"compress me " * 10_000
            ws.send(repeated)
            return (ws.subprotocol, ws.response.headers, info, text, echoed == blob,
                    ws.recv(timeout=10) == repeated)

    subprotocol, response, info, text, blob_ok, repeated_ok = await in_thread(client)
    assert subprotocol == "superchat"
    assert response.get_all("Set-Cookie") == ["ws_a=1; Path=/user/a/ws/",
                                              "ws_b=2; Path=/user/a/ws/sub; HttpOnly"]
    assert response["X-Ws-App"] == "yes"
    # permessage-deflate negotiated end to end: hubtwist passes compressed frames through.
    assert "permessage-deflate" in response["Sec-WebSocket-Extensions"]
    sent = info["headers"]
    assert info["path"] == "/info?x=1" and info["subprotocol"] == "superchat"
    assert sent["cookie"] == ["session=abc; other=1"]
    assert sent["origin"] == ["https://public.example"]
    assert sent["authorization"] == ["token secret"]
    assert sent["x-custom"] == ["kept"]
    assert sent["sec-websocket-protocol"] == ["chat, superchat"]
    assert sent["host"] == [f"127.0.0.1:{ht.port}"]
    assert sent["x-forwarded-prefix"] == ["/user/a/ws"]
    assert sent["upgrade"] == ["websocket"] and sent["connection"] == ["Upgrade"]
    assert text == "text é" and blob_ok and repeated_ok
    kinds = {type(s.client_end).__name__ for s in ht.bridge.sessions}
    assert kinds <= {"PumpEnd" if pump else "TransportEnd"}


@pytest_twisted.ensureDeferred
async def test_backend_refusal_is_passed_on_with_status_body_and_cookies(hubtwist):
    ht = await hubtwist(servers={"ws": {"command": APP}})

    def client():
        with pytest.raises(InvalidStatus) as refused:
            with ws_connect(f"{ht.ws}/ws/refuse"):
                pass
        return refused.value.response

    response = await in_thread(client)
    assert response.status_code == 403
    assert response.body == b"go away: no WebSockets for you\n"
    assert response.headers["X-Refused"] == "yes"
    assert response.headers.get_all("Set-Cookie") == ["refused=1; Path=/ws/"]
    # the client may read the whole refusal just before hubtwist sees the app's connection end
    await poll(lambda: not ht.bridge.sessions, 5, message="the session to end")
    # Frames sent optimistically after a refused handshake are not read as a request.
    client = await raw_client(ht, "/ws/refuse", extra=client_frame(0x1, b"GET / HTTP/1.1"))
    assert client.head.startswith(b"HTTP/1.1 403 ")
    await within(client.closed, 5)
    assert client.buffer == b"go away: no WebSockets for you\n"


@pytest.mark.parametrize("pump", [True, False], ids=["pump", "transports"])
@pytest_twisted.ensureDeferred
async def test_16_mib_binary_message_round_trip(hubtwist, pump):
    ht = await hubtwist(pump=pump, servers={"ws": {"command": APP}})
    payload = os.urandom(16 * MiB)

    def client():
        with ws_connect(f"{ht.ws}/ws/echo", compression=None) as ws:
            ws.send(payload)
            return ws.recv(timeout=60)

    assert await in_thread(client) == payload


@pytest_twisted.ensureDeferred
async def test_fragmented_messages_both_ways(hubtwist):
    ht = await hubtwist(servers={"ws": {"command": APP}})

    def client():
        with ws_connect(f"{ht.ws}/ws/echo", compression=None) as ws:
            ws.send(["frag", "mented ", "text"])
            text = ws.recv(timeout=10)
            ws.send([b"\x00" * 70_000, b"\x01" * 10, b"\x02"])
            binary = ws.recv(timeout=10)
        with ws_connect(f"{ht.ws}/ws/fragments", compression=None) as ws:
            ws.send("go")
            from_app = ws.recv(timeout=10)
        return text, binary, from_app

    text, binary, from_app = await in_thread(client)
    assert text == "fragmented text"
    assert binary == b"\x00" * 70_000 + b"\x01" * 10 + b"\x02"
    assert from_app == "part1-part2-part3"


@pytest.mark.parametrize("pump", [True, False], ids=["pump", "transports"])
@pytest_twisted.ensureDeferred
async def test_close_code_and_reason_pass_both_ways(hubtwist, pump):
    ht = await hubtwist(pump=pump, servers={"ws": {"command": APP}})

    def client_closes():
        with ws_connect(f"{ht.ws}/ws/echo") as ws:
            ws.send("hi")
            ws.recv(timeout=10)
            ws.close(4001, "client says bye")
            return ws.protocol.close_rcvd
        
    def app_closes():
        with ws_connect(f"{ht.ws}/ws/close?code=4001&reason=app%20says%20bye") as ws:
            ws.send("close please")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            return closed.value

    echoed = await in_thread(client_closes)
    assert (echoed.code, echoed.reason) == (4001, "client says bye")
    seen = await in_thread(last_close, ht)
    assert (seen["code"], seen["reason"]) == (4001, "client says bye")
    closed = await in_thread(app_closes)
    assert (closed.rcvd.code, closed.rcvd.reason) == (4001, "app says bye")
    assert closed.sent is not None and closed.sent.code == 4001  # the reply reached the app
    await poll(lambda: not ht.bridge.sessions, 5, message="sessions to end")


@pytest.mark.parametrize("pump", [True, False], ids=["pump", "transports"])
@pytest_twisted.ensureDeferred
async def test_abrupt_app_death_closes_the_client_within_a_second(hubtwist, pump, complaints):
    ht = await hubtwist(pump=pump, servers={"ws": {"command": APP, "backoff_initial": 0.05}})
    await running(ht)

    def client():
        import time

        with ws_connect(f"{ht.ws}/ws/die") as ws:
            started = time.monotonic()
            ws.send("die now")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            return time.monotonic() - started, closed.value

    took, closed = await in_thread(client)
    assert took < 1.0
    assert closed.rcvd is not None and closed.rcvd.code == 1011
    await poll(lambda: not ht.bridge.sessions, 5, message="the session to end")
    assert complaints == []


@pytest_twisted.ensureDeferred
async def test_client_drop_closes_the_app_connection(hubtwist, complaints):
    ht = await hubtwist(servers={"ws": {"command": APP}})
    await running(ht)
    client = await raw_client(ht, "/ws/echo")
    assert client.head.startswith(b"HTTP/1.1 101 ")
    client.send(0x1, b"hello")
    await poll(lambda: client.frames, 10, message="the echo")
    client.transport.abortConnection()
    await poll(lambda: not ht.bridge.sessions, 2, message="the session to end")
    seen = await in_thread(last_close, ht)
    assert seen["path"] == "/echo" and seen["code"] is None  # 1006: no close frame
    assert complaints == []


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize("pump", [True, False], ids=["pump", "transports"])
@pytest_twisted.ensureDeferred
async def test_slow_consumer_keeps_memory_bounded(hubtwist, pump):
    ht = await hubtwist(pump=pump, servers={"ws": {"command": APP}})
    await running(ht)
    count = 128
    baseline = _rss()
    client = await raw_client(ht, f"/ws/flood?size={MiB}&count={count}", count_only=True)
    client.transport.pauseProducing()  # a client that reads nothing for a while
    peak_buffered = peak_rss = 0
    for _ in range(20):
        await sleep(0.1)
        for session in ht.bridge.sessions:
            peak_buffered = max(peak_buffered,
                                session.client_end.buffered + session.backend_end.buffered)
        peak_rss = max(peak_rss, _rss())

    def flood_status():
        with ws_connect(f"{ht.ws}/ws/flood-status") as ws:
            return json.loads(ws.recv(timeout=10))["sent"]

    sent = await in_thread(flood_status)
    # Kernel socket buffers hold some MiB; without backpressure all 128 would be gone.
    assert sent < count // 2, f"the app sent {sent} MiB to a client that reads nothing"
    assert peak_buffered < 2 * MiB, f"hubtwist buffered {peak_buffered} bytes"
    assert peak_rss - baseline < 48 * MiB, f"RSS grew by {(peak_rss - baseline) >> 20} MiB"
    client.transport.resumeProducing()
    total = count * (MiB + 10)
    await poll(lambda: client.received >= total, 60, message="the whole flood")
    client.send(0x8, close_payload(1000, ""))  # answer the app's close after the flood
    await within(client.closed, 10)


@pytest_twisted.ensureDeferred
async def test_raw_socket_mode_carries_a_byte_stream(hubtwist):
    ht = await hubtwist(servers={"vnc": {"command": [*WSAPP, "--raw", "--port", "{port}"],
                                         "raw_socket_proxy": True}})
    plain = await treq.get(f"{ht.url}/vnc/")
    assert plain.code == 405
    await plain.content()
    payload = os.urandom(300_000)

    def client():
        with ws_connect(f"{ht.ws}/vnc/", subprotocols=["binary", "base64"]) as ws:
            banner = ws.recv(timeout=10)
            for start in range(0, len(payload), 70_000):
                ws.send(payload[start:start + 70_000])
            ws.send("and some text")
            received = b""
            wanted = len(payload) + len("and some text")
            while len(received) < wanted:
                received += ws.recv(timeout=10)
            ws.close()
            return ws.subprotocol, banner, received, ws.protocol.close_rcvd

    subprotocol, banner, received, closed = await in_thread(client)
    assert subprotocol == "binary"
    assert banner == b"RFB 003.008\n"
    assert received == payload + b"and some text"
    assert closed.code == 1000
    await poll(lambda: not ht.bridge.sessions, 5, message="the session to end")


@pytest_twisted.ensureDeferred
async def test_unix_socket_backends(hubtwist):
    ht = await hubtwist(servers={
        "ws": {"command": [*WSAPP, "--unix-socket", "{unix_socket}"], "unix_socket": True},
        "raw": {"command": [*WSAPP, "--raw", "--unix-socket", "{unix_socket}"],
                "unix_socket": True, "raw_socket_proxy": True},
    })

    def client():
        with ws_connect(f"{ht.ws}/ws/echo") as ws:
            ws.send(b"over a unix socket" * 1000)
            echoed = ws.recv(timeout=10)
        with ws_connect(f"{ht.ws}/raw/") as ws:
            banner = ws.recv(timeout=10)
            ws.send(b"raw over unix")
            raw = ws.recv(timeout=10)
        return echoed, banner, raw

    echoed, banner, raw = await in_thread(client)
    assert echoed == b"over a unix socket" * 1000
    assert banner == b"RFB 003.008\n" and raw == b"raw over unix"
    assert ht.keepers["ws"].address.kind == "unix" and ht.keepers["raw"].address.kind == "unix"


@pytest_twisted.ensureDeferred
async def test_each_message_stamps_activity_except_excluded_paths(hubtwist):
    ht = await hubtwist(servers={"ws": {"command": APP,
                                        "exclude_last_activity_patterns": ["^/quiet"]}})
    await running(ht)
    keeper = ht.keepers["ws"]

    def reset():
        keeper.last_activity = 1.0

    def stamps(path: str) -> list[float]:
        """After each message (and its echo) on C{path}: the last activity."""
        seen = []
        with ws_connect(f"{ht.ws}/ws/{path}") as ws:
            for _ in range(3):
                blockingCallFromThread(reactor(), reset)
                ws.send("tick")
                ws.recv(timeout=10)
                seen.append(blockingCallFromThread(reactor(), lambda: keeper.last_activity))
        return seen

    assert all(stamp > 1.0 for stamp in await in_thread(stamps, "echo"))
    assert await in_thread(stamps, "quiet") == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("pump", [True, False], ids=["pump", "transports"])
@pytest_twisted.ensureDeferred
async def test_message_over_the_size_limit_closes_with_1009(hubtwist, pump):
    ht = await hubtwist(pump=pump, servers={"ws": {"command": APP,
                                                   "websocket_max_message_size": MiB}})

    def client_sends(message):
        with ws_connect(f"{ht.ws}/ws/echo", compression=None) as ws:
            ws.send(b"x" * MiB)  # exactly at the limit: fine
            assert len(ws.recv(timeout=10)) == MiB
            with pytest.raises(ConnectionClosed) as closed:
                # hubtwist may close (1009) while the client is still sending the rest of
                # the message: the close then surfaces in send(), not in recv().
                ws.send(message)
                ws.recv(timeout=10)
            return closed.value.rcvd

    def app_sends():
        with ws_connect(f"{ht.ws}/ws/send?size={2 * MiB}", compression=None) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            return closed.value.rcvd

    rcvd = await in_thread(client_sends, os.urandom(2 * MiB))
    assert rcvd is not None and rcvd.code == 1009
    seen = await in_thread(last_close, ht)
    assert seen["code"] == 1009  # the app was told too
    rcvd = await in_thread(client_sends, [b"a" * (MiB // 2)] * 3)  # fragmented
    assert rcvd is not None and rcvd.code == 1009
    rcvd = await in_thread(app_sends)
    assert rcvd is not None and rcvd.code == 1009


@pytest.mark.parametrize("pump", [True, False], ids=["pump", "transports"])
@pytest_twisted.ensureDeferred
async def test_a_client_blocked_sending_still_gets_the_close_when_the_app_leaves(hubtwist, pump):
    # The app stops reading, so hubtwist stops reading the client (backpressure) and the
    # client blocks sending; then the app drops the connection. hubtwist must read (and
    # drop) the rest of the message, then close cleanly: a client that cannot read while a
    # send is blocked (websockets' sync client) would otherwise get a reset, not the close.
    ht = await hubtwist(pump=pump, servers={"ws": {"command": APP}})
    await running(ht)

    def client() -> bytes:
        with socket.create_connection(("127.0.0.1", ht.port), timeout=20) as sock:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall((f"GET /ws/stall?seconds=0.5 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n")
                         .encode())
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(4096) or pytest.fail(f"no handshake: {received!r}")
            assert received.startswith(b"HTTP/1.1 101 ")
            size = 48 * MiB  # more than every buffer on the way holds
            sock.sendall(struct.pack("!BBQ", 0x82, 0x80 | 127, size) + bytes(4)
                         + os.urandom(size))  # (all-zero mask: the payload as is)
            while chunk := sock.recv(65536):  # a reset raises here instead of ending
                received += chunk
            return received.split(b"\r\n\r\n", 1)[1]

    frames = await in_thread(client)
    assert frames[0] == 0x88 and struct.unpack("!H", frames[2:4])[0] == 1011, frames


@pytest_twisted.ensureDeferred
async def test_keepalive_pings_and_a_silent_client_is_dropped(hubtwist):
    ht = await hubtwist(servers={"ws": {"command": APP, "websocket_ping_interval": 0.2}})
    await running(ht)
    client = await raw_client(ht, "/ws/echo")
    answered = 0
    for _ in range(10):  # 1 s, answering every ping
        await sleep(0.1)
        pings = [payload for opcode, payload in client.frames if opcode == 0x9]
        client.frames = [frame for frame in client.frames if frame[0] != 0x9]
        for payload in pings:
            client.send(0xA, payload)
            answered += 1
    assert answered >= 3
    assert not client.closed.called
    client.send(0x1, b"still here")
    await poll(lambda: (0x1, b"still here") in client.frames, 5, message="the echo")
    started = reactor().seconds()
    await within(client.closed, 5)  # now silent: dropped after 3 unanswered intervals
    assert reactor().seconds() - started < 2.5


@pytest_twisted.ensureDeferred
async def test_frames_sent_right_after_the_handshake_are_websocket_data(hubtwist):
    ht = await hubtwist(servers={"ws": {"command": APP}})
    await running(ht)
    early = client_frame(0x1, b"sent before the 101") + client_frame(0x2, b"\x00\x01")
    client = await raw_client(ht, "/ws/echo", extra=early)
    assert client.head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nSec-WebSocket-Accept: " + accept_key(client.key) + b"\r\n" in client.head
    await poll(lambda: len(client.frames) >= 2, 10, message="both echoes")
    assert client.frames[:2] == [(0x1, b"sent before the 101"), (0x2, b"\x00\x01")]
    client.send(0x8, close_payload(1000, ""))
    await within(client.closed, 5)


@pytest_twisted.ensureDeferred
async def test_default_server_and_proxy_port_routes(hubtwist):
    ht = await hubtwist(default_server="ws", servers={"ws": {"command": APP}})
    await running(ht)
    port = ht.keepers["ws"].address.port

    def client():
        results = []
        for url in (f"{ht.ws}/echo", f"{ht.ws}/proxy/{port}/echo"):
            with ws_connect(url) as ws:
                ws.send(url)
                results.append(ws.recv(timeout=10))
        return results

    assert await in_thread(client) == [f"{ht.ws}/echo", f"{ht.ws}/proxy/{port}/echo"]


@pytest_twisted.ensureDeferred
async def test_silent_app_is_504_and_a_client_leaving_early_is_let_go(hubtwist):
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.protocol import Factory

    connections = []

    class Silent(Protocol):
        def connectionMade(self):
            connections.append(self)

    listener = await TCP4ServerEndpoint(reactor(), 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Silent))
    try:
        ht = await hubtwist(servers={"mute": {"port": listener.getHost().port,
                                              "request_timeout": 0.5}})
        started = reactor().seconds()
        client = await raw_client(ht, "/mute/")
        assert client.head.startswith(b"HTTP/1.1 504 ")
        assert reactor().seconds() - started < 3
        leaving = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", ht.port), leaving)
        leaving.transport.write(leaving.handshake("/mute/", "x"))
        await poll(lambda: len(connections) == 2, 5, message="the second connection")
        leaving.transport.abortConnection()
        await poll(lambda: connections[1].transport.disconnected, 5,
                   message="hubtwist to drop the app connection")
        assert not ht.bridge.sessions
    finally:
        for connection in connections:
            connection.transport.abortConnection()
        await listener.stopListening()


def _self_signed(directory) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")  # Twisted's ssl:
@pytest_twisted.ensureDeferred
async def test_tls_listener_bridges_on_twisted_transports(hubtwist, tmp_path):
    import ssl

    key, cert = _self_signed(tmp_path)
    ht = await hubtwist(listen=[f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
                        servers={"ws": {"command": APP}})
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    payload = os.urandom(3 * MiB)
    ends = []

    def client():
        with ws_connect(f"wss://127.0.0.1:{ht.port}/ws/echo", ssl=context,
                        subprotocols=["chat"]) as ws:
            ends.extend(type(s.client_end).__name__ for s in list(ht.bridge.sessions))
            ws.send(payload)
            echoed = ws.recv(timeout=30)
            ws.close(4001, "over tls")
            return ws.subprotocol, echoed, ws.protocol.close_rcvd

    subprotocol, echoed, closed = await in_thread(client)
    assert subprotocol == "chat" and echoed == payload
    assert (closed.code, closed.reason) == (4001, "over tls")
    assert ends == ["TransportEnd"]
    await poll(lambda: not ht.bridge.sessions, 5, message="the session to end")


@pytest_twisted.ensureDeferred
async def test_unreachable_app_is_502(hubtwist):
    ht = await hubtwist(servers={})

    def client(closed_port):
        with pytest.raises(InvalidStatus) as refused:
            with ws_connect(f"{ht.ws}/proxy/{closed_port}/echo"):
                pass
        return refused.value.response.status_code

    with socket.socket() as probe:
        # bound, never listening: connections are refused, and no other test can take it
        probe.bind(("127.0.0.1", 0))
        assert await in_thread(client, probe.getsockname()[1]) == 502
    await poll(lambda: not ht.bridge.sessions, 5, message="the session to end")


@pytest_twisted.ensureDeferred
async def test_repeated_handshake_headers_all_reach_the_app(hubtwist):
    ht = await hubtwist(servers={"ws": {"command": APP}})
    await running(ht)

    def client() -> dict:
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.create_connection(("127.0.0.1", ht.port), timeout=20) as sock:
            sock.sendall((f"GET /ws/info HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          f"Sec-WebSocket-Key: {key}\r\nX-Multi: one\r\nX-Multi: two\r\n"
                          "Sec-WebSocket-Protocol: other\r\nSec-WebSocket-Protocol: chat\r\n"
                          "\r\n").encode())
            received = b""
            while True:  # the 101, then the app's first message (JSON, one text frame)
                received += sock.recv(65536) or pytest.fail(f"closed: {received!r}")
                head, _, frames = received.partition(b"\r\n\r\n")
                if len(frames) >= 4:
                    length, offset = frames[1] & 0x7F, 2
                    if length == 126:
                        length, offset = struct.unpack("!H", frames[2:4])[0], 4
                    if len(frames) >= offset + length:
                        assert head.startswith(b"HTTP/1.1 101 ")
                        return json.loads(frames[offset:offset + length])

    info = await in_thread(client)
    assert info["headers"]["x-multi"] == ["one", "two"]
    assert info["headers"]["sec-websocket-protocol"] == ["other", "chat"]
    assert info["subprotocol"] == "chat"


# -- shutdown ------------------------------------------------------------------------------
# (tests/integration/test_websocket_shutdown.py stops a hubtwist process with SIGTERM)

@pytest.mark.parametrize("pump", [True, False], ids=["pump", "transports"])
@pytest_twisted.ensureDeferred
async def test_close_all_says_going_away_to_clients_and_apps(hubtwist, pump, complaints):
    import threading

    ht = await hubtwist(pump=pump, servers={
        "ws": {"command": APP},
        "raw": {"command": [*WSAPP, "--raw", "--port", "{port}"], "raw_socket_proxy": True}})
    await running(ht)
    await running(ht, "raw")
    ready = threading.Event()

    def client():
        with ws_connect(f"{ht.ws}/ws/echo") as spliced, ws_connect(f"{ht.ws}/raw/") as raw:
            spliced.send("hi")
            assert spliced.recv(timeout=10) == "hi"
            assert raw.recv(timeout=10) == b"RFB 003.008\n"
            ready.set()
            closes = []
            for ws in (spliced, raw):
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        ws.recv(timeout=10)
                closes.append(closed.value.rcvd)
            return closes

    closes = in_thread(client)
    await poll(ready.is_set, 30, message="both WebSockets open")
    started = reactor().seconds()
    await within(ht.bridge.close_all(), 5)
    assert reactor().seconds() - started < 1.5, "the close handshakes did not end the sessions"
    assert not ht.bridge.sessions
    spliced, raw = await closes
    assert (spliced.code, spliced.reason) == (1001, "hubtwist is stopping")
    assert (raw.code, raw.reason) == (1001, "hubtwist is stopping")
    port = ht.keepers["ws"].address.port  # asked directly: hubtwist now refuses handshakes

    def app_last_close():
        with ws_connect(f"ws://127.0.0.1:{port}/last-close") as ws:
            return json.loads(ws.recv(timeout=10))

    seen = await in_thread(app_last_close)
    assert (seen["code"], seen["reason"]) == (1001, "hubtwist is stopping")

    def refused():
        with pytest.raises(InvalidStatus) as answer:
            ws_connect(f"{ht.ws}/ws/echo")
        return answer.value.response.status_code

    assert await in_thread(refused) == 503
    assert complaints == []


@pytest_twisted.ensureDeferred
async def test_close_all_waits_for_a_frame_boundary_and_drops_the_silent(hubtwist):
    ht = await hubtwist(servers={"ws": {"command": APP}})
    await running(ht)
    client = await raw_client(ht, "/ws/echo")
    (session,) = ht.bridge.sessions
    # Half a message to the app: hubtwist's close to the app must wait for its end.
    client.transport.write(client_frame(0x1, b"x" * 1000)[:500])
    await poll(lambda: session.up.remaining, 5, message="the half frame to pass")
    started = reactor().seconds()
    closing = within(ht.bridge.close_all(timeout=0.5), 5)
    assert session.up.pending, "a close frame went to the app in the middle of a frame"
    await closing  # the client does not answer, the app did not hear: dropped on time
    took = reactor().seconds() - started
    assert 0.5 <= took < 1.5, took
    assert client.frames[-1][0] == 0x8
    assert parse_close(client.frames[-1][1]) == (1001, "hubtwist is stopping")
    await within(client.closed, 5)
    await poll(lambda: not ht.bridge.sessions, 5, message="the session to end")
