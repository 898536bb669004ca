"""Run wrk against one URL and read its figures (see C{wrk-report.lua})."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.common import TargetFailed, child_env, mib
from harness.install import system_command
from harness.procs import run_bounded

REPORT_SCRIPT = Path(__file__).with_name("wrk-report.lua")


@dataclass
class WrkResult:
    """One wrk run. Rates count only 2xx/3xx responses."""

    seconds: float
    requests: int
    bytes: int
    status_errors: int  # non-2xx/3xx responses
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p99_ms: float

    @property
    def good_requests(self) -> int:
        return self.requests - self.status_errors

    @property
    def rps(self) -> float:
        return self.good_requests / self.seconds

    @property
    def mib_per_s(self) -> float:
        return mib(self.bytes) / self.seconds

    def problems(self) -> str:
        """Errors worth a note in the table, or an empty string."""
        found = []
        if self.status_errors:
            found.append(f"{self.status_errors} non-2xx")
        if self.socket_errors:
            found.append(f"{self.socket_errors} socket errors")
        return ", ".join(found)


def run_wrk(name: str, url: str, threads: int, connections: int, seconds: float,
            timeout: float = 10.0, headers: dict[str, str] | None = None,
            cpus: set[int] | None = None) -> WrkResult:
    """C{wrk --latency} for C{seconds}, sending C{headers} (e.g. a login cookie) with every
    request, on C{cpus} only when given; L{TargetFailed} when wrk fails or nothing
    succeeded."""
    threads = max(1, min(threads, connections))  # wrk refuses more threads than connections
    pin = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
    argv = [*pin, system_command("wrk") or "wrk", f"-t{threads}", f"-c{connections}",
            f"-d{seconds:g}s", f"--timeout={timeout:g}s", "--latency",
            *(argument for name_value in (headers or {}).items()
              for argument in ("-H", "%s: %s" % name_value)),
            "-s", str(REPORT_SCRIPT), url]
    status, output = run_bounded(name, argv, timeout=seconds + timeout + 30, env=child_env())
    line = next((line for line in output.splitlines() if line.startswith("BENCH-JSON ")), None)
    if status != 0 or line is None:
        tail = " | ".join(output.strip().splitlines()[-2:])
        raise TargetFailed(f"wrk failed (status {status}): {tail}")
    raw = json.loads(line.removeprefix("BENCH-JSON "))
    result = WrkResult(
        seconds=raw["duration_us"] / 1e6, requests=raw["requests"], bytes=raw["bytes"],
        status_errors=raw["status"],
        socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        p50_ms=raw["p50_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
    )
    if result.good_requests <= 0:
        problems = result.problems() or "0 requests"
        raise TargetFailed(f"no successful response under load ({problems})")
    return result
