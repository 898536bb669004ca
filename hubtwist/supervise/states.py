"""The states of a supervised server (supervisord's names, simpervisor's single machine)."""

from __future__ import annotations

import enum


class State(enum.Enum):
    """
    Where a server is in its life.

    STOPPED -> STARTING -> RUNNING -> (EXITED | BACKOFF -> STARTING ...) -> FATAL;
    STOPPING while it is being stopped on purpose.
    """

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    EXITED = "exited"
    FATAL = "fatal"
    STOPPING = "stopping"


# Which transitions are legal; the supervisor asserts against this so a bug shows at once.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.RUNNING, State.BACKOFF, State.EXITED, State.FATAL, State.STOPPING}),
    State.RUNNING: frozenset({State.BACKOFF, State.EXITED, State.FATAL, State.STOPPING}),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPING}),
    State.EXITED: frozenset({State.STARTING, State.STOPPING}),
    State.FATAL: frozenset({State.STARTING, State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED}),
}
