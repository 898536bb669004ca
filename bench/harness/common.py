"""Paths, logging and small helpers shared by every part of the harness."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
SCRATCH = BENCH_DIR / ".scratch"
LOGS = SCRATCH / "logs"
RESULTS = BENCH_DIR / "results"
LOOPBACK = "127.0.0.1"

# Variables that could send a client's traffic somewhere else than 127.0.0.1.
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")

_START = time.monotonic()


class TargetFailed(Exception):
    """A peer could not be started, verified or measured; the message becomes its row."""


def log(message: str) -> None:
    """Progress line on stderr, stamped with the seconds since the harness started."""
    print(f"[{time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:C{port}."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def child_env(**extra: str) -> dict[str, str]:
    """
    The environment for a peer: ours without proxy settings (every request stays on
    127.0.0.1) and without the PYTHONPATH that C{bench/run} sets for the harness itself.
    """
    env = {
        key: value for key, value in os.environ.items()
        if key.lower() not in _PROXY_VARIABLES and key != "PYTHONPATH"
    }
    env.update(extra)
    return env


def mib(size_in_bytes: float) -> float:
    """Bytes to MiB."""
    return size_in_bytes / (1 << 20)
