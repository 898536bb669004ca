"""
Readiness: is the app answering yet? Any HTTP response to C{ready_check_path} counts
(an app that answers 404 or 302 is up); for raw-socket apps an accepted connection does.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from hubtwist.supervise.addresses import BackendAddress

FIRST_PROBE_DELAY = 0.01
MAX_PROBE_DELAY = 0.5
CONNECT_TIMEOUT = 2.0


class _HTTPProbe(Protocol):
    """Sends one GET and fires C{answered} with True as soon as a status line starts."""

    def __init__(self, request: bytes, answered: Deferred) -> None:
        self._request = request
        self._answered = answered
        self._received = b""

    def connectionMade(self) -> None:
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        self._received += data
        if len(self._received) >= 5:
            self._settle(self._received.startswith(b"HTTP/"))
            self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        self._settle(False)

    def _settle(self, result: bool) -> None:
        if not self._answered.called:
            self._answered.callback(result)


def _quiet(factory: Factory) -> Factory:
    factory.noisy = False  # no "Starting factory" line for every probe
    return factory


async def probe_once(reactor, address: BackendAddress, path: str, response_timeout: float) -> bool:
    """
    One readiness probe: True when the app at C{address} answers C{GET path} with any HTTP
    response within C{response_timeout} seconds of accepting the connection.
    """
    host = address.describe() if address.kind == "tcp" else "localhost"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hubtwist-readiness\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    answered: Deferred = Deferred()
    try:
        protocol = await address.endpoint(reactor, timeout=CONNECT_TIMEOUT).connect(
            _quiet(Factory.forProtocol(lambda: _HTTPProbe(request, answered)))
        )
    except Exception:
        return False
    answered.addTimeout(response_timeout, reactor, onTimeoutCancel=lambda *_: False)
    try:
        return await answered
    finally:
        if protocol.transport is not None and protocol.transport.connected:
            protocol.transport.abortConnection()


async def accepts_connection(reactor, address: BackendAddress) -> bool:
    """True when something accepts a connection at C{address} (raw-socket apps)."""
    try:
        protocol = await address.endpoint(reactor, timeout=CONNECT_TIMEOUT).connect(
            _quiet(Factory.forProtocol(Protocol))
        )
    except Exception:
        return False
    protocol.transport.abortConnection()
    return True


async def wait_until_ready(
    reactor: IReactorTime, address: BackendAddress, path: str, timeout: float, *, raw: bool = False
) -> float:
    """
    Probe until the app answers, starting after 10 ms and doubling the pause up to 0.5 s.
    Returns the seconds it took; raises L{NotReady} after C{timeout} seconds. Cancel the
    Deferred wrapping this coroutine to stop early (the app died).
    """
    started = reactor.seconds()
    deadline = started + timeout
    delay = FIRST_PROBE_DELAY
    while True:
        remaining = deadline - reactor.seconds()
        if raw:
            ok = await accepts_connection(reactor, address)
        else:
            # An accepted connection may take a while to answer (an app compiling its first
            # page); give it all the remaining time rather than a fixed per-probe limit.
            ok = await probe_once(reactor, address, path, max(remaining, 0.05))
        now = reactor.seconds()
        if ok:
            return now - started
        if now + delay > deadline:
            raise NotReady(f"no answer at {address.describe()}{'' if raw else path} "
                           f"within {timeout:g} s")
        await deferLater(reactor, delay, lambda: None)
        delay = min(delay * 2, MAX_PROBE_DELAY)


class NotReady(Exception):
    """The app did not pass its readiness check in time."""


__all__ = ["NotReady", "accepts_connection", "probe_once", "wait_until_ready"]
