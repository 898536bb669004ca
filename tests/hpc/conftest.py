"""
One-node Slurm (Debian's slurm-wlm + munge, configured by `bash tests/setup`) and a real
JupyterHub whose spawner is batchspawner's SlurmSpawner: users' servers run as Slurm jobs
on this machine.

The `slurm` fixture starts munged, slurmctld and slurmd in the foreground as its own
children (never as system services), waits until `sinfo` shows the node idle and `sbatch`
runs a job, and at the end cancels every job it saw and stops what it started. Daemons that
already run (a machine that is a Slurm node) are used and left alone. Missing packages or
configuration fail the tests (never skip them): run `bash tests/setup`.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.e2e import conftest as e2e
from tests.e2e.conftest import wait_until
from tests.helpers import processes_with

SLURM_CONF = pathlib.Path("/etc/slurm/slurm.conf")
MARKER = "written by hubtwist tests/setup"
NODE = "localhost"
SETUP_HINT = "run `bash tests/setup` (it installs slurm-wlm and munge and writes a one-node slurm.conf)"
BIN = pathlib.Path(sys.executable).parent  # this Python's scripts: hubtwist, batchspawner-singleuser


def _run(*command: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _munge_works() -> bool:
    try:
        encoded = _run("munge", "-n")
        return encoded.returncode == 0 and subprocess.run(
            ["unmunge"], input=encoded.stdout, capture_output=True, text=True,
            timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _controller_answers() -> bool:
    try:
        return _run("scontrol", "ping").stdout.count("UP") > 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def node_state() -> str:
    """The node's state as sinfo prints it (idle, mix, alloc, down*, ...), '' when unknown."""
    try:
        return _run("sinfo", "-h", "-n", NODE, "-o", "%t").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def queue(job_id: str | None = None) -> list[tuple[str, str, str, str]]:
    """(job id, name, state, node) of the jobs in the queue, or of one job."""
    command = ["squeue", "-h", "-o", "%i|%j|%T|%B"] + (["-j", job_id] if job_id else [])
    result = _run(*command)
    return [tuple(line.split("|")) for line in result.stdout.splitlines() if line.count("|") == 3]


