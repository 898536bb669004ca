"""
Process-group helpers shared by the supervisor and the guardian (so: no Twisted here).

Linux only: membership is read from /proc, where a zombie (state Z) no longer counts as a
live member; it cannot run, and a PID 1 that never reaps would otherwise keep a group
"alive" forever.
"""

from __future__ import annotations

import os
import signal


def live_members(pgid: int) -> list[int]:
    """The pids of processes in group C{pgid} that are not zombies."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


def signal_group(pgid: int, signum: int) -> bool:
    """Send C{signum} to every process of group C{pgid}; False when the group is gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Members that switched to another user; the rest got the signal.
        return True
    return True


KILL = signal.SIGKILL
