"""
hubtwist's side of the guardian (see L{hubtwist._guardian}): start it once, tell it
which process groups exist.
"""

from __future__ import annotations

import os
import sys

from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from hubtwist.supervise.spawn import is_frozen

log = Logger(namespace="hubtwist.supervise")


def guardian_argv() -> list[str]:
    """How to run the guardian: the frozen binary's hidden subcommand, or the module."""
    if is_frozen():
        return [sys.executable, "_guardian"]
    return [sys.executable, "-m", "hubtwist._guardian"]


class _GuardianProtocol(ProcessProtocol):
    def __init__(self, owner: "Guardian") -> None:
        self._owner = owner

    def processEnded(self, reason) -> None:
        self._owner._ended()


class Guardian:
    """
    The link to one guardian process. L{watch} and L{release} are cheap writes to its
    stdin pipe; if the guardian is gone, the next L{watch} starts a new one.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._transport = None
        self._groups: set[int] = set()

    def _ensure_started(self) -> None:
        if self._transport is not None:
            return
        argv = guardian_argv()
        env = dict(os.environ)
        # Make `-m hubtwist._guardian` importable even when hubtwist runs from a checkout.
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self._transport = self._reactor.spawnProcess(
            _GuardianProtocol(self), argv[0], argv, env=env, childFDs={0: "w", 1: 1, 2: 2}
        )
        for pgid in self._groups:
            self._transport.write(b"+%d\n" % pgid)

    def _ended(self) -> None:
        log.warn("The process guardian exited; a new one starts with the next app.")
        self._transport = None

    def watch(self, pgid: int) -> None:
        """From now on, kill group C{pgid} if hubtwist dies."""
        self._groups.add(pgid)
        self._ensure_started()
        self._transport.write(b"+%d\n" % pgid)

    def release(self, pgid: int) -> None:
        """Group C{pgid} is gone; forget it (its number may be reused)."""
        self._groups.discard(pgid)
        if self._transport is not None:
            self._transport.write(b"-%d\n" % pgid)

    def close(self) -> None:
        """Close the pipe: the guardian kills what is still listed and exits."""
        if self._transport is not None:
            self._transport.closeStdin()


_shared: dict[int, Guardian] = {}


def shared_guardian(reactor) -> Guardian:
    """The one guardian of this process (one per reactor)."""
    key = id(reactor)
    if key not in _shared:
        _shared[key] = Guardian(reactor)
    return _shared[key]
