"""
The traffic of C{bench/soak}: asyncio load generators (a small HTTP/1.1 client of our own,
the C{websockets} client) that talk to one hubtwist on 127.0.0.1 and check every answer,
and the bookkeeping that sorts failures into "injected" and "other".

Every operation is bounded (L{OP_TIMEOUT}), every connection is closed in a C{finally}
(L{Traffic.open_connections} says how many are open, so a leak in the harness shows), and
every worker stops starting operations at its phase's deadline.

Which failures are injected (L{is_injected}): a failure is injected when

  1. it is of a kind a dying app causes: an HTTP 502, 503 or 504 answer (also to a
     WebSocket handshake), a connection hubtwist reset or closed before the answer was
     complete (no response head, a truncated body, an SSE stream cut short), or a
     WebSocket that ended with close code 1006 or 1011; and
  2. the operation went to the app that was killed, and the time it ran, from sending the
     request to seeing the failure, overlaps C{[k, k + window]}, where C{k} is the moment
     the harness sent SIGKILL to that app and C{window} is L{INJECT_WINDOW} (5 s).

Everything else is an "other" error: wrong content, any other status, a timeout, a refused
connection to hubtwist itself, a failure to an app that was not killed, or an injected kind
of failure outside the window (the app is back within ~1 s; the report shows how long each
restart took).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from harness.common import LOOPBACK

INJECT_WINDOW = 5.0  # seconds after a kill during which a dying app's failures are expected
OP_TIMEOUT = 30.0  # no single operation may take longer; a timeout is never injected
INJECTED_STATUSES = (502, 503, 504)
INJECTED_WS_CODES = (1006, 1011)
BLOCK = 65536  # httpapp's /bytes pattern: 64 KiB block i is the 4-byte big-endian i, repeated
MAX_TRANSFER = 4 << 20  # largest upload or download, 4 MiB


def byte_pattern(size: int) -> bytes:
    """What tests/apps/httpapp.py's /bytes/SIZE sends (the same as tests.helpers.byte_pattern,
    which the harness does not import: it would pull in Twisted)."""
    blocks = (size + BLOCK - 1) // BLOCK
    return b"".join(index.to_bytes(4, "big") * (BLOCK // 4) for index in range(blocks))[:size]


# --- outcomes ------------------------------------------------------------------------------

@dataclass
class Kill:
    """One SIGKILL the harness sent to an app, and how long hubtwist took to bring it back."""

    app: str
    at: float  # time.monotonic() when the signal was sent
    pid: int
    restart_seconds: float | None = None  # until the API showed it RUNNING with a new pid
    new_pid: int | None = None


@dataclass
class Failure:
    """One failed operation."""

    kind: str  # the traffic kind: keepalive, newconn, upload, download, sse, ws, ...
    app: str  # the server name the operation went to ("" for hubtwist itself)
    what: str  # e.g. "GET /web/bytes/1024"
    error: str  # short category: "status 502", "truncated body", "bad content", ...
    detail: str
    started: float
    ended: float
    injectable: bool  # of a kind that killing the app causes (rule 1 above)


def is_injected(failure: Failure, kills: list[Kill], window: float = INJECT_WINDOW) -> bool:
    """The rule in the module docstring: an injectable kind of failure, to an app that was
    killed, while the operation's run overlaps C{[kill, kill + window]}. Pure."""
    return failure.injectable and any(
        kill.app == failure.app and failure.started <= kill.at + window
        and failure.ended >= kill.at
        for kill in kills
    )


class OpError(Exception):
    """An operation failed; C{error} is its category, C{injectable} per rule 1."""

    def __init__(self, error: str, detail: str = "", injectable: bool = False) -> None:
        super().__init__(f"{error}: {detail}" if detail else error)
        self.error = error
        self.detail = detail
        self.injectable = injectable


@dataclass
class KindTally:
    ok: int = 0
    failures: list[Failure] = field(default_factory=list)


