"""
Processes the harness starts, their clean-up, and their memory as /proc reports it.

Every process is started in a session of its own, so that a Ctrl-C in the terminal reaches
only the harness, which then stops each process group it started, newest first.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Sequence

from harness.common import LOGS, TargetFailed, log, mib, port_open

_running: list["Proc"] = []


class Proc:
    """One started process (and its process group), its output going to C{LOGS/NAME.log}."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.argv = list(argv)
        self.log_path = LOGS / f"{name}.log"
        with open(self.log_path, "wb") as output:
            output.write(("$ " + " ".join(self.argv) + "\n").encode())
            output.flush()
            try:
                self.popen = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=output,
                    stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
                )
            except OSError as error:
                raise TargetFailed(f"cannot run {self.argv[0]} ({error.strerror})") from None
        _running.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 3) -> str:
        """The last lines the process printed, on one line, for failure reasons."""
        text = self.log_path.read_text(errors="replace").strip().splitlines()[1:]
        return " | ".join(line.strip() for line in text[-lines:]) or "no output"

    def wait_for_port(self, port: int, timeout: float) -> None:
        """Wait until the process accepts connections on C{port}; L{TargetFailed} if it exits
        or does not within C{timeout} seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise TargetFailed(
                    f"{self.name} exited with status {self.popen.returncode}: {self.tail()}"
                )
            if port_open(port):
                return
            time.sleep(0.1)
        raise TargetFailed(f"{self.name} did not listen on port {port} within {timeout:g}s: "
                           f"{self.tail()}")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the process group, SIGKILL to what is left of it after C{grace} seconds
        (or as soon as the leader is gone), then SIGKILL to any descendant that had moved to
        a group of its own (checked by start time, so a reused pid is left alone)."""
        if self in _running:
            _running.remove(self)
        descendants = []
        if self.popen.poll() is None:
            descendants = [(pid, _start_time(pid)) for pid in process_tree(self.pid)[1:]]
        self._signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)
        self.popen.wait()
        for pid, started in descendants:
            if started is not None and _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass  # the whole group is gone already


def stop_all() -> None:
    """Stop every process the harness started and has not stopped yet, newest first."""
    while _running:
        proc = _running[-1]
        log(f"stopping {proc.name} (pid {proc.pid})")
        proc.stop()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Stop all started processes on exit, on SIGTERM/SIGHUP, and (as KeyboardInterrupt) on
    Ctrl-C."""
    atexit.register(stop_all)
    # Also when started in the background of a script, where SIGINT comes in ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)


def run_bounded(name: str, argv: Sequence[str], timeout: float,
                env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a client (wrk, the WebSocket load client) to completion, killing it after
    C{timeout} seconds; return its exit status and output."""
    proc = Proc(name, argv, env=env)
    try:
        proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TargetFailed(f"{name} did not finish within {timeout:g}s") from None
    finally:
        proc.stop()
    return proc.popen.returncode, proc.log_path.read_text(errors="replace")


# --- memory -------------------------------------------------------------------------------

def _status_kib(pid: int, field: str) -> int:
    """A C{kB} field (VmRSS, VmHWM) of /proc/PID/status; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:  # gone
        pass
    return 0


def _start_time(pid: int) -> int | None:
    """When a process started (clock ticks after boot, /proc/PID/stat field 22); None when
    it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_tree(root: int) -> list[int]:
    """C{root} and all its descendants, from the parent ids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # The command name may hold spaces and parentheses: split after the last ')'.
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(root: int, whole_tree: bool = True) -> float:
    """CPU time (user + system) C{root} (and its descendants) have used so far, in seconds
    (/proc/PID/stat fields 14 and 15)."""
    ticks = 0
    for pid in process_tree(root) if whole_tree else [root]:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):  # gone
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuTime:
    """The CPU time a process (tree) uses during a C{with} block: L{seconds}."""

    def __init__(self, root: int, whole_tree: bool = True) -> None:
        self.root = root
        self.whole_tree = whole_tree
        self.seconds = 0.0

    def __enter__(self) -> "CpuTime":
        self._start = cpu_seconds(self.root, self.whole_tree)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.seconds = cpu_seconds(self.root, self.whole_tree) - self._start


def rss_mib(root: int, whole_tree: bool = True) -> float:
    """Resident memory of C{root} (and its descendants), in MiB (sum of VmRSS)."""
    pids = process_tree(root) if whole_tree else [root]
    return mib(1024 * sum(_status_kib(pid, "VmRSS") for pid in pids))


class PeakMemory:
    """
    Samples the VmRSS sum of a process (tree) every C{interval} seconds while in a C{with}
    block. L{peak_mib} is the largest sample, or the root's VmHWM when that is larger (the
    kernel's high-water mark catches peaks between samples; exact for one-process peers).
    """

    def __init__(self, root: int, whole_tree: bool = True, interval: float = 0.1) -> None:
        self.root = root
        self.whole_tree = whole_tree
        self.interval = interval
        self._peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        pids = process_tree(self.root) if self.whole_tree else [self.root]
        while not self._stop.is_set():
            total = sum(_status_kib(pid, "VmRSS") for pid in pids)
            self._peak_kib = max(self._peak_kib, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak_kib = max(self._peak_kib, _status_kib(self.root, "VmHWM"))

    @property
    def peak_mib(self) -> float:
        return mib(1024 * self._peak_kib)
