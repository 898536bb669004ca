"""
Where an app listens: a loopback TCP port or a unix socket, and how hubtwist picks one.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile

import attrs
import ipaddress

from twisted.internet.endpoints import (
    HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint

from hubtwist.config.kinds import MAX_UNIX_PATH


@attrs.frozen
class BackendAddress:
    """A backend's address: C{tcp} to C{127.0.0.1:port}, or C{unix} at C{path}."""

    kind: str
    port: int = 0
    path: str = ""
    host: str = "127.0.0.1"

    @classmethod
    def tcp(cls, port: int, host: str = "127.0.0.1") -> "BackendAddress":
        return cls("tcp", port=port, host=host)

    @classmethod
    def unix(cls, path: str) -> "BackendAddress":
        return cls("unix", path=path)

    def endpoint(self, reactor, timeout: float = 10) -> IStreamClientEndpoint:
        """A client endpoint that connects to this address."""
        if self.kind == "unix":
            return UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        try:
            version = ipaddress.ip_address(self.host).version
        except ValueError:
            return HostnameEndpoint(reactor, self.host.encode("idna"), self.port, timeout=timeout)
        endpoint = TCP4ClientEndpoint if version == 4 else TCP6ClientEndpoint
        return endpoint(reactor, self.host, self.port, timeout=timeout)

    def describe(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """
    A TCP port on C{host} that nothing listens on right now. The app binds it a moment
    later; in the rare race where another process takes it first, the start fails its
    readiness check and is retried with a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def private_socket_dir(name: str, owner: tuple[int, int] | None = None) -> str:
    """
    A new directory only its owner can enter (0700), for one app's unix socket: under
    C{$XDG_RUNTIME_DIR} when set (per-user, tmpfs), else the system temp dir. Other users
    on a shared node cannot connect to a socket inside it. C{owner} (uid, gid) hands it to
    the user the app runs as.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base) or not os.access(base, os.W_OK):
        base = tempfile.gettempdir()
    directory = tempfile.mkdtemp(prefix=f"hubtwist-{name}-", dir=base)
    os.chmod(directory, 0o700)
    if owner is not None:
        os.chown(directory, *owner)
    return directory


def check_unix_path(path: str) -> None:
    """Raise C{ValueError} with a sentence if C{path} is too long for a unix socket."""
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise ValueError(
            f"The unix socket path {path!r} is {len(os.fsencode(path))} bytes long; Linux allows "
            f"{MAX_UNIX_PATH}. Set XDG_RUNTIME_DIR or TMPDIR to a shorter directory, or give a "
            "shorter unix_socket path."
        )


def remove_stale_socket(path: str) -> None:
    """
    Remove the unix socket at C{path} that an earlier run left behind: the app could not
    bind it again, and until then it refuses connections. Anything else at C{path} is left
    alone (a typo in C{unix_socket} must not delete a file): C{OSError} says so.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path!r} exists and is not a unix socket; hubtwist does not remove it")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_socket_dir(directory: str) -> None:
    """
    Remove an app's private socket directory (L{private_socket_dir}) with the socket and
    whatever else the app left in it, once the app is gone. Errors are ignored: at worst an
    empty directory stays in the temp dir. (rmtree does not follow symbolic links, so a link
    the app left there cannot make hubtwist delete files elsewhere.)
    """
    shutil.rmtree(directory, ignore_errors=True)