@dataclass
class Traffic:
    """Where the load goes and what came of it."""

    port: int  # hubtwist's port on 127.0.0.1
    token: str | None = None  # standalone token gate: sent as Authorization: token ...
    tallies: dict[str, KindTally] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    open_connections: int = 0  # the harness's own: 0 between phases, or it leaks

    def auth_headers(self) -> list[tuple[str, str]]:
        return [("Authorization", f"token {self.token}")] if self.token else []

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def tally(self, kind: str) -> KindTally:
        return self.tallies.setdefault(kind, KindTally())

    def fail(self, failure: Failure) -> None:
        self.tally(failure.kind).failures.append(failure)

    async def op(self, kind: str, app: str, what: str,
                 operation: Callable[[], Awaitable[None]]) -> bool:
        """Run one operation, bounded by L{OP_TIMEOUT}; count it as ok or record why not."""
        started = time.monotonic()
        try:
            await asyncio.wait_for(operation(), OP_TIMEOUT)
        except OpError as error:
            failure = (error.error, error.detail, error.injectable)
        except TimeoutError:  # before OSError: TimeoutError is one
            failure = ("timeout", f"no outcome within {OP_TIMEOUT:g}s", False)
        except asyncio.IncompleteReadError as error:
            failure = ("truncated body", f"{len(error.partial)} bytes, then the end", True)
        except ConnectionError as error:
            failure = ("connection reset", type(error).__name__, True)
        except asyncio.CancelledError:  # the phase's hard stop: count it, then stop
            self.fail(Failure(kind, app, what, "cancelled", "still running at the hard stop",
                              started, time.monotonic(), False))
            raise
        except Exception as error:  # a harness bug: visible, and never injected
            failure = ("harness error", f"{type(error).__name__}: {error}", False)
        else:
            self.tally(kind).ok += 1
            return True
        self.fail(Failure(kind, app, what, *failure[:2], started, time.monotonic(), failure[2]))
        return False


# --- HTTP/1.1 client -------------------------------------------------------------------------

