"""
Root and users.

C{--user NAME|UID[:GID]}: started as root, hubtwist prepares the account's home directory
(and missing working directories of its apps under it) and then drops root for good
(supplementary groups, gid, uid) before it listens or starts an app. Everything it starts
afterwards (apps, the guardian) runs as that account.

Without C{--user}, a root hubtwist in a container becomes the image's notebook user
(L{container_default_user}), and apps never run as root unless C{--allow-root} (or
C{HUBTWIST_ALLOW_ROOT=1}) says so (L{servers_running_as_root}).
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import sys

import attrs

from hubtwist.supervise.spawn import LIBC, PR_SET_PDEATHSIG, is_frozen

PR_GET_PDEATHSIG = 2

# Jupyter's docker-stacks images: the notebook user is uid 1000 in group 100 ("users").
CONTAINER_UID, CONTAINER_GID = 1000, 100


@attrs.frozen
class Account:
    name: str
    uid: int
    gid: int
    home: str | None
    groups: tuple[int, ...]


def resolve_account(spec: str) -> Account:
    """C{NAME}, C{UID}, C{NAME:GID} or C{UID:GID} (GID a number or a group name) -> the
    account; a uid without a passwd entry is allowed (containers). C{KeyError} with a
    sentence for unknown names."""
    user, _, group = spec.partition(":")
    entry = None
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if not user.isdigit():
            raise KeyError(f"--user: there is no user {user!r} on this system") from None
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise KeyError(f"--user: there is no group {group!r} on this system") from None
    else:
        gid = entry.pw_gid if entry else int(user)
    if entry is None:
        return Account(user, int(user), gid, None, (gid,))
    groups = tuple(dict.fromkeys([gid, *os.getgrouplist(entry.pw_name, gid)]))
    return Account(entry.pw_name, entry.pw_uid, gid, entry.pw_dir, groups)


def prepare_home(account: Account) -> bool:
    """Create the account's home directory (0750, owned by it) when it is missing; True
    when created. An existing one is left as it is."""
    if not account.home or os.path.isdir(account.home):
        return False
    os.makedirs(os.path.dirname(account.home), mode=0o755, exist_ok=True)
    os.mkdir(account.home, 0o750)
    os.chown(account.home, account.uid, account.gid)
    return True


def prepare_workspaces(account: Account, directories) -> list[str]:
    """Create the missing C{directories} that lie under the account's home, owned by it
    (each level created); the ones created. Others are left for the app to report."""
    if not account.home:
        return []
    home = os.path.realpath(account.home)
    created = []
    for directory in directories:
        path = os.path.realpath(os.path.expanduser(directory))
        if os.path.commonpath([home, path]) != home or os.path.isdir(path):
            continue
        missing = []
        while not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        for path in reversed(missing):
            os.mkdir(path, 0o750)
            os.chown(path, account.uid, account.gid)
            created.append(path)
    return created


def in_container(environ, exists=os.path.exists) -> bool:
    """Whether this process runs in a container: Docker's C{/.dockerenv}, Podman's
    C{/run/.containerenv}, Kubernetes' C{$KUBERNETES_SERVICE_HOST}, or C{$container}
    (set by container managers, systemd's convention)."""
    return bool(environ.get("container") or environ.get("KUBERNETES_SERVICE_HOST")
                or exists("/.dockerenv") or exists("/run/.containerenv"))


def container_default_user(environ, uid_exists=None) -> str | None:
    """
    The C{--user} a root hubtwist takes in a container when none is given: C{$NB_UID}
    (with C{$NB_GID}, docker-stacks' variables), else uid 1000 with gid 100 when the image
    has that user; C{None} when neither applies.
    """
    if uid_exists is None:
        uid_exists = _uid_exists
    uid, gid = environ.get("NB_UID", ""), environ.get("NB_GID", "")
    if uid.isdigit() and int(uid) != 0:
        return f"{uid}:{gid}" if gid.isdigit() else uid
    if uid_exists(CONTAINER_UID):
        return f"{CONTAINER_UID}:{CONTAINER_GID}"
    return None


def _uid_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def servers_running_as_root(config, euid: int) -> list[str]:
    """The servers whose app would run as root: hubtwist is root (C{euid} 0) and the server
    has a command and either no C{user} or a C{user} that is root."""
    if euid != 0:
        return []
    from hubtwist.supervise.spawn import resolve_user

    names = []
    for name, server in config.servers.items():
        if not server.command:
            continue
        if server.user is None:
            names.append(name)
            continue
        try:
            if resolve_user(server.user).uid == 0:
                names.append(name)
        except KeyError:
            pass  # the supervisor reports an unknown user when it starts the server
    return names


def _hand_over_bundle(account: Account) -> None:
    """The one-file binary runs from a directory the bootloader unpacked as root (0700):
    the dropped process and the guardian it starts must still read it."""
    bundle = getattr(sys, "_MEIPASS", None)
    if not is_frozen() or not bundle:
        return
    if not os.path.basename(bundle).startswith("_MEI"):
        return  # one-directory build: files installed with the binary
    for root, dirs, files in os.walk(bundle):
        for name in [root, *(os.path.join(root, item) for item in dirs + files)]:
            os.lchown(name, account.uid, account.gid)


def drop_privileges(spec: str, workspaces=()) -> tuple[Account, list[str]]:
    """Become C{spec} for good. As root: prepare the home and the C{workspaces} under it
    (L{prepare_workspaces}), drop groups, gid and uid, and check that root cannot be
    regained. As that account already: nothing to do. Anyone else: C{PermissionError}.
    Returns the account and the directories created."""
    account = resolve_account(spec)
    if os.geteuid() != 0:
        if account.uid == os.geteuid():
            return account, []
        raise PermissionError(f"--user {spec}: hubtwist runs as uid {os.geteuid()}; only root "
                              "can become another user")
    created = [account.home] if prepare_home(account) else []
    created += prepare_workspaces(account, workspaces)
    _hand_over_bundle(account)
    # The kernel clears the parent-death signal when credentials change; the one-file
    # binary's child relies on it (packaging/hubtwist_entry.py): set it again.
    death_signal, parent = ctypes.c_int(0), os.getppid()
    LIBC.prctl(PR_GET_PDEATHSIG, ctypes.byref(death_signal), 0, 0, 0)
    os.setgroups(list(account.groups))
    os.setgid(account.gid)
    os.setuid(account.uid)
    if death_signal.value:
        LIBC.prctl(PR_SET_PDEATHSIG, death_signal.value, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), death_signal.value)
    if account.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:  # pragma: no cover - the kernel would have to be broken
            raise PermissionError("--user: root could be regained after dropping it")
    if account.home:
        os.environ.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
    return account, created
