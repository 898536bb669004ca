"""
The guardian: a tiny process that outlives hubtwist by a moment to make sure no app
survives it, even when hubtwist is killed with SIGKILL and gets no chance to clean up.

hubtwist starts one guardian and keeps a pipe to its stdin; it writes C{+PGID} when an app
process group starts and C{-PGID} once that group is gone. When the pipe reaches end of
file (hubtwist exited, however it died), the guardian sends SIGTERM to every group still
listed, waits up to two seconds, SIGKILLs what is left, and exits.

It runs in its own session and ignores SIGINT/SIGTERM/SIGHUP/SIGQUIT: a Ctrl-C in a terminal reaches the whole
foreground group, and the guardian must stay until hubtwist is gone. Run as
C{python -m hubtwist._guardian} (or C{hubtwist _guardian} when frozen); it imports no Twisted.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from hubtwist._procgroups import KILL, live_members, signal_group

GRACE_SECONDS = 2.0


def read_groups(stream) -> set[int]:
    """Follow the C{+PGID}/C{-PGID} lines until end of file; return the groups still listed."""
    groups: set[int] = set()
    for raw in stream:
        line = raw.strip()
        if len(line) < 2 or not line[1:].isdigit():
            continue
        pgid = int(line[1:])
        if line[:1] == b"+":
            groups.add(pgid)
        elif line[:1] == b"-":
            groups.discard(pgid)
    return groups


def terminate(groups: set[int], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM every group, then SIGKILL whatever is still alive after C{grace} seconds."""
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = set(groups)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {pgid for pgid in alive if live_members(pgid)}
    for pgid in alive:
        signal_group(pgid, KILL)


def main() -> None:
    try:
        # Its own session: a SIGKILL sent to hubtwist's whole process group spares it.
        os.setsid()
    except OSError:
        pass
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    groups = read_groups(sys.stdin.buffer)
    if groups:
        terminate(groups)
    os._exit(0)


if __name__ == "__main__":
    main()
