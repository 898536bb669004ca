"""
C{bench/run ws}: WebSocket ping-pong through each peer to a Node echo backend.

Small messages (64 B on 16 connections) give round trips per second and their latency;
large ones (1 MiB on 4 connections) give throughput. Both the backend and the load client
are Node programs in C{bench/ws/} using the npm C{ws} package installed in C{.scratch/ws}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from harness import install
from harness.common import BENCH_DIR, LOOPBACK, TargetFailed, child_env, free_port, log, mib
from harness.peers import START_TIMEOUT, Peer, Running, command_output, proxies
from harness.procs import CpuTime, Proc, run_bounded
from harness.report import ratio
from harness.runner import CPU_SETTINGS, Column, Mode, Row, rss_settings

WS_DIR = BENCH_DIR / "ws"


@dataclass
class WsLoad:
    """Seconds, connections and message sizes of the two runs."""

    duration: float = 10.0
    bulk_duration: float = 10.0
    warmup: float = 2.0
    connections: int = 16
    bulk_connections: int = 4
    size: int = 64
    bulk_size: int = 1 << 20

    @classmethod
    def quick(cls) -> "WsLoad":
        return cls(duration=4.0, bulk_duration=4.0, warmup=1.0)


@dataclass
class WsResult:
    """One load-client run."""

    seconds: float
    messages: int
    bytes: int
    errors: int
    p50_ms: float
    p99_ms: float


def _node_env() -> dict[str, str]:
    return child_env(NODE_PATH=str(install.ensure_ws()))


def run_client(name: str, url: str, connections: int, size: int, seconds: float,
               headers: dict[str, str] | None = None) -> WsResult:
    """Run C{load-client.js}, its handshakes carrying C{headers} (e.g. a login cookie);
    L{TargetFailed} when it fails or no echo came back."""
    env = _node_env()
    if headers:
        env["BENCH_WS_HEADERS"] = json.dumps(headers)
    status, output = run_bounded(
        name, ["node", str(WS_DIR / "load-client.js"), url, str(connections), str(size),
               f"{seconds:g}"], timeout=seconds + 60, env=env)
    line = next((line for line in output.splitlines() if line.startswith("BENCH-JSON ")), None)
    raw = json.loads(line.removeprefix("BENCH-JSON ")) if line else {}
    if status != 0 or not line or "error" in raw:
        reason = raw.get("error") or " | ".join(output.strip().splitlines()[-2:])
        raise TargetFailed(f"WebSocket client failed (status {status}): {reason}")
    result = WsResult(**raw)
    if result.messages == 0:
        raise TargetFailed(f"no {size}-byte message echoed ({result.errors} errors)")
    return result


class WsMode(Mode):
    """Node C{ws} echo backend, Node C{ws} load client."""

    name = "ws"
    columns = [
        Column("msgs", "64 B msg/s"),
        Column("p50", "64 B p50 (ms)", "{:.2f}"),
        Column("p99", "64 B p99 (ms)", "{:.2f}"),
        Column("bulk", "1 MiB MiB/s"),
        Column("cpu_msg", "64 B CPU (µs/msg)"),
        Column("cpu_mib", "1 MiB CPU (ms/MiB)", "{:.2f}"),
    ]

    def __init__(self, load: WsLoad) -> None:
        self.load_settings = load

    def start_backend(self) -> Running:
        port = free_port()
        proc = Proc("ws-backend", ["node", str(WS_DIR / "echo-server.js"), str(port)],
                    env=_node_env())
        proc.wait_for_port(port, START_TIMEOUT)
        return Running(proc, port)

    def peers(self, backend: Running) -> list[Peer]:
        def backend_version() -> str:
            ws = command_output(["node", "-p", "require('ws/package.json').version"],
                                env=_node_env())
            return f"Node {command_output(['node', '--version'])}, ws {ws}"

        direct = Peer("direct", "direct (Node ws echo)", lambda _port: backend, backend_version)
        return [direct, *proxies()]

    @staticmethod
    def _url(running: Running) -> str:
        return f"ws://{LOOPBACK}:{running.port}{running.prefix}/echo"

    def first_request(self, running: Running, key: str) -> None:
        run_client(f"ws-{key}-check", self._url(running), 1, self.load_settings.size, 0.2)

    def check(self, running: Running, key: str) -> None:
        run_client(f"ws-{key}-check-bulk", self._url(running), 1, self.load_settings.bulk_size,
                   0.2)

    def load(self, running: Running, row: Row) -> None:
        load, key, url = self.load_settings, row.peer.key, self._url(running)
        if load.warmup > 0:
            run_client(f"ws-{key}-warmup", url, load.connections, load.size, load.warmup)
        log(f"{key}: {load.size} B ping-pong for {load.duration:g}s")
        with CpuTime(running.proc.pid, running.whole_tree) as cpu:
            small = run_client(f"ws-{key}-small", url, load.connections, load.size,
                               load.duration)
        row.figures.update(msgs=small.messages / small.seconds, p50=small.p50_ms,
                           p99=small.p99_ms)
        if small.messages:
            row.figures["cpu_msg"] = 1e6 * cpu.seconds / small.messages
        if small.errors:
            row.notes.append(f"{load.size} B: {small.errors} errors")
        log(f"{key}: {load.bulk_size} B ping-pong for {load.bulk_duration:g}s")
        try:
            with CpuTime(running.proc.pid, running.whole_tree) as cpu:
                bulk = run_client(f"ws-{key}-bulk", url, load.bulk_connections,
                                  load.bulk_size, load.bulk_duration)
        except TargetFailed as error:
            row.notes.append(f"bulk failed: {error}")
            return
        row.figures["bulk"] = mib(bulk.bytes) / bulk.seconds
        if bulk.bytes:
            row.figures["cpu_mib"] = 1e3 * cpu.seconds / mib(bulk.bytes)
        if bulk.errors:
            row.notes.append(f"bulk: {bulk.errors} errors")

    def settings(self) -> list[str]:
        load = self.load_settings
        return [
            f"small: {load.connections} connections x {load.size} B messages, ping-pong "
            f"(next message after the echo), {load.duration:g}s after a {load.warmup:g}s "
            "warm-up; msg/s = echoed round trips per second",
            f"bulk: {load.bulk_connections} connections x {load.bulk_size} B messages, "
            f"ping-pong, {load.bulk_duration:g}s; MiB/s = echoed payload (one direction)",
            "client and backend: Node with the npm `ws` package, no compression; all on "
            "127.0.0.1 on this one machine",
            rss_settings("one echoed 64 B message"),
            CPU_SETTINGS,
        ]

    def ratios(self, rows: dict[str, Row]) -> list[str]:
        return [
            ratio(rows, "hubtwist / CHP, 64 B msg/s", ("hubtwist", "msgs"), ("chp", "msgs"),
                  "higher is better"),
            ratio(rows, "hubtwist / jsp standalone, 64 B msg/s", ("hubtwist", "msgs"),
                  ("jsp", "msgs"), "higher is better"),
            ratio(rows, "hubtwist p99 / CHP p99", ("hubtwist", "p99"), ("chp", "p99"),
                  "lower is better"),
            ratio(rows, "hubtwist / nginx proxy, 1 MiB MiB/s", ("hubtwist", "bulk"),
                  ("nginx-proxy", "bulk"), "higher is better"),
            ratio(rows, "hubtwist / CHP, idle RSS", ("hubtwist", "rss_idle"),
                  ("chp", "rss_idle"), "lower is better"),
            ratio(rows, "hubtwist / CHP, 1 MiB MiB/s", ("hubtwist", "bulk"), ("chp", "bulk"),
                  "higher is better"),
            ratio(rows, "hubtwist / CHP, CPU per 64 B message", ("hubtwist", "cpu_msg"),
                  ("chp", "cpu_msg"), "lower is better"),
            ratio(rows, "hubtwist / CHP, CPU per 1 MiB MiB", ("hubtwist", "cpu_mib"),
                  ("chp", "cpu_mib"), "lower is better"),
        ]
