"""
C{bench/run front}: the Hub's front proxy as users see it, configurable-http-proxy against
C{hubtwist chp}, each with 10 and with 10,000 routes (issue 14).

The backend is nginx serving the http mode's files; every front peer starts with an empty
table and gets, through its REST API (with its C{CONFIGPROXY_AUTH_TOKEN}) before any
request, a JupyterHub-like table: C{/} to a Hub that is not there (a closed port), then
C{/user/u0 ...} to the backend, and C{/user/bench} (the measured route) to the backend.
Both keep the route's path (JupyterHub's defaults), so the backend serves
C{/user/bench/} as its root (a symlink in C{.scratch/www}). The load, checks and figures
are the http mode's: 1 KB req/s, p50/p99, CPU per request, 8 MB MiB/s, idle and peak RSS
(idle is taken after the routes were added and one request served).
"""

from __future__ import annotations

import http.client
import json
import secrets
import time

from harness.common import LOOPBACK, TargetFailed, child_env, free_port, log
from harness.http_mode import WWW, HttpMode
from harness.install import TESTS_CHP, ensure_chp
from harness.peers import (
    START_TIMEOUT, Peer, Running, command_output, hubtwist_command, hubtwist_repo,
    hubtwist_version, nginx_version,
)
from harness.procs import Proc
from harness.report import ratio
from harness.ws_mode import WsMode

BENCH_ROUTE = "/user/bench"
SIZES = {"10": 10, "10k": 10_000}


