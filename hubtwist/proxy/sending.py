"""
Writing to a Twisted TCP transport without waiting for the next reactor iteration.

C{transport.write} only appends to a buffer; the reactor sends it once the socket reports
writable, which costs an C{epoll_ctl} to watch for that, an event dispatch, the send, and
another C{epoll_ctl} to stop watching. For a proxy relaying small responses that is a large
share of the work. L{direct_writer} sends at once when nothing is buffered and falls back to
C{transport.write} for the rest, so ordering, producer pausing and error handling stay
Twisted's.

Private Twisted attributes used, read only: C{FileDescriptor.dataBuffer} and
C{FileDescriptor._tempDataLen} (the two write buffers). Without them, L{direct_writer} is
plain C{transport.write}: a change in Twisted costs speed, not correctness
(C{tests/integration/test_websocket.py::test_socket_fast_paths_available} notices).
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.abstract import FileDescriptor

__all__ = ["BULK_BUFFER", "allow_bulk", "direct_writer", "has_buffers", "queued_bytes"]

# A client connection's write buffer before the app's connection is paused, and the most
# sent per call (Twisted: 64 KiB and 128 KiB). See allow_bulk.
BULK_BUFFER = 512 * 1024


def has_buffers(transport) -> bool:
    return (isinstance(transport, FileDescriptor) and hasattr(transport, "dataBuffer")
            and hasattr(transport, "_tempDataLen"))


def queued_bytes(transport) -> int:
    """How many bytes wait in C{transport}'s write buffers (0 when it cannot be known):
    a stalled reader's count does not go down."""
    if transport is None or not has_buffers(transport):
        return 0
    return len(transport.dataBuffer) + transport._tempDataLen


def allow_bulk(transport) -> None:
    """
    Let C{transport} (a client connection) take a large response without pausing its
    producer (the app's connection, read 256 KiB at a time) after every piece: with
    Twisted's 64 KiB, each piece of a download paused and resumed the app's connection.
    Measured on 8 MB downloads: about +20 % throughput. Twisted uses the same number as
    the read size, so reads from the client are larger too. Costs at most this much
    buffered memory per slow client.
    """
    if has_buffers(transport):
        transport.bufferSize = BULK_BUFFER
        transport.SEND_LIMIT = BULK_BUFFER


def direct_writer(transport) -> Callable[[bytes], None]:
    """
    A C{write(data)} for C{transport} that sends at once when nothing is buffered, instead
    of on the next reactor iteration (saving two epoll_ctl calls and an event dispatch);
    what the kernel does not take, and everything while something is buffered, goes
    through C{transport.write}, so order, producer pausing and error handling stay
    Twisted's. Plain C{transport.write} for transports without the attributes this needs.
    """
    if not (has_buffers(transport) and hasattr(transport, "writeSomeData")):
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
