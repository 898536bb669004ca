"""
Containers with Debian's podman (installed by `bash tests/setup`), without a registry: the
image is the one-file binary on a root filesystem that conf/container/build-image assembles
and imports, and podman's Docker-compatible API (`podman system service`) is what the real
DockerSpawner talks to.

The `image` fixture builds the image once per session under a tag of its own and removes it
at the end; `podman_api` starts `podman system service` on a unix socket in the session's
directory and stops it at the end; every container whose name starts with the session's
PREFIX is removed (`podman rm -f`) at the end, whatever the tests left.

Missing packages fail the tests (run `bash tests/setup`). A podman that is installed but
cannot run a container on this machine skips them, with podman's own error, except in CI
(CI=true), where that fails too.

What this machine needs (docs/deploy.md, "Containers"): `--runtime runc` (crun rejects
cgroups in hybrid mode), `--ulimit`s at or below the current hard limits (root here lacks
CAP_SYS_RESOURCE, and runc fails with "error setting rlimit type 7: operation not
permitted" when podman's defaults would raise them), and `--network host`.
"""

from __future__ import annotations

import os
import pathlib
import resource
import secrets
import shutil
import signal
import subprocess
import time

import pytest

from tests.binary.locate import BINARY, DEFAULT_BINARY
from tests.e2e.conftest import REPO, wait_until

BUILD_IMAGE = REPO / "conf" / "container" / "build-image"
PREFIX = f"hubtwist-test-{secrets.token_hex(3)}"  # this session's containers and image
SETUP_HINT = "run `bash tests/setup` (it installs podman, runc, busybox-static and dockerspawner)"
PODMAN = ["podman", "--runtime", "runc"]


def ulimit_args() -> list[str]:
    """--ulimit options at this process's own limits: runc sets the container's limits and
    may not raise them above the hard ones here (no CAP_SYS_RESOURCE)."""
    args = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        args += ["--ulimit", f"{name}={_limit(which)}:{_limit(which)}"]
    return args


def ulimits() -> list[dict]:
    """The same limits for the Docker API (DockerSpawner's extra_host_config)."""
    return [{"name": name, "soft": _limit(which), "hard": _limit(which)}
            for name, which in (("nofile", resource.RLIMIT_NOFILE),
                                ("nproc", resource.RLIMIT_NPROC))]


# podman (4.3) runs with at most 32768 processes itself (seen in /proc/PID/limits of podman
# and conmon, whatever its caller's limit), and its runtime cannot go above that.
PODMAN_NPROC = 32768


def _limit(which: int) -> int:
    soft, hard = resource.getrlimit(which)
    value = next((v for v in (soft, hard) if v != resource.RLIM_INFINITY), 65536)
    return min(value, PODMAN_NPROC) if which == resource.RLIMIT_NPROC else value


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)


def containers(prefix: str = PREFIX) -> list[str]:
    """Names of the containers (running or not) whose name starts with C{prefix}."""
    result = podman("ps", "-a", "--filter", f"name=^{prefix}", "--format", "{{.Names}}")
    return result.stdout.split()


def remove_containers(prefix: str = PREFIX) -> None:
    names = containers(prefix)
    if names:
        podman("rm", "-f", "-t", "2", *names)


def _prerequisites() -> None:
    if BINARY is None:
        pytest.fail(f"no hubtwist binary at {DEFAULT_BINARY}: {SETUP_HINT} (packaging/build) "
                    "or set HUBTWIST_BINARY", pytrace=False)
    missing = [tool for tool in ("podman", "runc", "busybox") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: {SETUP_HINT}", pytrace=False)


def _unusable(reason: str) -> None:
    message = f"podman cannot run a container on this machine: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class Image:
    """The image built for this session, and how long building it took."""

    def __init__(self, tag: str, build_seconds: float) -> None:
        self.tag = tag
        self.build_seconds = build_seconds


@pytest.fixture(scope="session")
def image(tmp_path_factory):
    """The one-file binary on a minimal root filesystem (conf/container/build-image), tagged
    localhost/PREFIX:latest, after a probe container ran it (`hubtwist --version`)."""
    _prerequisites()
    tag = f"localhost/{PREFIX}:latest"
    started = time.monotonic()
    built = subprocess.run([str(BUILD_IMAGE), "--binary", str(BINARY), "--tag", tag],
                           capture_output=True, text=True, timeout=180)
    build_seconds = time.monotonic() - started
    if built.returncode != 0:
        # The build needs no container runtime (podman import only stores the tarball).
        pytest.fail(f"conf/container/build-image failed:\n{built.stderr}", pytrace=False)
    try:
        probe = podman("run", "--rm", "--network", "host", *ulimit_args(), tag, "--version",
                       timeout=90)
        if probe.returncode != 0 or "hubtwist" not in probe.stdout:
            _unusable((probe.stderr or probe.stdout).strip())
        yield Image(tag, build_seconds)
    finally:
        remove_containers()
        podman("rmi", "-f", tag)


class PodmanAPI:
    """`podman system service` on a unix socket: the Docker-compatible API."""

    def __init__(self, root: pathlib.Path) -> None:
        self.socket = root / "podman.sock"
        self.url = f"unix://{self.socket}"
        self.log = root / "podman-service.log"
        self.process: subprocess.Popen | None = None

    def answers(self) -> bool:
        import docker
        try:
            client = docker.DockerClient(base_url=self.url, timeout=5)
            try:
                return client.ping()
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def start(self) -> None:
        with open(self.log, "w") as log:
            # --time=0: no idle timeout (the service would exit between two spawns).
            self.process = subprocess.Popen(
                [*PODMAN, "system", "service", "--time=0", self.url],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.process.poll() is not None or self.answers(), 30,
                   "podman system service to answer")
        assert self.process.poll() is None, self.log.read_text()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def podman_api(image, tmp_path_factory):
    try:
        import docker  # noqa: F401
        import dockerspawner  # noqa: F401
    except ImportError:
        pytest.fail(f"dockerspawner is not installed: {SETUP_HINT}", pytrace=False)
    api = PodmanAPI(tmp_path_factory.mktemp("podman"))
    try:
        api.start()
        yield api
    finally:
        remove_containers()
        api.stop()


