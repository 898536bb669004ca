"""
Moving bytes between two sockets fast: the byte layer under the WebSocket bridge.

A bridged WebSocket has two ends, the client's connection and the app's. Each end is
either

  - a L{PumpEnd}: the socket is taken out of Twisted's hands and driven by the
    L{SocketPump}, one inner epoll set for all bridged sockets, registered with the
    reactor as a single reader. A read is handed straight to the frame reader, which
    writes straight to the other socket: one C{recv} and one C{send} per relayed chunk,
    and none of the per-event machinery of the reactor and of L{tcp.Connection}.
    Measured on 64-byte messages: about half the CPU time per message of the same relay
    on Twisted transports (see docs/architecture.md, "WebSockets"); or
  - a L{TransportEnd}: the Twisted transport as it is (a TLS connection, or any transport
    that is not a plain socket), written with L{direct_writer}.

Both offer the same small interface to the session: C{write}, C{couple} (backpressure
between the two ends), C{lose} (close after what is queued is sent), C{abort}, and
C{buffered}. Either way the end of a connection is reported the usual way, by the
transport's C{connectionLost} calling its protocol's: a L{PumpEnd} hands its socket back
to the transport to be closed.

Backpressure: a L{PumpEnd} that cannot send everything at once keeps the rest and stops
reading from the other end until it is sent, so at most one read (L{READ_SIZE}) plus the
odd control frame is held per direction. L{TransportEnd}s register each other's
transports as producers, as Twisted's port forwarder does (through L{_Valve}).

Private Twisted attributes used
===============================

A transport's write buffers, through L{hubtwist.proxy.twisted_private}: L{direct_writer}
sends at once only when they are empty, a socket is only given to the pump when nothing is
waiting in them (L{nothing_queued}), and L{TransportEnd.buffered} is their size
(L{queued_bytes}). Everything else is public: C{getHandle}, C{stopReading},
C{stopWriting}, C{connectionLost} of L{twisted.internet.tcp.Connection}, and
C{IReactorFDSet.addReader}. When the members are missing, both fall back (to
C{transport.write}, to L{TransportEnd}s): a change in Twisted costs speed, not correctness.
C{tests/integration/test_twisted_private.py} fails when the fast paths are no longer taken.
"""

from __future__ import annotations

import select
import socket
from typing import Callable

from twisted.internet import tcp
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hubtwist.proxy.twisted_private import direct_writer, nothing_queued, queued_bytes

__all__ = ["PumpEnd", "SocketPump", "TransportEnd", "pumpable"]

log = Logger(namespace="hubtwist.proxy.websocket")

READ_SIZE = 128 * 1024
_ROUNDS = 4  # polls per wakeup: replies that arrive meanwhile skip a reactor iteration
HAVE_EPOLL = hasattr(select, "epoll")  # Linux; elsewhere every end is a TransportEnd
_IN = getattr(select, "EPOLLIN", 0x001)
_OUT = getattr(select, "EPOLLOUT", 0x004)
_TROUBLE = getattr(select, "EPOLLHUP", 0x010) | getattr(select, "EPOLLERR", 0x008)
_READ_EVENTS = _IN | getattr(select, "EPOLLRDHUP", 0x2000) | _TROUBLE


def pumpable(transport) -> bool:
    """Whether C{transport} is a plain socket connection with nothing waiting to be sent."""
    return (HAVE_EPOLL and isinstance(transport, tcp.Connection) and nothing_queued(transport)
            and transport.connected and not transport.disconnecting
            and getattr(transport, "socket", None) is not None)


# -- Twisted transports --------------------------------------------------------------------

# Closing an end: from the moment the bridge decides to close it, what its peer still sends
# is read and dropped (a peer blocked sending a message we refused must get to read our close
# frame: websockets' sync client, for one, cannot read while a send is blocked). Closing a
# socket with unread data makes the kernel send a reset, which can destroy what we sent last.
# After our FIN, the peer has LINGER_SECONDS to close too; what is queued for a peer that
# does not read is given CLOSING_TIMEOUT_SECONDS before the connection is dropped.
LINGER_SECONDS = 2.0
CLOSING_TIMEOUT_SECONDS = 30.0


