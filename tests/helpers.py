"""Helpers for integration tests: bounded waits, the test app, process checks."""

from __future__ import annotations

import os
import pathlib
import socket
import sys

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater

APPS = pathlib.Path(__file__).parent / "apps"
HTTPAPP = [sys.executable, str(APPS / "httpapp.py")]


def reactor():
    from twisted.internet import reactor as the_reactor

    return the_reactor


def within(awaitable, seconds: float) -> Deferred:
    """C{awaitable} (a Deferred or coroutine) as a Deferred that fails after C{seconds}."""
    return ensureDeferred(awaitable).addTimeout(seconds, reactor())


def in_thread(function, *args, timeout: float = 60) -> Deferred:
    """Run a blocking client function in a thread, bounded by C{timeout} seconds."""
    from twisted.internet.threads import deferToThread

    return within(deferToThread(function, *args), timeout)


async def sleep(seconds: float) -> None:
    await deferLater(reactor(), seconds, lambda: None)


async def poll(condition, timeout: float, interval: float = 0.02, message: str = "condition"):
    """Wait until C{condition()} is truthy (returns its value); fail after C{timeout} s."""
    deadline = reactor().seconds() + timeout
    while True:
        value = condition()
        if value:
            return value
        if reactor().seconds() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await sleep(interval)


def alive(pid: int) -> bool:
    """True while C{pid} runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def processes_with(*markers: bytes) -> list[int]:
    """Live processes (a container's or a batch job's included: they are this host's too)
    whose environment holds every one of C{markers}."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                text = environ.read()
        except OSError:
            continue
        if all(marker in text for marker in markers) and alive(int(entry)):
            found.append(int(entry))
    return found


def descendants(pid: int) -> set[int]:
    """Every live process whose ancestry reaches C{pid}."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != b"Z":
                parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


# -- blocking helpers, for tests that drive hubtwist as a separate process -----------------

HUBTWIST = [sys.executable, "-m", "hubtwist"]


class HubtwistProcesses:
    """
    Starts hubtwist subprocesses for a test (C{processes(*args, env=...)}: output on a
    pipe, text) and stops every one still running at the end (L{stop_all}: SIGTERM, then
    SIGKILL after 20 s). Use it from a fixture.
    """

    def __init__(self, env=None) -> None:
        self.env = env
        self.started = []

    def __call__(self, *args, env=None):
        import subprocess

        process = subprocess.Popen([*HUBTWIST, *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, env=env or self.env)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        import signal
        import subprocess

        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
            if process.stdout:
                process.stdout.close()



def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:C{port} now."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, timeout: float, message: str, interval: float = 0.02):
    """Block until C{condition()} is truthy (returns it); fail after C{timeout} seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


wait_until = wait_for  # the name the e2e suites use


def http_get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    """(status, body) of a GET, also for error statuses."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def try_get(url: str, timeout: float = 5):
    """Like L{http_get}, or None while nothing answers."""
    try:
        return http_get(url, timeout)
    except OSError:
        return None


def byte_pattern(size: int) -> bytes:
    """What tests/apps/httpapp.py's /bytes/SIZE sends: 64 KiB block i is the 4-byte
    big-endian i, repeated (so a lost, doubled or reordered piece shows)."""
    blocks = (size + 65535) // 65536
    return b"".join(index.to_bytes(4, "big") * 16384 for index in range(blocks))[:size]
