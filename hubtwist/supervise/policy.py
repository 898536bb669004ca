"""
Restart policy arithmetic: whether an exit is restarted, after how long, and when a
server has failed often enough to be FATAL. Pure functions, tested without a reactor.
"""

from __future__ import annotations

import random
from typing import Callable


def is_failure(exit_code: int | None, signal_number: int | None) -> bool:
    """An exit is a failure unless the process exited on its own with status 0."""
    return signal_number is not None or exit_code != 0


def should_restart(mode: str, failed: bool) -> bool:
    """C{restart = "on-failure" | "always" | "never"} applied to one exit."""
    if mode == "always":
        return True
    if mode == "on-failure":
        return failed
    return False


def restart_delay(
    failures: int, initial: float, maximum: float, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """
    Seconds to wait before the restart that follows the C{failures}-th failure in a row:
    C{initial * 2 ** (failures - 1)}, capped at C{maximum}, with +-20% jitter so that many
    servers failing together do not restart in lockstep. Never above C{maximum}.
    """
    base = min(maximum, initial * 2 ** max(0, failures - 1))
    return min(maximum, base * uniform(0.8, 1.2))


def is_fatal(failures: int, start_retries: int) -> bool:
    """A server that failed C{start_retries} times in a row is not restarted any more."""
    return failures >= start_retries


def run_was_healthy(uptime: float, min_uptime: float) -> bool:
    """A run that lasted C{min_uptime} resets the failure count (supervisord's startsecs)."""
    return uptime >= min_uptime