class Slurm:
    """The daemons this fixture started (and stops) and the jobs the tests ran."""

    def __init__(self, logs: pathlib.Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen]] = []
        self.seen_jobs: set[str] = set()

    def _start(self, name: str, command: list[str], user: str | None = None) -> None:
        log = open(self.logs / f"{name}.log", "w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   user=user, start_new_session=True)
        log.close()
        self.started.append((name, process))

    def _check_alive(self) -> None:
        for name, process in self.started:
            assert process.poll() is None, \
                f"{name} exited ({process.returncode}):\n{(self.logs / f'{name}.log').read_text()}"

    def start(self) -> None:
        if not _munge_works():
            pathlib.Path("/run/munge").mkdir(mode=0o755, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            self._start("munged", ["munged", "--foreground"], user="munge")
            wait_until(lambda: self._check_alive() or _munge_works(), 20, "munged")
        if not _controller_answers():
            # -i: ignore a state file a killed controller left (its jobs are long gone).
            self._start("slurmctld", ["slurmctld", "-D", "-i"])
            wait_until(lambda: self._check_alive() or _controller_answers(), 30, "slurmctld")
        if node_state() not in ("idle", "mix", "alloc"):
            self._start("slurmd", ["slurmd", "-D", "-N", NODE])
            # A node that was down (a killed slurmd) comes back with ReturnToService=2.
            wait_until(lambda: self._check_alive() or node_state() == "idle", 30,
                       f"sinfo to show {NODE} idle (it shows {node_state()!r})")

    def stop(self) -> None:
        """Cancel the jobs the tests ran (every job, when the controller is this fixture's),
        then SIGTERM (later SIGKILL) what was started."""
        if any(name == "slurmctld" for name, _ in self.started) and _controller_answers():
            self.seen_jobs |= {job for job, *_ in queue()}
        for job in self.seen_jobs:
            _run("scancel", job)
        wait_until(lambda: not any(job in self.seen_jobs for job, *_ in queue()), 30,
                   "the tests' jobs to leave the queue")
        for name, process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _prerequisites() -> None:
    missing = [tool for tool in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")
               if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: {SETUP_HINT}", pytrace=False)
    if not SLURM_CONF.exists():
        pytest.fail(f"{SLURM_CONF} is missing: {SETUP_HINT}", pytrace=False)
    try:
        import batchspawner  # noqa: F401
    except ImportError:
        pytest.fail(f"batchspawner is not installed: {SETUP_HINT}", pytrace=False)
    e2e._prerequisites()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running one-node Slurm: `sinfo` shows the node idle and `sbatch` has run a job."""
    _prerequisites()
    instance = Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        instance.start()
        out = instance.logs / "probe.out"
        job = _run("sbatch", "--parsable", "--job-name=hubtwist-probe", f"--output={out}",
                   "--wrap", "echo probe on $(hostname)").stdout.strip()
        assert job.isdigit(), f"sbatch did not submit a job: {job!r}"
        instance.seen_jobs.add(job)
        wait_until(lambda: not queue(job) and out.exists() and "probe on" in out.read_text(),
                   30, "the probe job to run")
    except BaseException:
        instance.stop()
        raise
    yield instance
    instance.stop()


def slurm_hub_config(hub: e2e.Hub, users: dict[str, tuple]) -> str:
    """
    The lines that make C{hub} spawn through SlurmSpawner: for each user, the
    C{batchspawner_singleuser_cmd} (the wrapper, or '' for none), C{Spawner.cmd}, and
    optionally a dict of other spawner traits to set.
    """
    env = e2e._clean_environment()
    return textwrap.dedent(f"""
        # -- batchspawner: each user's server is a Slurm job on this machine --------------
        from batchspawner import SlurmSpawner
        from traitlets import default

        class TestSlurmSpawner(SlurmSpawner):
            # The tests' users have no Unix accounts (the job runs as root, exec_prefix ""):
            # their HOME and the job's directory are under the Hub's directory.
            def user_env(self, env):
                env["USER"] = self.user.name
                env["HOME"] = root + "/home/" + self.user.name
                return env

            @default("req_homedir")
            def _req_homedir_default(self):
                return root + "/home/" + self.user.name

        CASES = {json.dumps(users)}

        def per_user(spawner):
            spawner.batchspawner_singleuser_cmd, spawner.cmd, *traits = CASES[spawner.user.name]
            for name, value in (traits[0] if traits else {{}}).items():
                setattr(spawner, name, value)

        c.JupyterHub.spawner_class = TestSlurmSpawner
        c.Spawner.pre_spawn_hook = per_user
        c.SlurmSpawner.exec_prefix = ""
        c.SlurmSpawner.startup_poll_interval = 0.2
        c.Spawner.start_timeout = 90
        # JupyterHub 6 passes no PATH to the job (it gets root's login PATH): say it.
        c.Spawner.environment = {{
            "PATH": {f"{BIN}:/usr/local/bin:/usr/bin:/bin"!r},
            "PYTHONPATH": {env["PYTHONPATH"]!r},
            "HUBTWIST_ALLOW_ROOT": "1",
            "JUPYTERHUB_ACTIVITY_INTERVAL": "{e2e.ACTIVITY_INTERVAL}",
        }}
        """)


class SlurmHub(e2e.Hub):
    """The e2e Hub, spawning users' servers as Slurm jobs (see L{slurm_hub_config})."""

    def __init__(self, root: pathlib.Path, users: dict[str, tuple]) -> None:
        super().__init__(root)
        self.users = users

    def write_config(self) -> pathlib.Path:
        config = super().write_config()
        for user in self.users:
            (self.root / "home" / user).mkdir(parents=True, exist_ok=True)
        with config.open("a") as file:
            file.write(slurm_hub_config(self, self.users))
        return config

    def job_log(self, user: str) -> str:
        logs = sorted((self.root / "home" / user).glob("jupyterhub_slurmspawner_*.log"))
        return "\n".join(f"== {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in logs)

    def job_processes(self, user: str) -> list[int]:
        """Live processes of C{user}'s job: their environment names this Hub's API and her."""
        return processes_with(f"127.0.0.1:{self.hub_port}/".encode(),
                              f"JUPYTERHUB_USER={user}\0".encode())
