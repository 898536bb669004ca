"""
C{bench/run http}: requests/s and latency for a 1 KB file, throughput for an 8 MB file.

The backend is nginx serving two generated files of random bytes; each peer must return
both with status 200 and the exact bytes before wrk loads it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
from dataclasses import dataclass

from harness.common import LOOPBACK, SCRATCH, TargetFailed, free_port, log
from harness.peers import Peer, Running, nginx_version, proxies, start_nginx_static
from harness.report import ratio
from harness.procs import CpuTime
from harness.runner import CPU_SETTINGS, Column, Mode, Row, rss_settings
from harness.wrk import run_wrk

WWW = SCRATCH / "www"
FILES = {"/1k.bin": 1024, "/8m.bin": 8 << 20}


@dataclass
class HttpLoad:
    """How hard and how long wrk pushes (seconds, threads, connections)."""

    duration: float = 10.0
    bulk_duration: float = 10.0
    warmup: float = 2.0
    threads: int = 2
    connections: int = 32
    bulk_threads: int = 2
    bulk_connections: int = 4

    @classmethod
    def quick(cls) -> "HttpLoad":
        return cls(duration=4.0, bulk_duration=4.0, warmup=1.0)


def make_files() -> dict[str, str]:
    """Write the served files once (random bytes); return their SHA-256 by URL path."""
    WWW.mkdir(parents=True, exist_ok=True)
    digests = {}
    for path, size in FILES.items():
        target = WWW / path.lstrip("/")
        if not target.is_file() or target.stat().st_size != size:
            target.write_bytes(os.urandom(size))
        digests[path] = hashlib.sha256(target.read_bytes()).hexdigest()
    return digests


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One GET on 127.0.0.1 (http.client: no proxies, no redirects followed)."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as error:
        raise TargetFailed(f"GET {path}: {type(error).__name__}: {error}") from None
    finally:
        connection.close()


class HttpMode(Mode):
    """nginx static backend, wrk as the client."""

    name = "http"
    columns = [
        Column("rps", "1 KB req/s"),
        Column("p50", "1 KB p50 (ms)", "{:.2f}"),
        Column("p99", "1 KB p99 (ms)", "{:.2f}"),
        Column("bulk", "8 MB MiB/s"),
        Column("cpu_req", "1 KB CPU (µs/req)"),
        Column("cpu_mib", "8 MB CPU (ms/MiB)", "{:.2f}"),
    ]

    def __init__(self, load: HttpLoad) -> None:
        self.load_settings = load
        self.digests: dict[str, str] = {}

    def start_backend(self) -> Running:
        self.digests = make_files()
        return start_nginx_static(free_port(), WWW)

    def peers(self, backend: Running) -> list[Peer]:
        direct = Peer("direct", "direct (nginx backend)", lambda _port: backend, nginx_version)
        return [direct, *proxies()]

    def _expect(self, running: Running, path: str) -> None:
        status, body = get(running.port, running.prefix + path)
        size = FILES[path]
        if status != 200 or len(body) != size:
            excerpt = body[:80].decode("utf-8", "replace").strip()
            raise TargetFailed(f"GET {running.prefix + path}: status {status} with {len(body)} "
                               f"bytes (expected 200 with {size}) {excerpt!r}")
        if hashlib.sha256(body).hexdigest() != self.digests[path]:
            raise TargetFailed(f"GET {running.prefix + path}: the body differs from the file")

    def first_request(self, running: Running, key: str) -> None:
        self._expect(running, "/1k.bin")

    def check(self, running: Running, key: str) -> None:
        self._expect(running, "/8m.bin")

    def load(self, running: Running, row: Row) -> None:
        load, key = self.load_settings, row.peer.key
        url = f"http://{LOOPBACK}:{running.port}{running.prefix}"
        if load.warmup > 0:
            run_wrk(f"wrk-{key}-warmup", url + "/1k.bin", load.threads, load.connections,
                    load.warmup)
        log(f"{key}: 1 KB for {load.duration:g}s")
        with CpuTime(running.proc.pid, running.whole_tree) as cpu:
            small = run_wrk(f"wrk-{key}-1k", url + "/1k.bin", load.threads, load.connections,
                            load.duration)
        row.figures.update(rps=small.rps, p50=small.p50_ms, p99=small.p99_ms)
        if small.rps:
            row.figures["cpu_req"] = 1e6 * cpu.seconds / (small.rps * load.duration)
        if small.problems():
            row.notes.append(f"1 KB: {small.problems()}")
        log(f"{key}: 8 MB for {load.bulk_duration:g}s")
        try:
            with CpuTime(running.proc.pid, running.whole_tree) as cpu:
                bulk = run_wrk(f"wrk-{key}-8m", url + "/8m.bin", load.bulk_threads,
                               load.bulk_connections, load.bulk_duration, timeout=30)
        except TargetFailed as error:
            row.notes.append(f"8 MB failed: {error}")
            return
        row.figures["bulk"] = bulk.mib_per_s
        if bulk.mib_per_s:
            row.figures["cpu_mib"] = 1e3 * cpu.seconds / (bulk.mib_per_s * load.bulk_duration)
        if bulk.problems():
            row.notes.append(f"8 MB: {bulk.problems()}")

    def settings(self) -> list[str]:
        load = self.load_settings
        return [
            f"1 KB: `wrk -t{load.threads} -c{load.connections} -d{load.duration:g}s --latency` "
            f"after a {load.warmup:g}s warm-up; req/s counts 2xx/3xx only",
            f"8 MB: `wrk -t{load.bulk_threads} -c{load.bulk_connections} "
            f"-d{load.bulk_duration:g}s`; MiB/s = bytes read (bodies and headers) / duration",
            "backend: nginx, static files, sendfile, access_log off; every peer and wrk on "
            "this one machine, all on 127.0.0.1",
            rss_settings("one 1 KB request"),
            CPU_SETTINGS,
        ]

    def ratios(self, rows: dict[str, Row]) -> list[str]:
        return [
            ratio(rows, "hubtwist / CHP, 1 KB req/s", ("hubtwist", "rps"), ("chp", "rps"),
                  "higher is better"),
            ratio(rows, "hubtwist / jsp standalone, 1 KB req/s", ("hubtwist", "rps"),
                  ("jsp", "rps"), "higher is better"),
            ratio(rows, "hubtwist p99 / CHP p99", ("hubtwist", "p99"), ("chp", "p99"),
                  "lower is better"),
            ratio(rows, "hubtwist / nginx proxy, 8 MB MiB/s", ("hubtwist", "bulk"),
                  ("nginx-proxy", "bulk"), "higher is better"),
            ratio(rows, "hubtwist / CHP, idle RSS", ("hubtwist", "rss_idle"),
                  ("chp", "rss_idle"), "lower is better"),
            ratio(rows, "hubtwist / CHP, CPU per 1 KB request", ("hubtwist", "cpu_req"),
                  ("chp", "cpu_req"), "lower is better"),
            ratio(rows, "hubtwist / nginx proxy, CPU per 8 MB MiB", ("hubtwist", "cpu_mib"),
                  ("nginx-proxy", "cpu_mib"), "lower is better"),
        ]
