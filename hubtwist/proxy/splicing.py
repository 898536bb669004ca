"""
Moving a large response body from the app's socket to the client's without copying it
through Python: splice(2), app socket -> pipe -> client socket, in the kernel.

Relaying a download through Python costs two copies per byte (recv into a new bytes
object, send out of it) plus the objects' allocation; with splice the pages move between
the sockets and a pipe. L{BodySplice} drives one such move of a known number of bytes: it
takes both sockets away from their Twisted transports' reading and writing for the time of
the move (the transports stay the sockets' owners, as in L{hubtwist.proxy.rawsocket}),
registers its own reader (the app's socket) and writer (the client's) with the reactor, and
gives everything back when the body has passed, the app's socket broke, or the client's.

Backpressure is the pipe: when it is full, reading from the app stops until the client has
taken some of it.

Used by the lean path (L{hubtwist.proxy.lean}) through
L{hubtwist.proxy.upstream.UpstreamResponse.splice_to}, only on Linux with C{os.splice},
for plain sockets, for bodies of a known length of at least L{SPLICE_MIN} bytes.
"""

from __future__ import annotations

import fcntl
import os
import sys
from typing import Callable

from twisted.internet import tcp
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from hubtwist.proxy.twisted_private import nothing_queued

__all__ = ["BodySplice", "ClientGone", "SourceBroken", "SPLICE_MIN", "spliceable"]

SPLICE_MIN = 1 << 20  # smaller bodies: the ordinary relay is as cheap
PIPE_SIZE = 1 << 20
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
HAVE_SPLICE = sys.platform.startswith("linux") and hasattr(os, "splice")


class SourceBroken(Exception):
    """The app's connection ended or failed before the whole body had passed."""


class ClientGone(Exception):
    """The client's connection failed while the body was passing."""


def spliceable(transport) -> bool:
    """A plain socket transport with nothing waiting in Twisted's write buffer (private
    members: when they are missing, nothing is spliceable)."""
    return (HAVE_SPLICE and isinstance(transport, tcp.Connection) and transport.connected
            and not transport.disconnecting and nothing_queued(transport))


@implementer(IReadDescriptor, IWriteDescriptor)
class _Socket:
    """One side's socket as the reactor sees it during a splice. A hang-up or error
    without data to read is reported by the reactor as C{connectionLost}, not as an
    event: C{lost} is called then."""

    def __init__(self, fd: int, ready: Callable[[], None], lost: Callable[[], None]) -> None:
        self._fd, self._ready, self._lost = fd, ready, lost

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        self._ready()

    def doWrite(self) -> None:
        self._ready()

    def logPrefix(self) -> str:
        return "hubtwist-splice"

    def connectionLost(self, reason) -> None:
        self._lost()


class BodySplice:
    """
    Move C{length} bytes from C{source}'s socket to C{sink}'s (both plain socket
    transports, L{spliceable}), then call C{done(None)}, or C{done(failure)} with a
    L{SourceBroken} or L{ClientGone}. Both transports read again afterwards (unless they
    are closed); what to do with them on failure is the caller's choice.
    """

    def __init__(self, reactor, source, sink, length: int,
                 done: Callable[[Failure | None], None], stall_timeout: float = 0) -> None:
        """
        @param stall_timeout: when more than 0, a client that takes nothing for this many
            seconds while the pipe holds data ends the move with L{ClientGone}.
        """
        self._reactor = reactor
        self._stall_timeout = stall_timeout
        self._stall_call = None
        self._sent = 0
        self._sent_at_check = 0
        self._source = source
        self._sink = sink
        self._remaining = length
        self._done = done
        self._in_pipe = 0
        self._capacity = PIPE_SIZE
        self._pipe: tuple[int, int] | None = None
        self._reader = _Socket(source.fileno(), self._readable, self._source_lost)
        self._writer = _Socket(sink.fileno(), self._writable, self._sink_lost)
        self._reading = self._writing = False
        self._finished = False

    def start(self) -> None:
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # above fs.pipe-max-size: the default still works, in smaller steps
        self._capacity = fcntl.fcntl(write_end, _F_GETPIPE_SZ)
        self._pipe = (read_end, write_end)
        self._source.stopReading()
        self._sink.stopReading()
        if self._stall_timeout > 0:
            self._stall_call = self._reactor.callLater(self._stall_timeout, self._check_stall)
        self._read_more()

    def stop(self) -> None:
        """Give both sockets back now, without calling C{done} (the caller is closing)."""
        self._finish(None, notify=False)

    # -- moving ----------------------------------------------------------------------------

    def _read_more(self) -> None:
        if not self._reading:
            self._reading = True
            self._reactor.addReader(self._reader)

    def _readable(self) -> None:
        room = self._capacity - self._in_pipe
        try:
            moved = os.splice(self._source.fileno(), self._pipe[1], min(self._remaining, room),
                              flags=_FLAGS)
        except BlockingIOError:
            if self._in_pipe:  # the pipe is full after all: wait for the client, not spin
                self._reading = False
                self._reactor.removeReader(self._reader)
                self._drain()
            return
        except OSError as error:
            self._finish(Failure(SourceBroken(f"the app's connection failed: {error}")))
            return
        if moved == 0:
            self._finish(Failure(SourceBroken("the app closed the connection mid-response")))
            return
        self._in_pipe += moved
        self._remaining -= moved
        self._drain()

    def _writable(self) -> None:
        self._drain()

    def _source_lost(self) -> None:
        self._reading = False  # the reactor has let go of it
        self._finish(Failure(SourceBroken("the app's connection ended mid-response")))

    def _sink_lost(self) -> None:
        self._writing = False
        self._finish(Failure(ClientGone("the client's connection ended")))

    def _drain(self) -> None:
        while self._in_pipe:
            try:
                moved = os.splice(self._pipe[0], self._sink.fileno(), self._in_pipe,
                                  flags=_FLAGS)
            except BlockingIOError:
                break
            except OSError as error:
                self._finish(Failure(ClientGone(f"the client's connection failed: {error}")))
                return
            self._in_pipe -= moved
            self._sent += moved
        if self._in_pipe:
            if not self._writing:
                self._writing = True
                self._reactor.addWriter(self._writer)
            if self._in_pipe >= self._capacity and self._reading:  # full: wait for the client
                self._reading = False
                self._reactor.removeReader(self._reader)
            return
        if self._writing:
            self._writing = False
            self._reactor.removeWriter(self._writer)
        if not self._remaining:
            self._finish(None)
        else:
            self._read_more()

    def _check_stall(self) -> None:
        """Every C{stall_timeout}: the client must have taken something meanwhile, unless
        nothing was waiting for it (the app is the slow one)."""
        self._stall_call = None
        if self._finished:
            return
        if self._writing and self._sent == self._sent_at_check:
            self._finish(Failure(ClientGone(
                f"the client took nothing for {self._stall_timeout:g} s")))
            return
        self._sent_at_check = self._sent
        self._stall_call = self._reactor.callLater(self._stall_timeout, self._check_stall)

    def _finish(self, failure: Failure | None, notify: bool = True) -> None:
        if self._finished:
            return
        self._finished = True
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()
        self._stall_call = None
        if self._reading:
            self._reactor.removeReader(self._reader)
        if self._writing:
            self._reactor.removeWriter(self._writer)
        self._reading = self._writing = False
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        for transport in (self._source, self._sink):
            if transport.connected and not transport.disconnecting:
                transport.startReading()
        if notify:
            self._done(failure)
