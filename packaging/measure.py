"""
Measure a hubtwist binary (or `python -m hubtwist`) for docs/benchmarks.md, section Binary:
exec -> listening, idle RSS, and the per-spawn overhead. Loopback only; every process it
starts is stopped. Usage:

    python3 packaging/measure.py dist/hubtwist [dist/hubtwist-onedir/hubtwist] [source]
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HTTPAPP = [sys.executable, os.path.join(ROOT, "tests", "apps", "httpapp.py")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command_of(target: str) -> list[str]:
    return [sys.executable, "-m", "hubtwist"] if target == "source" else [os.path.abspath(target)]


def tree(pid: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(b")", 1)[1].split()[1])
            except OSError:
                pass
    found, frontier = [pid], {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier}
        found += sorted(frontier)
    return found


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def exec_to_listening(target: str, runs: int = 15) -> list[float]:
    times = []
    for _ in range(runs):
        port = free_port()
        started = time.perf_counter()
        process = subprocess.Popen([*command_of(target), "--listen", f"tcp:{port}:interface=127.0.0.1",
                                    "--no-auth", "--allow-root", "--", *HTTPAPP, "--port", "{port}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = started + 20
        while time.perf_counter() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.002)
        times.append(time.perf_counter() - started)
        stop(process)
    return times


def idle_and_spawns(target: str, restarts: int = 10) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        stamps = os.path.join(scratch, "exec-times")
        config = os.path.join(scratch, "apps.toml")
        command = ["/bin/sh", "-c", f'date +%s.%N >> {stamps}; exec "$@"', "sh", *HTTPAPP,
                   "--port", "{port}"]
        with open(config, "w") as f:
            f.write(f'listen = ["tcp:{port}:interface=127.0.0.1"]\nlog_format = "json"\n'
                    f"[servers.app]\ncommand = {json.dumps(command)}\nautostart = true\n"
                    'restart = "always"\nbackoff_initial = 0.05\nbackoff_max = 0.05\n')
        log_path = os.path.join(scratch, "log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen([*command_of(target), "--config", config, "--no-auth", "--allow-root"],
                                       stdout=log, stderr=subprocess.STDOUT, cwd=scratch)
        try:
            def app_pid():
                for _ in range(1000):
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/app/pid", timeout=2) as r:
                            return int(r.read())
                    except OSError:
                        time.sleep(0.01)
                raise RuntimeError("the app never answered")

            pid = app_pid()
            time.sleep(2)  # idle
            ours = [p for p in tree(process.pid) if p != pid and p not in tree(pid)]
            rss = {f"{p} {' '.join(cmdline(p)[1:2])}".strip(): rss_kib(p) for p in ours}
            for _ in range(restarts):
                os.kill(pid, signal.SIGKILL)
                old, pid = pid, app_pid()
                while pid == old:
                    time.sleep(0.01)
                    pid = app_pid()
            guardians = [p for p in tree(process.pid) if cmdline(p)[1:2] == ["_guardian"]
                         or "hubtwist._guardian" in cmdline(p)]
        finally:
            stop(process)
        exec_times = [float(x) for x in open(stamps).read().split()]
        starting = []
        for line in open(log_path):
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("server") == "app" and "-> starting" in record["message"]:
                    stamp, _, ms = record["time"].partition(".")
                    starting.append(time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000)
        overheads = [(e - s) * 1000 for e, s in zip(exec_times, starting)]
        return {"rss_kib": rss, "spawn_overhead_ms": overheads, "guardians": len(guardians)}


def main() -> None:
    for target in sys.argv[1:] or ["dist/hubtwist"]:
        size = None
        if target != "source":
            path = os.path.abspath(target)
            folder = os.path.dirname(path)
            size = (os.path.getsize(path) if not os.path.isdir(os.path.join(folder, "_internal"))
                    else sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs))
        times = exec_to_listening(target)
        other = idle_and_spawns(target)
        print(json.dumps({
            "target": target, "size_bytes": size,
            "exec_to_listening_ms": {"median": round(statistics.median(times) * 1000, 1),
                                     "min": round(min(times) * 1000, 1),
                                     "max": round(max(times) * 1000, 1)},
            "idle_rss_kib": other["rss_kib"],
            "spawn_overhead_ms": {"median": round(statistics.median(other["spawn_overhead_ms"]), 1),
                                  "max": round(max(other["spawn_overhead_ms"]), 1),
                                  "n": len(other["spawn_overhead_ms"])},
            "guardian_processes": other["guardians"],
        }))


if __name__ == "__main__":
    main()
