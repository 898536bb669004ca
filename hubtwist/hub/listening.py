"""
Where to listen, as pure functions on Twisted endpoint descriptions: the description for the
URL the Hub assigns (C{JUPYTERHUB_SERVICE_URL}), and which descriptions reach beyond this
machine (an open, token-less hubtwist may only listen on loopback or a unix socket).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from hubtwist.config.errors import ConfigError

_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def listen_for_service_url(url: str, ssl_keyfile: str = "", ssl_certfile: str = "") -> str:
    """
    The endpoint description for C{http://HOST:PORT/...} (or https, with the internal-SSL
    key and certificate the Hub provides).
    """
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and parts.port is not None
    except ValueError:  # a bad IPv6 literal or port
        usable = False
    if not usable:
        raise ConfigError("", "JUPYTERHUB_SERVICE_URL is not an http(s) URL with a port",
                          source="environment", given=url, has_given=True)
    host = parts.hostname or ""
    interface = f":interface={_escape(host)}" if host else ""
    if parts.scheme == "http":
        return f"tcp:{parts.port}{interface}"
    if not (ssl_keyfile and ssl_certfile):
        raise ConfigError("", "JUPYTERHUB_SERVICE_URL is https, but JUPYTERHUB_SSL_KEYFILE and "
                          "JUPYTERHUB_SSL_CERTFILE are not both set", source="environment")
    return (f"ssl:{parts.port}{interface}:privateKey={_escape(ssl_keyfile)}"
            f":certKey={_escape(ssl_certfile)}")


def _fields(description: str) -> tuple[str, list[str], dict[str, str]]:
    kind, *rest = _UNESCAPED_COLON.split(description)
    args, kwargs = [], {}
    for item in rest:
        key, eq, value = item.partition("=")
        if eq and not key.endswith("\\"):
            kwargs[key] = value.replace("\\:", ":")
        else:
            args.append(item.replace("\\:", ":"))
    return kind.lower(), args, kwargs


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_private(description: str) -> bool:
    """
    True for a unix socket or a TCP/SSL port bound to a loopback interface. Anything else,
    including the all-interfaces default and endpoint types this cannot judge, is public.
    """
    kind, _, kwargs = _fields(description)
    if kind == "unix":
        return True
    if kind in ("tcp", "tcp6", "ssl"):
        return _is_loopback(kwargs.get("interface", ""))
    return False


def check_open_listens(descriptions, allow_public: bool) -> None:
    """Refuse an unauthenticated hubtwist on a public address unless explicitly allowed."""
    public = [description for description in descriptions if not is_private(description)]
    if public and not allow_public:
        raise ConfigError(
            "", f"--no-auth would let anyone who can reach {', '.join(public)} use the apps "
            "without a token. Listen on 127.0.0.1 or a unix socket, drop --no-auth, or add "
            "--allow-unauthenticated-public if that is really intended",
            source="command line")
