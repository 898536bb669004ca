"""
The private Twisted members hubtwist uses (hubtwist.proxy.twisted_private lists them, and
why): present in the installed Twisted, and the fast paths built on them still taken on real
sockets. If a test here fails after a Twisted upgrade, its message says what is gone and what
it costs; port hubtwist/proxy/twisted_private.py to the new Twisted.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

from hubtwist.proxy import twisted_private
from hubtwist.proxy.rawsocket import pumpable
from hubtwist.proxy.sending import direct_writer
from hubtwist.proxy.splicing import HAVE_SPLICE, spliceable
from tests.helpers import poll, reactor, within


def test_installed_twisted_has_every_private_member_hubtwist_uses():
    missing = twisted_private.missing_members()
    assert not missing, (
        "The installed Twisted lacks private members hubtwist relies on (see "
        "hubtwist/proxy/twisted_private.py):\n  - " + "\n  - ".join(missing))


class _Recorder(Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.count = 0
        self.lost: Deferred = Deferred()

    @property
    def received(self) -> bytes:
        return b"".join(self.chunks)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.count += len(data)

    def connectionLost(self, reason) -> None:
        self.lost.callback(reason.value)


@pytest.fixture
def connected():
    """A coroutine giving a connected pair of real loopback transports (client, server)."""
    cleanup = []

    async def connect():
        accepted: Deferred = Deferred()

        class Server(_Recorder):
            def connectionMade(self):
                accepted.callback(self)

        port = await TCP4ServerEndpoint(reactor(), 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Server))
        cleanup.append(port.stopListening)
        client = await within(connectProtocol(
            TCP4ClientEndpoint(reactor(), "127.0.0.1", port.getHost().port), _Recorder()), 10)
        server = await within(accepted, 10)
        cleanup.append(client.transport.abortConnection)
        cleanup.append(server.transport.abortConnection)
        return client, server

    yield connect
    for undo in reversed(cleanup):
        undo()


@pytest_twisted.ensureDeferred
async def test_the_fast_paths_are_taken_on_real_sockets(connected):
    """Direct sends, the WebSocket pump, splice(2) and the lean hand-over's protocol swap:
    if one of them is refused, hubtwist still works, but slower (or, for the swap, the
    lean path's hand-over fails)."""
    client, server = await connected()
    for transport in (client.transport, server.transport):
        assert twisted_private.nothing_queued(transport), "nothing_queued cannot read the buffers"
        assert twisted_private.queued_bytes(transport) == 0
        assert direct_writer(transport) != transport.write, "direct sends are no longer taken"
        assert pumpable(transport), "WebSocket sockets are no longer given to the pump"
        if HAVE_SPLICE:
            assert spliceable(transport), "large downloads no longer move with splice(2)"
        assert twisted_private.can_swap_protocol(transport), "protocols can no longer be swapped"

    # What is queued is seen: the server stops reading, the client writes more than the
    # kernel's buffers hold.
    server.transport.pauseProducing()
    client.transport.write(b"x" * (8 << 20))
    assert not twisted_private.nothing_queued(client.transport)
    queued = twisted_private.queued_bytes(client.transport)
    assert 0 < queued <= 8 << 20, queued
    server.transport.resumeProducing()
    await poll(lambda: twisted_private.nothing_queued(client.transport), 20,
               message="the client's buffers to drain")
    assert twisted_private.queued_bytes(client.transport) == 0
    await poll(lambda: server.count == 8 << 20, 20, message="everything to arrive")

    # A swapped protocol gets the data and the end of the connection.
    swapped = _Recorder()
    twisted_private.swap_protocol(server.transport, swapped)
    client.transport.write(b"to the new protocol")
    await poll(lambda: swapped.received == b"to the new protocol", 10, message="the data")
    client.transport.loseConnection()
    await within(swapped.lost, 10)


def test_guards_fall_back_instead_of_failing():
    """Objects without the members: the slow path, or a clear exception."""

    class Plain:
        def write(self, data):
            pass

    plain = Plain()
    assert not twisted_private.nothing_queued(plain)
    assert twisted_private.queued_bytes(plain) == 0
    assert direct_writer(plain) == plain.write
    assert not twisted_private.set_buffer_sizes(plain, 1 << 20)
    assert not twisted_private.can_swap_protocol(plain)
    with pytest.raises(twisted_private.ProtocolSwapUnavailable, match="cannot swap"):
        twisted_private.swap_protocol(plain, Protocol())
    with pytest.raises(twisted_private.TakeoverUnavailable, match="_protocolUpgradeForWebsockets"):
        twisted_private.upgrade_channel(plain, Protocol())
    assert not twisted_private.request_disconnected(type("Lean", (), {"channel": object()})())
    assert twisted_private.request_disconnected(type("Gone", (), {"channel": None})())
