"""
Writing to a Twisted TCP transport without waiting for the next reactor iteration.

C{transport.write} only appends to a buffer; the reactor sends it once the socket reports
writable, which costs an C{epoll_ctl} to watch for that, an event dispatch, the send, and
another C{epoll_ctl} to stop watching. For a proxy relaying small responses that is a large
share of the work. L{direct_writer} sends at once when nothing is buffered and falls back to
C{transport.write} for the rest, so ordering, producer pausing and error handling stay
Twisted's.

Knowing that nothing is buffered takes private Twisted members: L{direct_writer} and the
buffer sizes live in L{hubtwist.proxy.twisted_private}, with the other private accesses.
Without those members, L{direct_writer} is plain C{transport.write}: a change in Twisted
costs speed, not correctness (C{tests/integration/test_twisted_private.py} notices).
"""

from __future__ import annotations

from hubtwist.proxy.twisted_private import direct_writer, set_buffer_sizes

__all__ = ["BULK_BUFFER", "allow_bulk", "direct_writer"]

# A client connection's write buffer before the app's connection is paused, and the most
# sent per call (Twisted: 64 KiB and 128 KiB). See allow_bulk.
BULK_BUFFER = 512 * 1024


def allow_bulk(transport) -> None:
    """
    Let C{transport} (a client connection) take a large response without pausing its
    producer (the app's connection, read 256 KiB at a time) after every piece: with
    Twisted's 64 KiB, each piece of a download paused and resumed the app's connection.
    Measured on 8 MB downloads: about +20 % throughput. Twisted uses the same number as
    the read size, so reads from the client are larger too. Costs at most this much
    buffered memory per slow client.
    """
    set_buffer_sizes(transport, BULK_BUFFER)

