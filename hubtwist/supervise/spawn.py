"""
Starting an app process: its own session and process group, SIGKILL if hubtwist dies,
another user when configured, and an environment that does not leak the frozen bundle.

Twisted's C{spawnProcess} has no option to start a new session, and its posix_spawn fast
path cannot run code in the child. L{SessionLeaderProcess} therefore always takes Twisted's
fork path and adds C{setsid()} and C{PR_SET_PDEATHSIG} in the child before the exec. The
hooks it overrides (C{Process._trySpawnInsteadOfFork}, C{Process._execChild}) are private to
Twisted; C{tests/unit/test_spawn_internals.py} fails loudly if they change.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import sys
from typing import Mapping

import attrs
from twisted.internet import process

PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL(None, use_errno=True)  # loaded in the parent: the child must not import


@attrs.frozen
class RunAs:
    """The account an app runs as."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


def resolve_user(user: str) -> RunAs:
    """Look up a user by name or numeric uid; C{KeyError} with a sentence when unknown."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise KeyError(f"there is no user {user!r} on this system") from None
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def check_user_allowed(user: str) -> RunAs | None:
    """
    Decide whether hubtwist may run an app as C{user}: as root, anyone who exists; as
    anyone else, only itself (then C{None}: no switch needed). Raises C{PermissionError}
    or C{KeyError} with a sentence otherwise.
    """
    target = resolve_user(user)
    if os.geteuid() == 0:
        return target
    if target.uid == os.geteuid():
        return None
    raise PermissionError(
        f"cannot run the app as {target.name!r}: hubtwist runs as uid {os.geteuid()}, and only "
        "root can start processes as another user. Remove `user`, or start hubtwist as root."
    )


# hubtwist's own credentials, never an app's business: the standalone token (an app holding
# it could use every other app), and the Hub API token, which is also hubtwist's OAuth client
# secret (an app holding it could act as hubtwist towards the Hub). The Hub's token goes to
# servers that set `pass_hub_token`, for apps that call the Hub API themselves.
OWN_TOKEN_VARIABLES = ("HUBTWIST_TOKEN",)
HUB_TOKEN_VARIABLES = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")


def app_environment(
    inherited: Mapping[str, str], extra: Mapping[str, str], run_as: RunAs | None, frozen: bool,
    *, pass_hub_token: bool = False,
) -> dict[str, str]:
    """
    The app's environment: hubtwist's own, less what the frozen bundle injected and less
    hubtwist's credentials (the Hub's token stays with C{pass_hub_token}), plus the
    account's HOME/USER/LOGNAME/SHELL when switching user, plus the server's C{environment}
    (which may set anything, these names included).
    """
    env = dict(inherited)
    for name in OWN_TOKEN_VARIABLES + (() if pass_hub_token else HUB_TOKEN_VARIABLES):
        env.pop(name, None)
    if frozen:
        # PyInstaller points LD_LIBRARY_PATH at its bundle and saves the original.
        original = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if original is None:
            env.pop("LD_LIBRARY_PATH", None)
        else:
            env["LD_LIBRARY_PATH"] = original
        # The bootloader's _PYI_* variables tell a PyInstaller program that it is a child of
        # this bundle (it would reuse our unpacked files): an app must start on its own.
        for name in [name for name in env if name.startswith("_PYI_")]:
            del env[name]
    if run_as is not None:
        env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name, SHELL=run_as.shell)
    env.update(extra)
    return env


def find_executable(command: str, env: Mapping[str, str], cwd: str | None) -> str | None:
    """The program C{command} names, searched on the app's PATH (relative to its cwd)."""
    if os.sep in command:
        path = command if os.path.isabs(command) else os.path.join(cwd or os.getcwd(), command)
        return path if os.access(path, os.X_OK) and os.path.isfile(path) else None
    return shutil.which(command, path=env.get("PATH", os.defpath))


class SessionLeaderProcess(process.Process):
    """A Twisted process that leads its own session and dies with hubtwist."""

    def __init__(self, *args, **kwargs) -> None:
        self._parent_pid = os.getpid()
        super().__init__(*args, **kwargs)

    def _trySpawnInsteadOfFork(self, *args, **kwargs) -> bool:
        return False  # posix_spawn cannot setsid or set PDEATHSIG; take the fork path

    def _execChild(self, path, uid, gid, executable, args, environment):
        os.setsid()
        LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != self._parent_pid:
            os._exit(1)  # hubtwist died between fork and prctl
        super()._execChild(path, uid, gid, executable, args, environment)


def spawn(reactor, protocol, argv: list[str], env: dict[str, str], cwd: str | None,
          run_as: RunAs | None, stdin_fd: int) -> SessionLeaderProcess:
    """
    Start C{argv} as the leader of a new process group (pgid == pid), with stdin from
    C{stdin_fd} (an open /dev/null) and stdout/stderr piped to C{protocol}.
    """
    uid = gid = None
    if run_as is not None:
        uid, gid = run_as.uid, run_as.gid
    return SessionLeaderProcess(
        reactor, argv[0], argv, env, cwd, protocol, uid=uid, gid=gid,
        childFDs={0: stdin_fd, 1: "r", 2: "r"},
    )


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))