@implementer(IPushProducer)
class _Valve:
    """
    A transport as the producer of the other: pausing it stops reading from it. Unlike
    registering the transport itself, C{stopProducing} (called when the consumer's
    connection is lost) does not close it: the session decides how the other side ends.
    """

    __slots__ = ("transport",)

    def __init__(self, transport) -> None:
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class TransportEnd:
    """One end of a bridge on its Twisted transport (reads arrive in its protocol)."""

    def __init__(self, transport) -> None:
        self.transport = transport
        self.write = direct_writer(transport)

    def start(self, on_data: Callable[[bytes], None]) -> None:
        """Reads already go to the protocol's C{dataReceived}, set by the session."""

    def couple(self, other: "TransportEnd") -> None:
        """Each end's transport pauses reading from the other while its buffer is full."""
        self.transport.registerProducer(_Valve(other.transport), True)
        other.transport.registerProducer(_Valve(self.transport), True)

    def peer_gone(self) -> None:
        """The other end is closed: stop using it as a producer."""
        self.transport.unregisterProducer()

    def lose(self) -> None:
        """
        Half-close once what is buffered is sent, reading (the session drops it) meanwhile;
        see L{LINGER_SECONDS}. Twisted does not say when its FIN went out, so the deadline
        counts from now: L{CLOSING_TIMEOUT_SECONDS} while something is still buffered.
        """
        transport = self.transport
        if isinstance(transport, tcp.Connection):
            deadline = CLOSING_TIMEOUT_SECONDS if self.buffered else LINGER_SECONDS
            transport.loseWriteConnection()
            transport.resumeProducing()  # the other end's buffer may have paused it
            transport.reactor.callLater(deadline, _abort_if_open, transport)
        else:
            transport.loseConnection()

    def abort(self) -> None:
        self.transport.abortConnection()

    @property
    def buffered(self) -> int:
        """Bytes waiting to be sent (0 when unknown)."""
        return queued_bytes(self.transport)


def _abort_if_open(transport) -> None:
    if transport.connected:
        transport.abortConnection()


# -- the pump ------------------------------------------------------------------------------

@implementer(IReadDescriptor)
class SocketPump:
    """
    The inner epoll set of every L{PumpEnd}, read by the reactor as one file descriptor
    (an epoll set is readable when one of its members has an event).
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.epoll: select.epoll | None = None
        self.ends: dict[int, PumpEnd] = {}

    def attach(self, transport) -> "PumpEnd":
        """Take C{transport}'s socket away from the reactor (see L{pumpable})."""
        if self.epoll is None:
            self.epoll = select.epoll()
            self.reactor.addReader(self)
        return PumpEnd(self, transport)

    def _detached(self, end: "PumpEnd") -> None:
        if self.ends.get(end.fd) is end:
            del self.ends[end.fd]
        if not self.ends and self.epoll is not None:
            self.reactor.removeReader(self)
            self.epoll.close()
            self.epoll = None

    # -- IReadDescriptor -------------------------------------------------------------------

    def fileno(self) -> int:
        return self.epoll.fileno() if self.epoll is not None else -1

    def logPrefix(self) -> str:
        return "hubtwist-ws"

    def doRead(self) -> None:
        epoll = self.epoll
        if epoll is None:
            return
        ends = self.ends
        for _ in range(_ROUNDS):
            ready = epoll.poll(0)
            if not ready:
                return
            for fd, events in ready:
                end = ends.get(fd)
                if end is None:
                    continue
                try:
                    if events & _OUT or (events & _TROUBLE and not end.reading):
                        end._flush()  # (on trouble, the send fails and closes it)
                    if events & _READ_EVENTS and end.reading:
                        end._read()
                except Exception:
                    log.failure("Error while relaying a WebSocket; closing it")
                    end._fatal()
            if self.epoll is not epoll:
                return  # every end closed

    def connectionLost(self, reason) -> None:
        # Only if doRead itself failed; drop everything rather than spin.
        for end in list(self.ends.values()):
            end._fatal()


