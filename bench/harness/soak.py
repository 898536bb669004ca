"""
C{bench/soak [--minutes N]}: N minutes of mixed traffic through one hubtwist to four apps it
supervises, one of them killed with SIGKILL every 30 s; then a verdict on errors, memory and
file descriptors. See bench/README.md ("Soak test") for what it does and the rules.

The timeline, all on the monotonic clock, from the moment hubtwist and its apps are up:

  warm-up traffic (min(60 s, N/6)) | settle, baseline sample | main traffic with kills |
  settle, end sample | stop

A "settle" is a pause in all traffic (every connection of the harness closed) until
hubtwist's fd count has not changed for 2 s, at least L{SETTLE_MIN} and at most
L{SETTLE_MAX} seconds: the baseline and the end are compared in the same quiet state, so
the connections in flight do not count as growth. Samples under load are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import report
from harness.common import (LOGS, LOOPBACK, REPO_DIR, RESULTS, SCRATCH, TargetFailed,
                            child_env, free_port, log)
from harness.peers import command_output
from harness.procs import Proc, install_cleanup, rss_mib, stop_all
from harness.soak_traffic import (INJECT_WINDOW, KINDS, Failure, Kill, OpError, Plan,
                                  Traffic, get_json, is_injected, workers)

HTTP_APPS = {"web": "port", "sock": "unix_socket"}  # tests/apps/httpapp.py
WS_APPS = {"ws": "port", "wsu": "unix_socket"}  # tests/apps/wsapp.py
KILL_ORDER = ("web", "ws", "sock", "wsu")  # round robin, HTTP and WebSocket in turn
SETTLE_MIN = 6.0  # idle app connections are closed 4-5 s after use, WebSockets linger 2 s
SETTLE_MAX = 20.0
END_ALLOWANCE = 10.0  # seconds of the run kept for the end settle
PHASE_GRACE = 15.0  # an operation still running this long after its phase is cancelled
RESTART_TIMEOUT = 30.0  # a killed app not RUNNING again by then is an error
START_TIMEOUT = 30.0
RSS_LIMIT = 10.0  # % growth that fails the run


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/soak", description="Soak test: mixed traffic through one hubtwist to "
        "apps it supervises, one killed every --kill-every seconds; fails on errors other "
        "than those the kills cause, on RSS growth of 10 % or more, or on fd growth.")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="length of the run, warm-up and settling included (default 10)")
    parser.add_argument("--kill-every", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between two SIGKILLs (default 30; 0: no kills)")
    parser.add_argument("--auth", choices=("none", "token"), default="none",
                        help="none: hubtwist --no-auth (default); token: the standalone token "
                        "gate, every request carrying Authorization: token ...")
    parser.add_argument("--traffic", default=",".join(KINDS), metavar="KINDS",
                        help="comma-separated subset of the traffic, to find what a failure "
                        "or growth comes from (default: all of " + ", ".join(KINDS) + ")")
    parser.add_argument("--warmup", type=float, metavar="SECONDS",
                        help="seconds of traffic before the baseline (default: a sixth of the "
                        "run, at most 60)")
    args = parser.parse_args(argv)
    if args.minutes * 60 < 30:
        parser.error("--minutes must be at least 0.5")
    if args.kill_every < 0:
        parser.error("--kill-every must be 0 or more")
    args.traffic = tuple(kind for kind in args.traffic.split(",") if kind)
    unknown = set(args.traffic) - set(KINDS)
    if unknown or not args.traffic:
        parser.error(f"--traffic takes a comma-separated subset of {', '.join(KINDS)}")
    if args.warmup is None:
        args.warmup = min(60.0, args.minutes * 60 / 6)
    return args


# --- hubtwist and its apps ------------------------------------------------------------------

def hubtwist_command() -> tuple[list[str], dict[str, str]]:
    """C{python -m hubtwist} from this checkout, or C{$BENCH_HUBTWIST} (e.g. the frozen
    binary) when set. Unlike bench/run, an installed console script is not used: the soak
    test is about this checkout's code."""
    quiet = {"PYTHONDONTWRITEBYTECODE": "1"}
    if os.environ.get("BENCH_HUBTWIST"):
        return shlex.split(os.environ["BENCH_HUBTWIST"]), quiet
    return [sys.executable, "-m", "hubtwist"], {**quiet, "PYTHONPATH": str(REPO_DIR)}