class Connection:
    """One HTTP/1.1 connection to hubtwist; keep-alive unless the answer says close."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reusable = False

    async def open(self) -> "Connection":
        try:
            self.reader, self.writer = await asyncio.open_connection(LOOPBACK, self.traffic.port)
        except OSError as error:  # hubtwist itself refuses: never injected
            raise OpError("cannot connect to hubtwist", str(error)) from None
        self.traffic.open_connections += 1
        self.reusable = True
        return self

    async def close(self) -> None:
        """Close (idempotent); an abort when the peer does not take the close in time."""
        writer, self.writer, self.reusable = self.writer, None, False
        if writer is None:
            return
        self.traffic.open_connections -= 1
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (OSError, TimeoutError):
            writer.transport.abort()

    async def request(self, method: str, path: str, body: bytes | memoryview = b"",
                      *, headers: list[tuple[str, str]] = ()) -> tuple[int, dict[str, str]]:
        """Send a request; return the answer's status and headers (lower-case names). The
        body is read with L{body}."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}:{self.traffic.port}",
                 *(f"{name}: {value}" for name, value in (*self.traffic.auth_headers(), *headers))]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        for start in range(0, len(body), 1 << 18):
            self.writer.write(body[start:start + (1 << 18)])
            await self.writer.drain()
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise OpError("closed before response", "no response head", injectable=True)
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise OpError("bad response", repr(status_line[:80]))
        answer: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n"):
            if not line:
                raise OpError("closed before response", "in the response head", injectable=True)
            name, _, value = line.decode("latin-1").partition(":")
            answer[name.strip().lower()] = value.strip()
        if answer.get("connection", "").lower() == "close":
            self.reusable = False
        return int(parts[1]), answer

    async def body(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        """The answer's body, piece by piece: by length, chunked, or until the end."""
        if "content-length" in headers:
            remaining = int(headers["content-length"])
            while remaining:
                piece = await self.reader.read(min(remaining, 1 << 18))
                if not piece:
                    raise OpError("truncated body", f"{remaining} bytes missing", injectable=True)
                remaining -= len(piece)
                yield piece
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await self.reader.readline()
                if not size_line:
                    raise OpError("truncated body", "in a chunk header", injectable=True)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield await self.reader.readexactly(size)
                await self.reader.readexactly(2)
        else:
            self.reusable = False
            while piece := await self.reader.read(1 << 18):
                yield piece

    async def read_all(self, headers: dict[str, str]) -> bytes:
        return b"".join([piece async for piece in self.body(headers)])


def expect(condition: bool, error: str, detail: str, injectable: bool = False) -> None:
    if not condition:
        raise OpError(error, detail, injectable)


def expect_status(status: int, wanted: int = 200) -> None:
    expect(status == wanted, f"status {status}", f"wanted {wanted}",
           injectable=status in INJECTED_STATUSES)


# --- the workers ----------------------------------------------------------------------------

@dataclass
class Plan:
    """What the workers send, prepared once: random upload bodies and their digests, the
    download pattern."""

    upload: bytes = field(default_factory=lambda: os.urandom(MAX_TRANSFER))
    pattern: bytes = field(default_factory=lambda: byte_pattern(MAX_TRANSFER))
    upload_sizes: tuple[int, ...] = (1 << 20, 2 << 20, 3 * (1 << 20) + 12345, MAX_TRANSFER)
    digests: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for size in self.upload_sizes:
            self.digests[size] = hashlib.sha256(self.upload[:size]).hexdigest()


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


async def _pause(seconds: float, deadline: float) -> None:
    await asyncio.sleep(max(0.0, min(seconds, _left(deadline))))


async def small_get(connection: Connection, app: str, number: int) -> None:
    """One small GET, its answer checked: the hello page, 1 KiB of pattern, or an echo."""
    choice = number % 3
    if choice == 0:
        status, headers = await connection.request("GET", f"/{app}/")
        body = await connection.read_all(headers)
        expect_status(status)
        expect(body == b"hello from httpapp", "bad content", repr(body[:60]))
    elif choice == 1:
        status, headers = await connection.request("GET", f"/{app}/bytes/1024")
        body = await connection.read_all(headers)
        expect_status(status)
        expect(body == byte_pattern(1024), "bad content", f"{len(body)} bytes, not the pattern")
    else:
        status, headers = await connection.request("GET", f"/{app}/echo?n={number}")
        body = await connection.read_all(headers)
        expect_status(status)
        answer = json.loads(body)
        expect(answer.get("path") == f"/echo?n={number}", "bad content",
               f"the app saw path {answer.get('path')!r}")


async def keepalive_worker(traffic: Traffic, app: str, deadline: float) -> None:
    """Small GETs one after another on one connection (a new one only after a failure or a
    close)."""
    connection = Connection(traffic)
    number = 0
    try:
        while _left(deadline) > 0:
            if not connection.reusable:
                await connection.close()
                if not await traffic.op("keepalive", app, "connect",
                                        lambda: connection.open()):
                    await _pause(1, deadline)
                    continue
            number += 1
            what = f"GET /{app}/ #{number} (keep-alive)"
            if not await traffic.op("keepalive", app, what,
                                    lambda: small_get(connection, app, number)):
                await connection.close()
            await _pause(0.02, deadline)
    finally:
        await connection.close()


async def newconn_worker(traffic: Traffic, app: str, deadline: float) -> None:
    """A new connection per GET, closed by us after the answer; every tenth is /slow."""
    number = 0
    while _left(deadline) > 0:
        number += 1
        slow = number % 10 == 0

        async def one() -> None:
            connection = Connection(traffic)
            try:
                await connection.open()
                if slow:
                    status, headers = await connection.request("GET", f"/{app}/slow?s=0.5")
                    body = await connection.read_all(headers)
                    expect_status(status)
                    expect(body == b"slow done", "bad content", repr(body[:60]))
                else:
                    await small_get(connection, app, number)
            finally:
                await connection.close()

        await traffic.op("newconn", app, f"GET /{app}/{'slow' if slow else ''} #{number}", one)
        await _pause(0.05, deadline)


async def upload_worker(traffic: Traffic, plan: Plan, app: str, deadline: float) -> None:
    """POSTs of 1-4 MiB to /echo on a keep-alive connection; the app's length and SHA-256
    of what it received must match."""
    connection = Connection(traffic)
    number = 0
    try:
        while _left(deadline) > 0:
            number += 1
            size = plan.upload_sizes[number % len(plan.upload_sizes)]

            async def one() -> None:
                if not connection.reusable:
                    await connection.close()
                    await connection.open()
                status, headers = await connection.request(
                    "POST", f"/{app}/echo", memoryview(plan.upload)[:size],
                    headers=[("Content-Type", "application/octet-stream")])
                body = await connection.read_all(headers)
                expect_status(status)
                answer = json.loads(body)
                expect(answer.get("body_length") == size
                       and answer.get("body_sha256") == plan.digests[size], "bad content",
                       f"the app got {answer.get('body_length')} bytes of {size}")
                traffic.count("bytes uploaded", size)

            if not await traffic.op("upload", app, f"POST /{app}/echo {size} B #{number}", one):
                await connection.close()
            await _pause(0.3, deadline)
    finally:
        await connection.close()


async def download_worker(traffic: Traffic, plan: Plan, app: str, deadline: float) -> None:
    """GETs of 1-4 MiB of /bytes on a keep-alive connection, checked against the pattern
    as they arrive; every eighth is dropped by us after 256 KiB (a client going away)."""
    connection = Connection(traffic)
    number = 0
    rng = random.Random(f"download-{app}")
    try:
        while _left(deadline) > 0:
            number += 1
            size = rng.randrange(1 << 20, MAX_TRANSFER + 1)
            abandon = number % 8 == 0

            async def one() -> None:
                if not connection.reusable:
                    await connection.close()
                    await connection.open()
                status, headers = await connection.request("GET", f"/{app}/bytes/{size}")
                if status != 200:
                    await connection.read_all(headers)
                expect_status(status)
                received = 0
                stream = connection.body(headers)
                try:
                    async for piece in stream:
                        expect(piece == plan.pattern[received:received + len(piece)],
                               "bad content", f"bytes {received}-{received + len(piece)} "
                               "differ from the pattern")
                        received += len(piece)
                        if abandon and received >= 1 << 18:
                            await connection.close()  # on purpose: mid-body
                            break
                    else:
                        expect(received == size, "bad content", f"{received} bytes of {size}")
                finally:
                    await stream.aclose()
                traffic.count("bytes downloaded", received)

            what = f"GET /{app}/bytes/{size} #{number}{' (dropped at 256 KiB)' if abandon else ''}"
            if not await traffic.op("download", app, what, one):
                await connection.close()
            await _pause(0.3, deadline)
    finally:
        await connection.close()


async def sse_worker(traffic: Traffic, app: str, deadline: float) -> None:
    """Server-sent events on a new connection each: mostly a long stream read for 1-4 s and
    then closed by us; every third a short one read to its end (exactly 5 events)."""
    number = 0
    rng = random.Random(f"sse-{app}")
    while _left(deadline) > 0:
        number += 1
        complete = number % 3 == 0
        count, interval = (5, 0.05) if complete else (1000, 0.1)
        listen = min(rng.uniform(1, 4), max(0.5, _left(deadline)))

        async def one() -> None:
            connection = Connection(traffic)
            try:
                await connection.open()
                status, headers = await connection.request(
                    "GET", f"/{app}/sse?n={count}&interval={interval}",
                    headers=[("Accept", "text/event-stream")])
                if status != 200:
                    await connection.read_all(headers)
                expect_status(status)
                expect(headers.get("content-type", "").startswith("text/event-stream"),
                       "bad content", f"content-type {headers.get('content-type')!r}")
                buffer, seen = b"", 0
                stop = time.monotonic() + listen
                stream = connection.body(headers)
                try:
                    while complete or time.monotonic() < stop:
                        try:
                            wait = None if complete else max(0.01, stop - time.monotonic())
                            piece = await asyncio.wait_for(anext(stream), wait)
                        except StopAsyncIteration:
                            break
                        except TimeoutError:
                            break  # listened long enough
                        buffer += piece
                        *events, buffer = buffer.split(b"\n\n")
                        for event in events:
                            expect(event == f"data: event {seen}".encode(), "bad content",
                                   f"event {seen} was {event[:40]!r}")
                            seen += 1
                finally:
                    await stream.aclose()
                if complete:
                    expect(seen == count and not buffer, "stream cut short",
                           f"{seen} of {count} events", injectable=True)
                traffic.count("SSE events", seen)
            finally:
                await connection.close()

        what = f"GET /{app}/sse n={count} #{number}{'' if complete else f' ({listen:.1f}s)'}"
        await traffic.op("sse", app, what, one)
        await _pause(0.2, deadline)


async def ws_worker(traffic: Traffic, app: str, deadline: float) -> None:
    """WebSocket sessions to /echo: 5-30 messages of 16 B to 256 KiB, text and binary, each
    echo checked, permessage-deflate on every other session; then a normal close."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import (ConnectionClosedError, ConnectionClosedOK,
                                       InvalidHandshake, InvalidStatus)

    rng = random.Random(f"ws-{app}")
    number = 0
    while _left(deadline) > 0:
        number += 1
        messages = rng.randrange(5, 31)
        compression = "deflate" if number % 2 else None

        async def one() -> None:
            try:
                async with connect(
                    f"ws://{LOOPBACK}:{traffic.port}/{app}/echo", proxy=None,
                    additional_headers=traffic.auth_headers(), compression=compression,
                    max_size=None, ping_interval=None, open_timeout=10, close_timeout=5,
                ) as ws:
                    traffic.open_connections += 1
                    try:
                        for index in range(messages):
                            if _left(deadline) <= 0:
                                break
                            size = rng.choice((16, 200, 4096, 65536, 262144))
                            message = (rng.randbytes(size) if index % 2
                                       else "x" * (size - 8) + f"{index:08d}")
                            await ws.send(message)
                            echo = await asyncio.wait_for(ws.recv(), 10)
                            expect(echo == message, "bad content",
                                   f"message {index} ({size} B) came back different")
                            traffic.count("WebSocket messages echoed")
                            await _pause(rng.uniform(0.02, 0.2), deadline)
                    finally:
                        traffic.open_connections -= 1
                close = ws.close_code
                expect(close == 1000, f"ws close {close}", "after our close",
                       injectable=close in INJECTED_WS_CODES)
            except InvalidStatus as error:
                status = error.response.status_code
                raise OpError(f"ws handshake status {status}", "",
                              injectable=status in INJECTED_STATUSES) from None
            except ConnectionClosedOK as error:
                raise OpError("ws closed by the other side", str(error)) from None
            except ConnectionClosedError as error:
                code = error.rcvd.code if error.rcvd else 1006
                raise OpError(f"ws close {code}", str(error),
                              injectable=code in INJECTED_WS_CODES) from None
            except ConnectionRefusedError as error:
                raise OpError("cannot connect to hubtwist", str(error)) from None
            except InvalidHandshake as error:  # e.g. the connection closed mid-handshake
                raise OpError("ws handshake failed", f"{type(error).__name__}: {error}",
                              injectable=True) from None

        await traffic.op("ws", app, f"WebSocket /{app}/echo {messages} messages "
                         f"{'deflate' if compression else 'plain'} #{number}", one)
        await _pause(0.1, deadline)


KINDS = ("keepalive", "newconn", "upload", "download", "sse", "ws")


def workers(traffic: Traffic, plan: Plan, http_apps: list[str], ws_apps: list[str],
            deadline: float, kinds: tuple[str, ...] = KINDS) -> list[Awaitable[None]]:
    """The load (of the given C{kinds}), as coroutines to run concurrently until
    C{deadline}: per HTTP app two keep-alive GET loops and one loop each of new-connection
    GETs, uploads, downloads and SSE streams; per WebSocket app two session loops."""
    load: list[Awaitable[None]] = []
    for app in http_apps:
        load += [
            *([keepalive_worker(traffic, app, deadline),
               keepalive_worker(traffic, app, deadline)] if "keepalive" in kinds else []),
            *([newconn_worker(traffic, app, deadline)] if "newconn" in kinds else []),
            *([upload_worker(traffic, plan, app, deadline)] if "upload" in kinds else []),
            *([download_worker(traffic, plan, app, deadline)] if "download" in kinds else []),
            *([sse_worker(traffic, app, deadline)] if "sse" in kinds else []),
        ]
    if "ws" in kinds:
        for app in ws_apps:
            load += [ws_worker(traffic, app, deadline), ws_worker(traffic, app, deadline)]
    return load


async def get_json(traffic: Traffic, path: str) -> dict:
    """GET one of hubtwist's own JSON pages (the API) on a connection of its own."""
    connection = Connection(traffic)
    try:
        await connection.open()
        status, headers = await connection.request("GET", path,
                                                    headers=[("Accept", "application/json")])
        body = await connection.read_all(headers)
    finally:
        await connection.close()
    expect(status == 200, f"status {status}", f"GET {path}: {body[:200]!r}")
    return json.loads(body)