class PumpEnd:
    """One end of a bridge whose socket the L{SocketPump} drives."""

    def __init__(self, pump: SocketPump, transport) -> None:
        self.pump = pump
        self.transport = transport
        transport.stopReading()
        transport.stopWriting()
        self.sock = transport.getHandle()
        self.fd = self.sock.fileno()
        self.on_data: Callable[[bytes], None] | None = None
        self.peer: PumpEnd | None = None
        self.pending: list[bytes] = []
        self.reading = False
        self.closing = False  # lose(): reading and dropping, FIN once everything is sent
        self.fin_sent = False
        self.closed = False
        self.mask = 0
        self.close_call = None
        pump.ends[self.fd] = self

    def start(self, on_data: Callable[[bytes], None]) -> None:
        """Deliver what arrives to C{on_data} from now on."""
        self.on_data = on_data
        self.reading = True
        self._update()

    def couple(self, other: "PumpEnd") -> None:
        """While one end cannot send, reading from the other pauses."""
        self.peer = other
        other.peer = self

    def peer_gone(self) -> None:
        """The other end is closed: nothing to hold back for it any more."""
        self.peer = None

    @property
    def buffered(self) -> int:
        """Bytes waiting to be sent."""
        return sum(map(len, self.pending))

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send C{data} now, or queue what the kernel does not take."""
        if self.closed or not data:
            return
        if self.pending:
            self.pending.append(data)
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # Broken: keep it queued; the next flush (from the pump, not from inside this
            # caller) finds the error and closes the connection.
            sent = 0
        if sent == len(data):
            return
        self.pending.append(data[sent:] if sent else data)
        self._update()
        peer = self.peer
        if peer is not None and peer.reading and not peer.closing:
            peer.reading = False
            peer._update()

    def _flush(self) -> None:
        pending = self.pending
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                return
            except OSError as error:
                self._lost(ConnectionLost(str(error)))
                return
            if sent < len(data):
                self.pending = [data[sent:]]
                return
            self.pending = []
        if self.closing:
            self._send_fin()
            return
        self._update()
        peer = self.peer
        if peer is not None and not peer.reading and not peer.closing and not peer.closed:
            peer.reading = True
            peer._update()

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            self._lost(ConnectionLost(str(error)))
            return
        if not data:
            self._lost(ConnectionDone())
            return
        if not self.closing:
            self.on_data(data)

    # -- closing ---------------------------------------------------------------------------

    def lose(self) -> None:
        """
        Close with a FIN once everything queued is sent, reading and dropping what the peer
        still sends meanwhile and after (see L{LINGER_SECONDS}).
        """
        if self.closed or self.closing:
            return
        self.closing = True
        self.reading = True
        reactor = self.pump.reactor
        self.close_call = reactor.callLater(CLOSING_TIMEOUT_SECONDS, self._close, ConnectionDone())
        if self.pending:
            self._update()
        else:
            reactor.callLater(0, self._send_fin)  # not from inside the caller's callback

    def _send_fin(self) -> None:
        """Everything is sent: our FIN, then L{LINGER_SECONDS} for the peer to close too."""
        if self.closed or self.fin_sent:
            return
        self.fin_sent = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(ConnectionDone())
            return
        if self.close_call is not None and self.close_call.active():
            self.close_call.cancel()
        self.close_call = self.pump.reactor.callLater(LINGER_SECONDS, self._close, ConnectionDone())
        self._update()

    def abort(self) -> None:
        """Close now (a reset), dropping what is queued."""
        if self.closed:
            return
        self.closing = True
        self.reading = False
        self.pending = []
        if self.close_call is not None and self.close_call.active():
            self.close_call.cancel()
        self.close_call = self.pump.reactor.callLater(0, self._close, ConnectionAborted())

    def _fatal(self) -> None:
        if not self.closed:
            self._close(ConnectionAborted())
        peer = self.peer
        if peer is not None and not peer.closed:
            peer._close(ConnectionAborted())

    def _lost(self, why: Exception) -> None:
        """The connection broke or the other side closed it."""
        self._close(why)

    def _close(self, why: Exception) -> None:
        if self.closed:
            return
        self.closed = True
        self.reading = False
        self.pending = []
        if self.close_call is not None and self.close_call.active():
            self.close_call.cancel()
        self.close_call = None
        if self.mask:
            try:
                self.pump.epoll.unregister(self.fd)
            except (OSError, ValueError, AttributeError):
                pass
            self.mask = 0
        self.pump._detached(self)
        peer = self.peer
        if peer is not None:
            peer.peer = None
            if not peer.reading and not peer.closing and not peer.closed:
                peer.reading = True
                peer._update()
        self.peer = None
        # The transport closes the socket and tells its protocol (the session).
        self.transport.connectionLost(Failure(why))

    def _update(self) -> None:
        if self.closed:
            return
        mask = (_IN if self.reading else 0) | (_OUT if self.pending else 0)
        if mask == self.mask:
            return
        epoll = self.pump.epoll
        if self.mask == 0:
            epoll.register(self.fd, mask)
        elif mask == 0:
            epoll.unregister(self.fd)
        else:
            epoll.modify(self.fd, mask)
        self.mask = mask