def add_routes(api_port: int, token: str, backend_port: int, count: int) -> float:
    """Post C{count} routes (C{/}, users, C{BENCH_ROUTE} last) over one keep-alive
    connection; returns the seconds it took."""
    backend = f"http://{LOOPBACK}:{backend_port}"
    routes = [("/", f"http://{LOOPBACK}:{free_port()}", {"hub": True})]
    routes += [(f"/user/u{index}", backend, {"user": f"u{index}", "server_name": ""})
               for index in range(count - 2)]
    routes.append((BENCH_ROUTE, backend, {"user": "bench", "server_name": ""}))
    started = time.monotonic()
    connection = http.client.HTTPConnection(LOOPBACK, api_port, timeout=30)
    try:
        for path, target, extra in routes:
            connection.request("POST", "/api/routes" + path,
                               body=json.dumps({"target": target, **extra}),
                               headers={"Authorization": f"token {token}",
                                        "Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 201:
                raise TargetFailed(f"POST /api/routes{path}: status {response.status}")
    except (OSError, http.client.HTTPException) as error:
        raise TargetFailed(f"adding routes: {type(error).__name__}: {error}") from None
    finally:
        connection.close()
    return time.monotonic() - started


def start_front(name: str, argv: list[str], backend_port: int, count: int, cwd=None,
                env: dict[str, str] | None = None) -> Running:
    """Start a CHP-compatible proxy (C{argv} + CHP's options), add C{count} routes."""
    port, api_port = free_port(), free_port()
    token = secrets.token_hex(16)
    proc = Proc(name, [*argv, "--ip", LOOPBACK, "--port", str(port), "--api-ip", LOOPBACK,
                       "--api-port", str(api_port)],
                env=child_env(CONFIGPROXY_AUTH_TOKEN=token, **(env or {})), cwd=cwd)
    proc.wait_for_port(port, START_TIMEOUT)
    proc.wait_for_port(api_port, START_TIMEOUT)
    seconds = add_routes(api_port, token, backend_port, count)
    log(f"{name}: {count} routes added in {seconds:.1f}s")
    return Running(proc, port, prefix=BENCH_ROUTE)


def chp_command() -> str:
    """The CHP tests/setup installed (the one the e2e tests run), else bench's own."""
    return str(TESTS_CHP) if TESTS_CHP.exists() else str(ensure_chp())


def chp_version() -> str:
    return (f"{command_output([chp_command(), '--version'])} on Node "
            f"{command_output(['node', '--version'])}")


def start_chp_front(backend_port: int, count: int) -> Running:
    return start_front(f"chp-{count}", [chp_command()], backend_port, count)


def start_hubtwist_front(backend_port: int, count: int) -> Running:
    argv, extra_env = hubtwist_command()
    return start_front(f"hubtwist-chp-{count}", [*argv, "chp"], backend_port, count,
                       cwd=hubtwist_repo(), env=extra_env)


def front_peers(direct: Peer) -> list[Peer]:
    """C{direct}, then CHP and C{hubtwist chp} with 10, then with 10,000 routes."""
    rows = [direct]
    for size, count in SIZES.items():
        rows.append(Peer(f"chp-{size}", f"configurable-http-proxy, {count:,} routes",
                         lambda port, count=count: start_chp_front(port, count), chp_version))
        rows.append(Peer(f"hubtwist-chp-{size}", f"hubtwist chp, {count:,} routes",
                         lambda port, count=count: start_hubtwist_front(port, count),
                         hubtwist_version))
    return rows


PEER_KEYS = ("direct", *(f"{kind}-{size}" for size in SIZES for kind in ("chp", "hubtwist-chp")))
ROUTES_SETTING = (
    f"routes: `/` (a closed port), `/user/uN`, and `{BENCH_ROUTE}` (the measured one), all "
    "added through the REST API before the first request; both proxies with JupyterHub's "
    "defaults (prefix kept, X-Forwarded-* on)")


class FrontMode(HttpMode):
    """The http mode's load through CHP and C{hubtwist chp}, with 10 and 10,000 routes."""

    name = "front"
    peer_keys = PEER_KEYS

    def start_backend(self) -> Running:
        running = super().start_backend()
        user = WWW / "user"
        user.mkdir(exist_ok=True)
        bench = user / "bench"
        if not bench.is_symlink():
            bench.symlink_to("..")  # /user/bench/1k.bin is /1k.bin
        return running

    def peers(self, backend: Running) -> list[Peer]:
        return front_peers(Peer("direct", "direct (nginx backend)", lambda _port: backend,
                                nginx_version))

    def settings(self) -> list[str]:
        return [*super().settings(), ROUTES_SETTING]

    def ratios(self, rows: dict) -> list[str]:
        lines = []
        for size in SIZES:
            ours, theirs = f"hubtwist-chp-{size}", f"chp-{size}"
            lines += [
                ratio(rows, f"{size} routes: hubtwist chp / CHP, 1 KB req/s", (ours, "rps"),
                      (theirs, "rps"), "higher is better", goal=2.0 if size == "10k" else None),
                ratio(rows, f"{size} routes: hubtwist chp p99 / CHP p99", (ours, "p99"),
                      (theirs, "p99"), "lower is better", goal=0.5 if size == "10k" else None),
                ratio(rows, f"{size} routes: hubtwist chp / CHP, CPU per 1 KB request",
                      (ours, "cpu_req"), (theirs, "cpu_req"), "lower is better"),
                ratio(rows, f"{size} routes: hubtwist chp / CHP, 8 MB MiB/s", (ours, "bulk"),
                      (theirs, "bulk"), "higher is better"),
                ratio(rows, f"{size} routes: hubtwist chp / CHP, idle RSS", (ours, "rss_idle"),
                      (theirs, "rss_idle"), "lower is better", goal=1.0),
            ]
        return lines


class FrontWsMode(WsMode):
    """The ws mode's ping-pong through CHP and C{hubtwist chp}, 10 and 10,000 routes (the
    Node echo backend answers on any path, so C{/user/bench/echo} needs nothing more)."""

    name = "front-ws"
    peer_keys = PEER_KEYS

    def peers(self, backend: Running) -> list[Peer]:
        return front_peers(super().peers(backend)[0])

    def settings(self) -> list[str]:
        return [*super().settings(), ROUTES_SETTING]

    def ratios(self, rows: dict) -> list[str]:
        lines = []
        for size in SIZES:
            ours, theirs = f"hubtwist-chp-{size}", f"chp-{size}"
            lines += [
                ratio(rows, f"{size} routes: hubtwist chp / CHP, 64 B msg/s", (ours, "msgs"),
                      (theirs, "msgs"), "higher is better"),
                ratio(rows, f"{size} routes: hubtwist chp / CHP, CPU per 64 B message",
                      (ours, "cpu_msg"), (theirs, "cpu_msg"), "lower is better",
                      goal=1.0 if size == "10k" else None),
                ratio(rows, f"{size} routes: hubtwist chp / CHP, 1 MiB MiB/s", (ours, "bulk"),
                      (theirs, "bulk"), "higher is better"),
                ratio(rows, f"{size} routes: hubtwist chp / CHP, CPU per 1 MiB", (ours, "cpu_mib"),
                      (theirs, "cpu_mib"), "lower is better"),
            ]
        return lines
