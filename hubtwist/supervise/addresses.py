"""
Where an app listens: a loopback TCP port or a unix socket, and how hubtwist picks one.
"""

from __future__ import annotations

import os
import socket
import tempfile

import attrs
import ipaddress

from twisted.internet.endpoints import (
    HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint

# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107


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
