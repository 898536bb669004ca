"""
Idempotent installers for the tools the benchmark needs.

Debian packages go to the system (apt-get, only when a command is missing); everything
else goes to C{bench/.scratch/}: one npm prefix per Node tool and a virtualenv for
jupyter-server-proxy. A stamp file records the package spec each scratch install was made
from, so changing a spec (see the C{BENCH_*_SPEC} variables) reinstalls it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.common import LOGS, REPO_DIR, SCRATCH, TargetFailed, log

INSTALL_TIMEOUT = 900  # seconds for any one install command
_SYSTEM_PATH = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"

CHP_SPEC = os.environ.get("BENCH_CHP_SPEC", "configurable-http-proxy")
JSP_SPEC = os.environ.get("BENCH_JSP_SPEC", "jupyter-server-proxy[standalone]")
WS_SPEC = os.environ.get("BENCH_WS_SPEC", "ws")
# The Hub mode's JupyterHub and the single-user server users run today (pip specs, spaces
# between them): the Hub itself and jupyterhub-singleuser + jupyter-server-proxy.
HUB_SPEC = os.environ.get("BENCH_HUB_SPEC", "jupyterhub jupyter-server-proxy jupyter_server")

CHP_PREFIX = SCRATCH / "chp"
WS_PREFIX = SCRATCH / "ws"
JSP_VENV = SCRATCH / "jsp-venv"
HUB_VENV = SCRATCH / "hub-venv"


def system_command(name: str) -> str | None:
    """Full path of a system command, looking in the sbin directories too (nginx)."""
    return shutil.which(name, path=_SYSTEM_PATH)


def _run(what: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run an install command, its output in C{LOGS/install-WHAT.log}; L{TargetFailed}
    with the end of that log when it fails."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"install-{what}.log"
    log(f"installing {what}: {' '.join(argv)}")
    with open(log_path, "ab") as output:
        try:
            status = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=output,
                                    stderr=subprocess.STDOUT, env=env,
                                    timeout=INSTALL_TIMEOUT).returncode
        except (OSError, subprocess.TimeoutExpired) as error:
            raise TargetFailed(f"installing {what} failed ({error})") from None
    if status != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-2:]
        raise TargetFailed(f"installing {what} failed (status {status}): {' | '.join(tail)}")


def ensure_debian(commands: dict[str, str]) -> None:
    """Make sure each command exists, installing the Debian package named for it otherwise.
    The package's service is not started (C{RUNLEVEL=1} keeps invoke-rc.d from it)."""
    missing = sorted({package for command, package in commands.items()
                      if system_command(command) is None})
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    _run("apt-update", sudo + ["apt-get", "update", "-q"], env)
    _run("apt", sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
         env)
    still_missing = [command for command in commands if system_command(command) is None]
    if still_missing:
        raise TargetFailed(f"still missing after apt-get install: {', '.join(still_missing)}")


def _stamped(directory: Path, spec: str) -> bool:
    stamp = directory / ".bench-spec"
    return stamp.is_file() and stamp.read_text() == spec


def _stamp(directory: Path, spec: str) -> None:
    (directory / ".bench-spec").write_text(spec)


def ensure_npm(prefix: Path, spec: str, entry: str) -> Path:
    """C{npm install --prefix PREFIX SPEC} unless done already; return C{PREFIX/ENTRY}."""
    target = prefix / entry
    if not (target.exists() and _stamped(prefix, spec)):
        if shutil.which("npm") is None:
            ensure_debian({"npm": "npm", "node": "nodejs"})
        prefix.mkdir(parents=True, exist_ok=True)
        _run(prefix.name, ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
                           spec])
        if not target.exists():
            raise TargetFailed(f"npm install {spec} did not provide {target}")
        _stamp(prefix, spec)
    return target


def ensure_chp() -> Path:
    """The configurable-http-proxy executable (a Node script)."""
    return ensure_npm(CHP_PREFIX, CHP_SPEC, "node_modules/.bin/configurable-http-proxy")


def ensure_ws() -> Path:
    """The C{node_modules} directory that holds the npm C{ws} package."""
    return ensure_npm(WS_PREFIX, WS_SPEC, "node_modules/ws").parent


def ensure_jsp() -> Path:
    """The C{jupyter} executable of the virtualenv that has jupyter-server-proxy."""
    jupyter = JSP_VENV / "bin" / "jupyter"
    if not ((JSP_VENV / "bin" / "jupyter-standaloneproxy").exists()
            and _stamped(JSP_VENV, JSP_SPEC)):
        if not (JSP_VENV / "bin" / "python").exists():
            _run("jsp-venv", [sys.executable, "-m", "venv", str(JSP_VENV)])
        _run("jsp-venv", [str(JSP_VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", JSP_SPEC])
        _stamp(JSP_VENV, JSP_SPEC)
    return jupyter


def ensure_hub() -> Path:
    """The virtualenv with JupyterHub, jupyter_server and jupyter-server-proxy (its C{bin})."""
    bin_dir = HUB_VENV / "bin"
    if not ((bin_dir / "jupyterhub-singleuser").exists() and _stamped(HUB_VENV, HUB_SPEC)):
        if not (bin_dir / "python").exists():
            _run("hub-venv", [sys.executable, "-m", "venv", str(HUB_VENV)])
        _run("hub-venv", [str(bin_dir / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", *HUB_SPEC.split()])
        _stamp(HUB_VENV, HUB_SPEC)
    return bin_dir


TESTS_CHP = REPO_DIR / "tests/.node/node_modules/.bin/configurable-http-proxy"  # tests/setup's


def ensure_all(mode: str) -> None:
    """Install what C{mode} needs up front, so that install time is not benchmark time.
    A peer whose install fails is reported as failed later; missing nginx or wrk is fatal."""
    tools = {
        "http": {"nginx": "nginx", "wrk": "wrk"},
        "ws": {"nginx": "nginx", "node": "nodejs"},
        "hub": {"nginx": "nginx", "wrk": "wrk", "node": "nodejs"},
        "front": {"nginx": "nginx", "wrk": "wrk"},
        "front-ws": {"node": "nodejs"},
    }[mode]
    ensure_debian(tools)
    installers = {
        "http": [ensure_chp, ensure_jsp],
        "ws": [ensure_chp, ensure_jsp, ensure_ws],
        "hub": [ensure_chp, ensure_hub, ensure_ws],
        "front": [] if TESTS_CHP.exists() else [ensure_chp],
        "front-ws": [ensure_ws, *([] if TESTS_CHP.exists() else [ensure_chp])],
    }[mode]
    for installer in installers:
        try:
            installer()
        except TargetFailed as error:
            log(f"warning: {error}")