def write_config(path: Path) -> None:
    """The apps: httpapp.py on a port and on a unix socket, wsapp.py on both. min_uptime is
    short so that the kills never add up to FATAL: restarting is what is tested."""
    apps = REPO_DIR / "tests" / "apps"
    lines = ["# Generated by bench/harness/soak.py; rewritten on every run."]
    for name, (script, where) in {
        **{name: ("httpapp.py", where) for name, where in HTTP_APPS.items()},
        **{name: ("wsapp.py", where) for name, where in WS_APPS.items()},
    }.items():
        flag = ["--port", "{port}"] if where == "port" else ["--unix-socket", "{unix_socket}"]
        command = [sys.executable, str(apps / script), *flag]
        lines += [
            "", f"[servers.{name}]",
            "command = [" + ", ".join(json.dumps(part) for part in command) + "]",
            *(["unix_socket = true"] if where == "unix_socket" else []),
            "autostart = true", "min_uptime = 1", "stop_timeout = 3",
        ]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Hubtwist:
    proc: Proc
    port: int
    token: str | None
    version: str


def start_hubtwist(auth: str) -> Hubtwist:
    argv, extra_env = hubtwist_command()
    config = SCRATCH / "soak" / "hubtwist-soak.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    write_config(config)
    port = free_port()
    token = os.urandom(16).hex() if auth == "token" else None
    if token:
        extra_env["HUBTWIST_TOKEN"] = token  # not on the command line, where ps shows it
    # --allow-root: as root in a container hubtwist would otherwise switch to uid 1000.
    proc = Proc("soak-hubtwist", [
        *argv, "--allow-root", "--mode", "standalone", *([] if token else ["--no-auth"]),
        "--config", str(config), "--listen", f"tcp:{port}:interface={LOOPBACK}",
    ], env=child_env(**extra_env), cwd=REPO_DIR)
    proc.wait_for_port(port, START_TIMEOUT)
    git = ["git", "--no-optional-locks", "-C", str(REPO_DIR)]
    commit = command_output([*git, "rev-parse", "--short", "HEAD"])
    dirty = command_output([*git, "status", "--porcelain", "--untracked-files=no"])
    version = command_output([*argv, "--version"], env=child_env(**extra_env))
    how = "$BENCH_HUBTWIST" if os.environ.get("BENCH_HUBTWIST") else "python -m hubtwist"
    return Hubtwist(proc, port, token,
                    f"{version} (git {commit}{'+dirty' if dirty else ''}, via {how})")


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


# --- the run ------------------------------------------------------------------------------

@dataclass
class Sample:
    label: str
    t: float  # seconds since the traffic started
    rss_mib: float
    fds: int
    quiet: bool  # taken in a settle (no traffic), so comparable


