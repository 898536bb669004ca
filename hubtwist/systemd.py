"""
systemd integration without libsystemd: C{sd_notify} over C{$NOTIFY_SOCKET} (a unix datagram
socket, a path or an abstract name starting with C{@}), for C{Type=notify} services.

Socket activation needs nothing here: C{--listen systemd:domain=INET:index=0} is Twisted's
own endpoint, which reads C{LISTEN_FDS}/C{LISTEN_PID}.
"""

from __future__ import annotations

import os
import socket

_address: str | None = None


def take_notify_socket(environ=os.environ) -> None:
    """Remember C{$NOTIFY_SOCKET} and remove it from the environment, so that the apps
    hubtwist starts cannot notify systemd in hubtwist's name."""
    global _address
    address = environ.pop("NOTIFY_SOCKET", None)
    if address:
        _address = address


def notify(state: str) -> bool:
    """Send C{state} (e.g. C{"READY=1"}) to systemd; False when not run by systemd or when
    the socket is gone (never raises: notification is best effort)."""
    if not _address:
        return False
    target = "\0" + _address[1:] if _address.startswith("@") else _address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), target)
        return True
    except OSError:
        return False


def ready(status: str = "") -> bool:
    # No MAINPID: under the one-file binary the main process is the bootloader, which stays
    # (the unit needs NotifyAccess=all for the message of its child, the real hubtwist).
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping() -> bool:
    return notify("STOPPING=1")
