"""
Every read or write of a private (or undocumented) Twisted member by the proxy, in one place.

hubtwist's fast paths need a few things Twisted does not offer publicly: whether a transport
has anything queued, swapping the protocol of a live connection, and taking a connection over
from twisted.web. Each function here is guarded: when the installed Twisted lacks a member,
it falls back to the slow but correct path (C{nothing_queued} says "not known to be empty",
C{direct_writer} is C{transport.write}, ...) or raises an exception that says what is
missing; never an AttributeError deep inside a relay. L{missing_members} lists what the
installed Twisted lacks; C{tests/integration/test_twisted_private.py} fails with that list,
and checks on real sockets that the fast paths are still taken.

Private members used, and why
=============================

L{twisted.internet.abstract.FileDescriptor} (every TCP and unix socket transport):

  - C{dataBuffer}, C{offset}, C{_tempDataLen}: the two write buffers (bytes being sent from
    C{offset} on, and the byte count of the list C{write} appends to). Read only:
    L{nothing_queued} (a direct send keeps order only when both are empty; a socket is only
    handed to the WebSocket pump or to splice(2) when nothing waits in them) and
    L{queued_bytes} (the WebSocket bridge's closing deadline and memory checks).
  - C{bufferSize}, C{SEND_LIMIT} (public names, undocumented): the buffer size before the
    producer is paused and the most sent per call; L{set_buffer_sizes} raises both for
    client connections (see L{hubtwist.proxy.sending.allow_bulk}).
  - C{writeSomeData} (undocumented): one C{send} now, used by L{direct_writer}.

L{twisted.internet.tcp.Connection}:

  - C{protocol}: reassigned by L{swap_protocol} when the lean path hands a connection to
    twisted.web's channel (L{hubtwist.proxy.lean}); Twisted looks it up on every read and
    at the connection's end, so the new protocol gets both.

L{twisted.web.http.HTTPChannel} (Twisted >= 25.5):

  - C{_protocolUpgradeForWebsockets(protocol)}: the hook Twisted's own
    C{twisted.web.websocket} uses to give the connection to another protocol;
  - C{_dataBuffer}: the bytes that arrived after a request head while the request was being
    processed. L{upgrade_channel} uses both for a WebSocket take-over.

L{twisted.protocols.basic.LineReceiver} (what C{HTTPChannel} parses request heads with):

  - C{_buffer}: the unparsed rest of what was read; while a request head is being read, an
    LF in it is a bare one (L{unparsed_line}: a 400 at once instead of waiting for a CRLF
    that never comes);
  - C{_busyReceiving}: whether a read is being parsed (L{busy_receiving}): a reentrant
    C{dataReceived} (from C{requestDone} inside a read) only buffers.

L{twisted.web.http.Request}:

  - C{_disconnected}: whether the client is gone (L{request_disconnected}, for error pages).
  - C{addCookie} (public) called on another object: it formats the C{Set-Cookie} value and
    appends it to C{self.cookies}, nothing else. L{set_cookie_value} borrows it so that a
    cookie the lean path sets (L{hubtwist.proxy.lean.LeanRequest.addCookie}) is the very
    line twisted.web would write.

C{twisted.internet._resolver.GAIResolver} (the reactor's default name resolver, a private
module): built again with its public C{getThreadPool} argument by
L{resolve_names_in_passing_threads}, so that each C{getaddrinfo} runs in a thread that ends
with it instead of a thread of the reactor's pool, which would then stay for the life of
the process (see there).

Not through this module: L{hubtwist.proxy.early} reads C{HTTPChannel._command}, C{_path}
and C{_version} (checked by C{tests/integration/test_early_dispatch.py}), and
L{hubtwist.supervise.spawn} overrides C{Process._trySpawnInsteadOfFork} and
C{Process._execChild} (checked by its own unit test).
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from typing import Callable

from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.python.failure import Failure
from twisted.web import http

__all__ = [
    "ProtocolSwapUnavailable", "TakeoverUnavailable", "can_swap_protocol", "direct_writer",
    "busy_receiving", "has_write_buffers", "missing_members", "nothing_queued", "queued_bytes",
    "unparsed_line",
    "request_disconnected", "resolve_names_in_passing_threads", "set_buffer_sizes",
    "set_cookie_value", "swap_protocol", "upgrade_channel",
]

_NEEDS = "hubtwist needs Twisted 25.5 to 26.x"


class TakeoverUnavailable(RuntimeError):
    """The installed Twisted lacks the private hooks L{upgrade_channel} needs."""


class ProtocolSwapUnavailable(RuntimeError):
    """The transport's protocol cannot be swapped (see L{can_swap_protocol})."""