@dataclass
class Soak:
    """The run's state and its outcome."""

    hub: Hubtwist
    args: argparse.Namespace
    traffic: Traffic
    t0: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    harness_fds: list[int] = field(default_factory=list)
    app_pids: set[int] = field(default_factory=set)
    phases: dict[str, float] = field(default_factory=dict)
    plan: Plan | None = None
    crashed: str | None = None  # why the run ended early: hubtwist exited

    @property
    def pid(self) -> int:
        return self.hub.proc.pid

    def now(self) -> float:
        return time.monotonic() - self.t0

    def sample(self, label: str, quiet: bool) -> Sample:
        taken = Sample(label, round(self.now(), 1), round(rss_mib(self.pid, whole_tree=False), 2),
                       fd_count(self.pid), quiet)
        self.samples.append(taken)
        log(f"{label}: hubtwist RSS {taken.rss_mib:.1f} MiB, {taken.fds} fds")
        return taken

    def alive(self) -> None:
        if self.hub.proc.popen.poll() is not None:
            raise TargetFailed(f"hubtwist exited with status {self.hub.proc.popen.returncode} "
                               f"(its log: {self.hub.proc.log_path})")

    async def servers(self) -> dict[str, dict]:
        answer = await get_json(self.traffic, "/api/servers")
        return {server["name"]: server for server in answer["servers"]}

    async def all_running(self, timeout: float) -> None:
        """Wait until every app is RUNNING (they start with hubtwist, autostart)."""
        deadline = time.monotonic() + timeout
        while True:
            self.alive()
            try:
                states = await self.servers()
            except (OpError, OSError) as error:
                if time.monotonic() > deadline:
                    raise TargetFailed(f"hubtwist's API does not answer: {error}") from None
                await asyncio.sleep(0.2)
                continue
            self.app_pids.update(s["pid"] for s in states.values() if s["pid"])
            if all(server["state"] == "running" for server in states.values()):
                return
            if time.monotonic() > deadline:
                raise TargetFailed("apps not running within "
                                   f"{timeout:g}s: {json.dumps(states)}")
            await asyncio.sleep(0.2)

    async def phase(self, name: str, seconds: float, extra: list = ()) -> None:
        """Traffic (and C{extra} tasks) until C{seconds} from now; an operation still running
        L{PHASE_GRACE} seconds later is cancelled."""
        log(f"{name}: {seconds:.0f}s of traffic")
        deadline = time.monotonic() + seconds
        tasks = [asyncio.ensure_future(work) for work in [
            *workers(self.traffic, self.plan, list(HTTP_APPS), list(WS_APPS), deadline,
                     self.args.traffic), *extra]]
        watch = asyncio.ensure_future(self.watch(tasks))
        done, pending = await asyncio.wait(tasks, timeout=seconds + PHASE_GRACE)
        watch.cancel()
        for task in pending:
            task.cancel()
        await asyncio.gather(watch, *pending, return_exceptions=True)
        self.alive()
        for task in done:
            if task.exception() is not None:
                error = task.exception()
                if isinstance(error, TargetFailed):
                    raise error
                self.traffic.fail(Failure("harness", "", "a load task", "harness error",
                                          f"{type(error).__name__}: {error}",
                                          time.monotonic(), time.monotonic(), False))
        self.phases[name] = round(seconds, 1)

    async def watch(self, tasks: list[asyncio.Future]) -> None:
        """Stop the phase at once if hubtwist exits (rather than count failures until its
        end)."""
        while self.hub.proc.popen.poll() is None:
            await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()

    async def settle(self, label: str) -> Sample:
        """No traffic until hubtwist's fds are stable, then a comparable sample."""
        await self.all_running(RESTART_TIMEOUT)
        quiet_since = time.monotonic()
        last, stable_since = -1, quiet_since
        while True:
            now, fds = time.monotonic(), fd_count(self.pid)
            if fds != last:
                last, stable_since = fds, now
            elif now - stable_since >= 2 and now - quiet_since >= SETTLE_MIN:
                break
            if now - quiet_since >= SETTLE_MAX:
                log(f"{label}: hubtwist's fd count still changing after {SETTLE_MAX:g}s")
                break
            self.alive()
            await asyncio.sleep(0.25)
        self.harness_fds.append(fd_count(os.getpid()))
        if self.traffic.open_connections:
            log(f"harness: {self.traffic.open_connections} connections still open (a leak)")
        return self.sample(label, quiet=True)

    async def kill(self, app: str) -> None:
        """SIGKILL to the app's process group; wait until hubtwist has it RUNNING again."""
        try:
            status = (await self.servers())[app]
        except (OpError, OSError) as error:
            self.traffic.fail(Failure("restart", app, "GET /api/servers", "API error",
                                      str(error), time.monotonic(), time.monotonic(), False))
            return
        pid = status["pid"]
        if status["state"] != "running" or not pid or parent_of(pid) != self.pid:
            log(f"kill: {app} skipped (state {status['state']}, pid {pid})")
            self.traffic.count("kills skipped (app not running)")
            return
        kill = Kill(app, time.monotonic(), pid)
        self.kills.append(kill)
        os.killpg(pid, signal.SIGKILL)  # the app leads its own process group
        log(f"kill: SIGKILL to {app} (pid {pid})")
        while time.monotonic() < kill.at + RESTART_TIMEOUT:
            await asyncio.sleep(0.1)
            try:
                status = (await self.servers())[app]
            except (OpError, OSError) as error:
                log(f"kill: status of {app}: {error}")
                continue
            if status["state"] == "running" and status["pid"] not in (None, pid):
                kill.restart_seconds = round(time.monotonic() - kill.at, 2)
                kill.new_pid = status["pid"]
                self.app_pids.add(kill.new_pid)
                self.traffic.tally("restart").ok += 1
                log(f"kill: {app} running again after {kill.restart_seconds:.2f}s "
                    f"(pid {kill.new_pid})")
                return
        self.traffic.fail(Failure("restart", app, f"SIGKILL to pid {pid}", "not restarted",
                                  f"state {status['state']} after {RESTART_TIMEOUT:g}s",
                                  kill.at, time.monotonic(), False))

    async def killer(self, until: float) -> None:
        """One kill every --kill-every seconds, round robin, the first half an interval into
        the phase; none in the last seconds, so the last restart is seen under traffic."""
        every = self.args.kill_every
        if not every:
            return
        start = time.monotonic()
        number = 0
        while (at := start + every / 2 + number * every) < until - INJECT_WINDOW - 2:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            await self.kill(KILL_ORDER[number % len(KILL_ORDER)])
            number += 1

    async def sampler(self, until: float) -> None:
        """RSS and fds under load, five times in the phase."""
        step = max(5.0, (until - time.monotonic()) / 6)
        while time.monotonic() + step < until:
            await asyncio.sleep(step)
            self.sample("under load", quiet=False)

    async def run(self) -> None:
        await self.all_running(START_TIMEOUT)
        self.plan = Plan()
        self.t0 = time.monotonic()
        total = self.args.minutes * 60
        await self.phase("warm-up", self.args.warmup)
        await self.settle("baseline")
        until = self.t0 + total - END_ALLOWANCE
        main = max(5.0, until - time.monotonic())
        until = time.monotonic() + main
        await self.phase("main", main, [self.killer(until), self.sampler(until)])
        await self.settle("end")
        self.app_pids.update(s["pid"] for s in (await self.servers()).values() if s["pid"])


