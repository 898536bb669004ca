"""
C{--user NAME|UID[:GID]}: started as root, hubtwist prepares the account's home directory
and then drops root for good (supplementary groups, gid, uid) before it listens or starts
an app. Everything it starts afterwards (apps, the guardian) runs as that account.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import sys

import attrs

PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2


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


def _hand_over_bundle(account: Account) -> None:
    """The one-file binary runs from a directory the bootloader unpacked as root (0700):
    the dropped process and the guardian it starts must still read it."""
    bundle = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or not bundle:
        return
    if not os.path.basename(bundle).startswith("_MEI"):
        return  # one-directory build: files installed with the binary
    for root, dirs, files in os.walk(bundle):
        for name in [root, *(os.path.join(root, item) for item in dirs + files)]:
            os.lchown(name, account.uid, account.gid)


def drop_privileges(spec: str) -> tuple[Account, bool]:
    """Become C{spec} for good. As root: prepare the home, drop groups, gid and uid, and
    check that root cannot be regained. As that account already: nothing to do. Anyone
    else: C{PermissionError}. Returns the account and whether the home was created."""
    account = resolve_account(spec)
    if os.geteuid() != 0:
        if account.uid == os.geteuid():
            return account, False
        raise PermissionError(f"--user {spec}: hubtwist runs as uid {os.geteuid()}; only root "
                              "can become another user")
    created = prepare_home(account)
    _hand_over_bundle(account)
    # The kernel clears the parent-death signal when credentials change; the one-file
    # binary's child relies on it (packaging/hubtwist_entry.py): set it again.
    libc = ctypes.CDLL(None, use_errno=True)
    death_signal, parent = ctypes.c_int(0), os.getppid()
    libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(death_signal), 0, 0, 0)
    os.setgroups(list(account.groups))
    os.setgid(account.gid)
    os.setuid(account.uid)
    if death_signal.value:
        libc.prctl(PR_SET_PDEATHSIG, death_signal.value, 0, 0, 0)
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