# -- write buffers ------------------------------------------------------------------------

def has_write_buffers(transport) -> bool:
    """Whether C{transport} keeps Twisted's write buffers where this module can read them."""
    return (isinstance(transport, FileDescriptor) and hasattr(transport, "dataBuffer")
            and hasattr(transport, "offset") and hasattr(transport, "_tempDataLen"))


def nothing_queued(transport) -> bool:
    """
    Whether nothing waits in C{transport}'s write buffers; L{False} when that cannot be
    told (the caller then takes its ordinary path).
    """
    try:
        return not transport.dataBuffer and not transport._tempDataLen
    except AttributeError:
        return False


def queued_bytes(transport) -> int:
    """Bytes waiting in C{transport}'s write buffers (0 when that cannot be told)."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return 0


def set_buffer_sizes(transport, size: int) -> bool:
    """
    Let C{transport} buffer C{size} bytes before pausing its producer, and send up to
    C{size} bytes per call (Twisted: 64 KiB and 128 KiB). Returns whether it could.
    """
    if not (has_write_buffers(transport) and hasattr(transport, "bufferSize")
            and hasattr(transport, "SEND_LIMIT")):
        return False
    transport.bufferSize = size
    transport.SEND_LIMIT = size
    return True


def direct_writer(transport) -> Callable[[bytes], None]:
    """
    A C{write(data)} for C{transport} that sends at once when nothing is queued, instead
    of on the next reactor iteration; what the kernel does not take, and everything while
    something is queued, goes through C{transport.write} (so order, producer pausing and
    error handling stay Twisted's). Plain C{transport.write} for transports without the
    members this needs. See L{hubtwist.proxy.sending} for why.

    The members are checked once, here: the returned function is on the hot path of every
    response and reads them directly (as fast as inlined code).
    """
    if not (has_write_buffers(transport) and hasattr(transport, "writeSomeData")):
        return transport.write
    buffered_write = transport.write
    send = transport.writeSomeData

    def write(data: bytes) -> None:
        if (not transport.dataBuffer and not transport._tempDataLen
                and transport.connected and not transport.disconnecting):
            sent = send(data)
            if sent.__class__ is int:
                if sent == len(data):
                    return
                data = data[sent:]
            # else an error: buffering lets the reactor find it and close the connection
        buffered_write(data)

    return write


# -- protocol swap ------------------------------------------------------------------------

def can_swap_protocol(transport) -> bool:
    """Whether L{swap_protocol} works on C{transport}: a plain TCP or unix socket connection
    (a TLS transport wraps its protocol instead)."""
    return isinstance(transport, tcp.Connection) and hasattr(transport, "protocol")


def swap_protocol(transport, protocol) -> None:
    """
    From now on C{protocol} gets C{transport}'s data and its C{connectionLost} (it is not
    told C{makeConnection}: the caller does that).

    @raise ProtocolSwapUnavailable: when not L{can_swap_protocol}.
    """
    if not can_swap_protocol(transport):
        raise ProtocolSwapUnavailable(
            f"cannot swap the protocol of a {type(transport).__name__} (only plain TCP and "
            f"unix socket connections with a 'protocol' attribute; {_NEEDS})")
    transport.protocol = protocol


# -- twisted.web ----------------------------------------------------------------------------

def upgrade_channel(channel, protocol) -> bytes:
    """
    Detach C{channel}'s connection from twisted.web: from now on C{protocol} gets its data
    and its C{connectionLost}, and is connected to the transport.

    Returns the bytes the client sent after the request head, which the channel kept while
    the request was being processed: they are the new protocol's (they are never parsed as
    a next request, because the request is never finished; finishing it is what makes the
    channel parse buffered bytes).

    @param protocol: must have its C{dataReceived} and C{connectionLost} set already; the
        channel captures them.
    @raise TakeoverUnavailable: when the hooks are missing (nothing is changed then).
    """
    upgrade = getattr(channel, "_protocolUpgradeForWebsockets", None)
    buffered = getattr(channel, "_dataBuffer", None)
    if upgrade is None or not isinstance(buffered, list):
        raise TakeoverUnavailable(
            "this Twisted's HTTPChannel has no _protocolUpgradeForWebsockets/_dataBuffer; "
            f"{_NEEDS} for WebSockets")
    early = b"".join(buffered)
    del buffered[:]
    upgrade(protocol)
    return early


def request_disconnected(request) -> bool:
    """Whether C{request}'s client is gone (twisted.web's private flag; without it, the
    channel it drops at the same moment)."""
    gone = getattr(request, "_disconnected", None)
    if gone is None:
        return getattr(request, "channel", True) is None
    return gone


class _CookieHolder:
    __slots__ = ("cookies",)

    def __init__(self) -> None:
        self.cookies: list[bytes] = []


def set_cookie_value(name, value, **attributes) -> bytes:
    """
    The C{Set-Cookie} header value twisted.web's C{Request.addCookie(name, value,
    **attributes)} writes (sanitised, attributes in its order), so both paths set cookies
    with one formatter.
    """
    holder = _CookieHolder()
    http.Request.addCookie(holder, name, value, **attributes)
    (line,) = holder.cookies
    return line


# -- request heads -------------------------------------------------------------------------

def unparsed_line(receiver) -> bytes:
    """The bytes C{receiver} (a C{LineReceiver}) read but has not parsed into a line yet
    (empty when that cannot be told)."""
    buffered = getattr(receiver, "_buffer", b"")
    return buffered if isinstance(buffered, bytes) else b""


def busy_receiving(receiver) -> bool:
    """Whether C{receiver} (a C{LineReceiver}) is inside its own C{dataReceived}."""
    return getattr(receiver, "_busyReceiving", False) is True


# -- checking the installed Twisted ---------------------------------------------------------

class _NoReactor:
    """Enough of a reactor to build a transport that is never started."""


# -- name resolution ----------------------------------------------------------------------

def resolve_names_in_passing_threads(reactor) -> bool:
    """
    Have C{reactor} resolve host names (C{HostnameEndpoint}: the Hub client's connections,
    an app's host name) each in a thread of its own that ends with the lookup, instead of
    the reactor's thread pool, whose worker then idles for the life of the process. An idle
    second thread makes all of hubtwist's Python slower: measured on the 1 KB proxy load,
    222-226 us of CPU per request without one, 245-248 us with one (two runs, interleaved;
    a thread that has ended costs nothing). Lookups are rare (one per new connection to a
    host name). False, and the reactor's own resolver kept, when the installed Twisted
    lacks what this needs.
    """
    try:
        from twisted.internet._resolver import GAIResolver
    except ImportError:
        return False
    install = getattr(reactor, "installNameResolver", None)
    if install is None:
        return False
    install(GAIResolver(reactor, getThreadPool=lambda: _PASSING_THREADS))
    return True


class _PassingThreads:
    """
    What C{deferToThreadPool} asks of a pool (C{callInThreadWithCallback}), in daemon
    threads that end when no call is waiting: at most C{most} at once (a burst of new
    connections to a host name queues its lookups rather than starting a thread each), and
    a thread that cannot be started fails its call instead of leaving the lookup hanging.
    """

    def __init__(self, most: int = 8) -> None:
        self._most = most
        self._lock = threading.Lock()
        self._waiting: deque = deque()
        self._running = 0

    def callInThreadWithCallback(self, onResult, func, *args, **kwargs) -> None:
        call = (onResult, func, args, kwargs)
        with self._lock:
            if self._running >= self._most:
                self._waiting.append(call)
                return
            self._running += 1
        try:
            threading.Thread(target=self._work, args=(call,), name="hubtwist-resolve",
                             daemon=True).start()
        except RuntimeError:  # "can't start new thread"
            with self._lock:
                self._running -= 1
            onResult(False, Failure())

    def _work(self, call) -> None:
        while call is not None:
            onResult, func, args, kwargs = call
            try:
                result = func(*args, **kwargs)
            except BaseException:  # noqa: BLE001 - handed to the caller as a Failure
                onResult(False, Failure())
            else:
                onResult(True, result)
            with self._lock:
                call = self._waiting.popleft() if self._waiting else None
                if call is None:
                    self._running -= 1


_PASSING_THREADS = _PassingThreads()


def missing_members() -> list[str]:
    """
    What the installed Twisted lacks of the members listed in the module doc, one sentence
    each (what is missing and what it costs); empty when everything is there.
    """
    problems = []
    left, right = socket.socketpair()
    try:
        transport = tcp.Connection(left, None, _NoReactor())
        for name, kind in (("dataBuffer", bytes), ("offset", int), ("_tempDataLen", int),
                           ("bufferSize", int), ("SEND_LIMIT", int)):
            if not isinstance(getattr(transport, name, None), kind):
                problems.append(
                    f"FileDescriptor.{name} is gone or no longer {kind.__name__}: direct sends, "
                    "the WebSocket pump and splice(2) are off (slower, still correct)")
        if not callable(getattr(transport, "writeSomeData", None)):
            problems.append("FileDescriptor.writeSomeData is gone: direct sends are off (slower)")
        if not can_swap_protocol(transport):
            problems.append("tcp.Connection.protocol is gone: the lean path hand-over cannot "
                            "swap protocols")
    finally:
        left.close()
        right.close()
    try:
        set_cookie_value("a", "b", path="/", httpOnly=True, sameSite="lax")
    except Exception as error:  # noqa: BLE001 - any change of shape is what this reports
        problems.append(f"Request.addCookie no longer works on a cookie holder ({error!r}): "
                        "the lean path cannot set cookies; port set_cookie_value")
    if not callable(getattr(http.HTTPChannel, "_protocolUpgradeForWebsockets", None)):
        problems.append("HTTPChannel._protocolUpgradeForWebsockets is gone: WebSocket "
                        "handshakes answer 501; port upgrade_channel")
    if not isinstance(getattr(http.HTTPChannel(), "_dataBuffer", None), list):
        problems.append("HTTPChannel._dataBuffer is gone or no longer a list: WebSocket "
                        "handshakes answer 501; port upgrade_channel")
    channel = http.HTTPChannel()
    if not isinstance(getattr(channel, "_buffer", None), bytes) or \
            not isinstance(getattr(channel, "_busyReceiving", None), bool):
        problems.append("LineReceiver._buffer/_busyReceiving are gone: a request head with a "
                        "bare LF waits for the head deadline (408) instead of a 400")
    try:
        from twisted.internet._resolver import GAIResolver

        GAIResolver(None, getThreadPool=lambda: _PASSING_THREADS)
    except Exception as error:  # noqa: BLE001 - any change of shape is what this reports
        problems.append(f"twisted.internet._resolver.GAIResolver changed ({error!r}): name "
                        "lookups keep a thread of the reactor's pool (Python ~10 % slower "
                        "after the first one); port resolve_names_in_passing_threads")
    if not isinstance(getattr(http.Request, "_disconnected", None), bool):
        problems.append("Request._disconnected is gone: error pages fall back to "
                        "Request.channel to tell a client is gone")
    return problems