# --- the verdict and the report -----------------------------------------------------------

def growth(before: float, after: float) -> float:
    """Growth in % (0 when there is no baseline)."""
    return (after - before) / before * 100 if before else 0.0


def verdict(other_errors: int, rss: tuple[float, float], fds: tuple[int, int]) -> list[str]:
    """Why the run fails (empty: it passes). Pure."""
    reasons = []
    if other_errors:
        reasons.append(f"{other_errors} errors other than injected ones")
    if growth(*rss) >= RSS_LIMIT:
        reasons.append(f"RSS grew {growth(*rss):.1f} % (limit {RSS_LIMIT:g} %)")
    if fds[1] > fds[0]:
        reasons.append(f"open fds grew from {fds[0]} to {fds[1]}")
    return reasons


def nearest_kill(failure: Failure, kills: list[Kill], t0: float) -> str:
    """Where the failure sits relative to the kills, for reading the report."""
    if not kills:
        return "no kills"
    kill = min(kills, key=lambda k: abs(k.at - failure.started))
    return (f"nearest kill: {kill.app} at t={kill.at - t0:.1f}s "
            f"({failure.started - kill.at:+.1f}s from the request's start)")


def summarize(soak: Soak, command: str, left_behind: list[int],
              elapsed: float) -> tuple[dict, int]:
    """The results as a dict (the JSON file) and the exit status."""
    traffic, t0 = soak.traffic, soak.t0
    kinds = {}
    other: list[Failure] = []
    for kind, tally in sorted(traffic.tallies.items()):
        injected = [f for f in tally.failures if is_injected(f, soak.kills)]
        others = [f for f in tally.failures if not is_injected(f, soak.kills)]
        other += others
        kinds[kind] = {"ok": tally.ok, "injected": len(injected), "other": len(others),
                       "injected by error": _by_error(injected),
                       "other by error": _by_error(others)}
    quiet = [s for s in soak.samples if s.quiet]
    base, end = (quiet[0], quiet[-1]) if len(quiet) >= 2 else (None, None)
    rss = (base.rss_mib, end.rss_mib) if base else (0.0, 0.0)
    fds = (base.fds, end.fds) if base else (0, 0)
    reasons = verdict(len(other), rss, fds)
    if base is None:
        reasons.append("no baseline and end samples")
    if soak.crashed:
        reasons.insert(0, soak.crashed)
    if left_behind:
        reasons.append(f"processes left behind after the stop: {left_behind}")
    restarts = [k.restart_seconds for k in soak.kills if k.restart_seconds is not None]
    result = {
        "passed": not reasons,
        "reasons": reasons,
        "command": command,
        "hubtwist": soak.hub.version,
        "auth": soak.args.auth,
        "traffic_kinds": list(soak.args.traffic),
        "machine": report.machine(),
        "elapsed_s": round(elapsed, 1),
        "phases_s": soak.phases,
        "kill_every_s": soak.args.kill_every,
        "inject_window_s": INJECT_WINDOW,
        "traffic": kinds,
        "counters": traffic.counters,
        "kills": [{**asdict(k), "at": round(k.at - t0, 2)} for k in soak.kills],
        "restart_s": {"max": max(restarts), "median": statistics.median(restarts)}
        if restarts else None,
        "samples": [asdict(s) for s in soak.samples],
        "rss_growth_pct": round(growth(*rss), 2) if base else None,
        "fds": {"baseline": fds[0], "end": fds[1]} if base else None,
        "harness": {"fds at each settle": soak.harness_fds,
                    "connections open at the end": traffic.open_connections},
        "hubtwist_log_problems": hubtwist_problems(soak.hub.proc.log_path),
        "other_errors": [
            {**asdict(f), "started": round(f.started - t0, 2), "ended": round(f.ended - t0, 2),
             "context": nearest_kill(f, soak.kills, t0)} for f in other],
    }
    return result, 0 if not reasons else 1


