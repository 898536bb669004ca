"""
Root and users.

C{--user NAME|UID[:GID]}: started as root, hubtwist prepares the account's home directory
(and missing working directories of its apps under it) and then drops root for good
(supplementary groups, gid, uid) before it listens or starts an app. Everything it starts
afterwards (apps, the guardian) runs as that account.

Without C{--user}, a root hubtwist in a container becomes the image's notebook user
(L{container_default_user}), and apps never run as root unless C{--allow-root} (or
C{HUBTWIST_ALLOW_ROOT=1}) says so (L{servers_running_as_root}).

After the drop, the files hubtwist runs from must still be usable by that account: Python
and the modules may live where only root can read (a Python under C{/root}, mode 0700).
So, while still root, hubtwist imports what it would import lazily (L{preload}) and checks
that the account can reach the interpreter, its library and every directory modules were
loaded from (L{runtime_needs}, L{first_blocked}); if not, it refuses with one sentence
(L{RuntimeUnreachable}) instead of failing later with an import error.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import grp
import importlib
import locale
import os
import pwd
import stat
import sys
import sysconfig
from typing import Callable, Iterable

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


# -- what the account needs after the drop ----------------------------------------------------

# Imported before root is dropped, besides what hubtwist's modules import at their top: the
# reactor (installed by task.react), and what is imported inside functions (Twisted's TLS
# for the Hub client, the idna package for host names).
PRELOAD_MODULES = ("hubtwist.app", "hubtwist.logs", "hubtwist.systemd", "hubtwist.web.metrics",
                   "twisted.internet.reactor", "twisted.internet.ssl", "twisted.internet._idna",
                   "twisted.web.client", "idna")
# A codec is imported when its name is first looked up (encodings.idna for host names,
# charmap for Twisted's header bytes); the lookup caches it for good.
PRELOAD_CODECS = ("ascii", "latin-1", "utf-8", "utf-16", "utf-32", "charmap", "idna", "punycode")
# Endpoint types Twisted parses itself; the others (systemd:, tcp6:, tls:) are plugins it finds
# by importing twisted/plugins/*.
_BUILTIN_ENDPOINTS = ("tcp", "unix", "ssl")


def preload(listen: Iterable[str] = ()) -> None:
    """Import now, as root, what hubtwist would otherwise import after the drop (and look up
    the codecs it uses), so that a lazy import cannot fail then; the directories they come
    from are then among those L{runtime_needs} lists. C{listen}: the endpoint descriptions."""
    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional dependency (TLS without pyOpenSSL)
            pass
    for encoding in (*PRELOAD_CODECS, locale.getpreferredencoding(False),
                     sys.getfilesystemencoding()):
        try:
            codecs.lookup(encoding)
        except LookupError:
            pass
    if any(description.split(":", 1)[0] not in _BUILTIN_ENDPOINTS for description in listen):
        from twisted.internet.interfaces import IStreamServerEndpointStringParser
        from twisted.plugin import getPlugins

        list(getPlugins(IStreamServerEndpointStringParser))


@attrs.frozen
class Need:
    """A file or directory the dropped process, or one it starts, uses: access(2) must grant
    C{mode} on C{path}; C{what} names it in a refusal."""
    path: str
    mode: int
    what: str


def runtime_needs(modules=None) -> list[Need]:
    """
    What hubtwist and the processes it starts with C{sys.executable} (the guardian, the demo)
    use from the disk once root is dropped: the interpreter, its shared library, the
    standard library, and every directory a loaded module (C{modules}, default
    C{sys.modules}) came from together with the C{sys.path} entry above it (where the
    guardian finds hubtwist again). Frozen: the binary, and the directory it unpacks into
    (the bundle itself is handed over, L{_hand_over_bundle}).
    """
    if not sys.executable:
        return []  # an embedded interpreter: nothing is started with it
    executable = os.path.abspath(sys.executable)
    if is_frozen():
        needs = [Need(executable, os.R_OK | os.X_OK, "the hubtwist binary")]
        bundle = getattr(sys, "_MEIPASS", None)
        if bundle and os.path.basename(bundle).startswith("_MEI"):
            needs.append(Need(os.path.dirname(bundle), os.X_OK, "the directory the binary "
                              "unpacks into"))
        elif bundle:
            needs.append(Need(bundle, os.R_OK | os.X_OK, "the binary's files"))
        return needs
    needs = [Need(path, os.X_OK, "the Python interpreter")
             for path in dict.fromkeys([executable, os.path.realpath(executable)])]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        library = os.path.join(sysconfig.get_config_var("LIBDIR") or "",
                               sysconfig.get_config_var("INSTSONAME") or "")
        if os.path.isfile(library):
            needs.append(Need(os.path.realpath(library), os.R_OK, "the Python library"))
    needs.append(Need(sysconfig.get_path("stdlib"), os.R_OK | os.X_OK,
                      "the Python standard library"))
    entries = sorted({os.path.abspath(entry or os.curdir) for entry in sys.path},
                     key=len, reverse=True)  # the deepest entry holding a module is its own
    directories = set()
    for module in list((sys.modules if modules is None else modules).values()):
        origin = getattr(module, "__file__", None)
        if not isinstance(origin, str):
            continue  # built in, frozen or a namespace package
        directory = os.path.dirname(os.path.abspath(origin))
        if not os.path.isdir(directory):
            continue  # in a zip file
        directories.add(directory)
        entry = next((entry for entry in entries
                      if directory == entry or directory.startswith(entry + os.sep)), None)
        if entry is not None:
            directories.add(entry)
    needs += [Need(path, os.R_OK | os.X_OK, "the modules hubtwist runs on, in")
              for path in sorted(directories)]
    return needs


@attrs.frozen
class Blocked:
    """Where the account is stopped on its way to C{need}: C{path} (C{need.path} itself or
    a directory above it) does not grant it C{mode}."""
    path: str
    mode: int
    need: Need


def first_blocked(needs: Iterable[Need], access: Callable[[str, int], bool]) -> Blocked | None:
    """The first of C{needs} the account cannot reach, and what stops it: every directory
    above a path must let it in (search, C{X_OK}) and the path must grant the need's mode.
    C{access(path, mode)} answers for the account (see L{access_as}); each question is asked
    once."""
    answers: dict[tuple[str, int], bool] = {}

    def allowed(path: str, mode: int) -> bool:
        if (path, mode) not in answers:
            answers[path, mode] = access(path, mode)
        return answers[path, mode]

    for need in needs:
        parts = os.path.normpath(need.path).split(os.sep)
        for depth in range(1, len(parts)):
            directory = os.sep.join(parts[:depth]) or os.sep
            if not allowed(directory, os.X_OK):
                return Blocked(directory, os.X_OK, need)
        if not allowed(need.path, need.mode):
            return Blocked(need.path, need.mode, need)
    return None


@contextlib.contextmanager
def access_as(account: Account):
    """
    Within: C{access(path, mode)} answers for C{account}, ACLs included. access(2) checks
    the real ids, so only they and the groups change, for a moment: the effective ids stay
    root's, which keeps root's privileges and the parent-death signal (a change of the
    effective ids clears it). Root only.
    """
    groups, real_gid, real_uid = os.getgroups(), os.getresgid()[0], os.getresuid()[0]
    try:
        os.setgroups(list(account.groups))
        os.setresgid(account.gid, -1, -1)
        os.setresuid(account.uid, -1, -1)
        # A path that does not exist (for root either) is not the account's problem.
        yield lambda path, mode: os.access(path, mode) or not os.path.lexists(path)
    finally:
        os.setresuid(real_uid, -1, -1)
        os.setresgid(real_gid, -1, -1)
        os.setgroups(groups)


class RuntimeUnreachable(PermissionError):
    """The account cannot use the files hubtwist runs from (L{unreachable_sentence})."""


def unreachable_sentence(account: Account, blocked: Blocked) -> str:
    """One sentence: who cannot reach what, where it is stopped, and the ways out."""
    try:
        info = os.stat(blocked.path)
    except OSError:
        detail = ""
    else:
        try:
            owner = pwd.getpwuid(info.st_uid).pw_name
        except KeyError:
            owner = str(info.st_uid)
        detail = f" (mode {stat.S_IMODE(info.st_mode):04o}, owner {owner})"
    need = blocked.need
    if blocked.path != need.path:
        problem = f"cannot enter {blocked.path}{detail}, on the way to {need.what} {need.path}"
    else:
        verb = "run" if blocked.mode == os.X_OK else "read"
        problem = f"cannot {verb} {need.what} {need.path}{detail}"
    install = ("put the hubtwist binary where that user can read it" if is_frozen() else
               "install Python and hubtwist where that user can read them (or use the "
               "single-file hubtwist binary)")
    return (f"hubtwist would run as {account.name} (uid {account.uid}, gid {account.gid}), "
            f"but that user {problem}; {install}, choose an account that can with --user, or "
            "pass --allow-root without --user to stay root")


def check_runtime(account: Account, needs: Iterable[Need] | None = None) -> None:
    """As root, before the drop: L{RuntimeUnreachable} when C{account} cannot reach one of
    C{needs} (default L{runtime_needs})."""
    if account.uid == 0:
        return
    needs = runtime_needs() if needs is None else needs
    with access_as(account) as access:
        blocked = first_blocked(needs, access)
    if blocked is not None:
        raise RuntimeUnreachable(unreachable_sentence(account, blocked))


def _usable_workdir(account: Account) -> str | None:
    """After the drop: when the inherited working directory is out of the account's reach
    (hubtwist started in /root), move to its home, so that apps without a C{cwd} do not
    inherit an unusable one; the new directory, or C{None} when nothing changed."""
    if os.access(os.curdir, os.R_OK | os.X_OK):
        return None
    if account.home and os.access(account.home, os.R_OK | os.X_OK):
        os.chdir(account.home)
        return account.home
    return None


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


def drop_privileges(spec: str, workspaces=()) -> tuple[Account, list[str], str | None]:
    """Become C{spec} for good. As root: check that the account can use the files hubtwist
    runs from (L{check_runtime}: L{RuntimeUnreachable}, nothing changed yet; call L{preload}
    first), prepare the home and the C{workspaces} under it (L{prepare_workspaces}), drop
    groups, gid and uid, check that root cannot be regained, and leave a working directory
    the account cannot use for its home. As that account already: nothing to do. Anyone
    else: C{PermissionError}. Returns the account, the directories created and the new
    working directory (C{None}: unchanged)."""
    account = resolve_account(spec)
    if os.geteuid() != 0:
        if account.uid == os.geteuid():
            return account, [], None
        raise PermissionError(f"--user {spec}: hubtwist runs as uid {os.geteuid()}; only root "
                              "can become another user")
    check_runtime(account)
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
    return account, created, _usable_workdir(account)