def _by_error(failures: list[Failure]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for failure in failures:
        counts[failure.error] = counts.get(failure.error, 0) + 1
    return counts


def hubtwist_problems(path: Path) -> list[str]:
    """hubtwist's own log lines at error level or above, and tracebacks it logged; the
    apps' output, which hubtwist logs at info level as C{[NAME] line}, is left out (the
    apps log a traceback whenever a client goes away mid-response, as SSE clients do)."""
    try:
        lines = path.read_text(errors="replace").splitlines()[1:]
    except OSError:
        return []
    app_output = re.compile(r"\S+ +info +hubtwist\.supervise: \[(%s)\] " % "|".join(
        [*HTTP_APPS, *WS_APPS]))
    return [line for line in lines if not app_output.match(line) and (
        re.match(r"\S+ +(error|critical) ", line) or "Traceback (most recent" in line)]


def markdown(result: dict) -> str:
    """The short summary: printed, and saved next to the JSON."""
    status = "PASS" if result["passed"] else "FAIL: " + "; ".join(result["reasons"])
    kills = result["kills"]
    restart = result["restart_s"]
    lines = [
        f"# hubtwist soak test: {status}",
        "",
        f"- command: `{result['command']}` (auth: {result['auth']}), {result['hubtwist']}",
        f"- run time {result['elapsed_s']:.0f}s; traffic phases: "
        + ", ".join(f"{name} {seconds:.0f}s" for name, seconds in result["phases_s"].items()),
        f"- kills: {len(kills)} (SIGKILL every {result['kill_every_s']:g}s, round robin "
        f"{', '.join(KILL_ORDER)}); back in "
        + (f"{restart['median']:.2f}s median, {restart['max']:.2f}s max" if restart else "—"),
        f"- injected = 502/503/504, a broken connection or stream, WebSocket close 1006/1011, "
        f"to the killed app, while the operation overlaps [kill, kill + "
        f"{result['inject_window_s']:g}s]",
        *(f"- {line}" for line in result["machine"][:2]),
        "",
        "| traffic | ok | injected | other errors |",
        "|---|---:|---:|---:|",
    ]
    for kind, figures in result["traffic"].items():
        injected, other = (", ".join(f"{error} {count}" for error, count in by_error.items())
                           for by_error in (figures["injected by error"],
                                            figures["other by error"]))
        lines.append(f"| {kind} | {figures['ok']:,} | {figures['injected']}"
                     f"{f' ({injected})' if injected else ''} | {figures['other']}"
                     f"{f' ({other})' if other else ''} |")
    lines += ["", "- " + ", ".join(f"{name}: {value:,}"
                                   for name, value in result["counters"].items()), ""]
    lines += ["| hubtwist sample | t (s) | RSS (MiB) | fds |", "|---|---:|---:|---:|"]
    lines += [f"| {s['label']} | {s['t']:.0f} | {s['rss_mib']:.1f} | {s['fds']} |"
              for s in result["samples"]]
    lines += [
        "",
        f"- RSS growth baseline → end: **{result['rss_growth_pct']:+.1f} %**; fds "
        f"{result['fds']['baseline']} → {result['fds']['end']}" if result["fds"] else
        "- RSS and fd growth: n/a (no baseline and end samples)",
        f"- hubtwist log (bench/.scratch/logs/soak-hubtwist.log): "
        f"{len(result['hubtwist_log_problems'])} lines at error level or tracebacks, "
        "the apps' output aside",
        f"- harness: fds at each settle {result['harness']['fds at each settle']}, "
        f"connections open at the end {result['harness']['connections open at the end']}",
    ]
    lines += [f"  - `{line}`" for line in result["hubtwist_log_problems"][:5]]
    if result["other_errors"]:
        lines += ["", "## Other errors (first 20)"]
        for error in result["other_errors"][:20]:
            lines.append(f"- t={error['started']:.1f}–{error['ended']:.1f}s {error['kind']} "
                         f"`{error['what']}`: **{error['error']}** {error['detail']} "
                         f"({error['context']})")
    return "\n".join(lines) + "\n"


def processes_left(pids: set[int]) -> list[int]:
    """Which of the app pids still exist (not as zombies) after the stop."""
    left = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                    left.append(pid)
        except (OSError, IndexError):
            pass
    return left


def main(argv: list[str]) -> int:
    args = parse(argv)
    install_cleanup()
    for old in LOGS.glob("soak-*.log"):
        old.unlink()
    started = time.monotonic()
    run = report.RunInfo(command=" ".join(["bench/soak", *map(shlex.quote, argv)]))
    soak = None
    try:
        hub = start_hubtwist(args.auth)
        log(f"hubtwist listening on port {hub.port} (pid {hub.proc.pid}), {hub.version}")
        soak = Soak(hub, args, Traffic(hub.port, hub.token))
        asyncio.run(soak.run())
    except TargetFailed as error:
        if soak is None or not soak.t0:
            log(f"cannot run the soak test: {error}")
            return 2
        soak.crashed = str(error)  # during the run: a failed check, with its report
        log(f"run ended early: {error}")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all()
    time.sleep(0.5)  # let the kernel reap what the stop killed
    left = processes_left(soak.app_pids)
    result, status = summarize(soak, run.command, left, time.monotonic() - started)
    text = markdown(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"soak-{run.when:%Y%m%d-%H%M%S}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    log(f"results written to {stem}.md and .json")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
