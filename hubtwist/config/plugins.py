"""
jupyter-server-proxy plugins: installed packages that declare a C{jupyter_serverproxy_servers}
entry point, a function returning one server's settings (jupyter-vscode-proxy,
jupyter-rsession-proxy, ...). Each becomes the server named after its entry point.

A plugin that fails to import, raises, or returns something that is not a valid server is
reported by name (a warning) and skipped: one broken package must not stop the others.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any, Callable, Sequence

import attrs

from hubtwist.config.errors import ConfigError
from hubtwist.config.schema import RESERVED_NAMES, ServerConfig, Table, _SERVER_NAME

GROUP = "jupyter_serverproxy_servers"

Warn = Callable[[str], None]


@attrs.frozen
class PluginChoice:
    """Which plugins to load: all (the default), none (C{--no-plugins}), or those named
    (C{--plugin NAME}, repeatable)."""

    enabled: bool = True
    names: tuple[str, ...] = ()


ALL = PluginChoice()
NONE = PluginChoice(enabled=False)


def installed() -> dict[str, metadata.EntryPoint]:
    """The installed entry points of the group, by name (the first of a duplicated name)."""
    found: dict[str, metadata.EntryPoint] = {}
    for entry in metadata.entry_points(group=GROUP):
        found.setdefault(entry.name, entry)
    return found


def load_plugins(choice: PluginChoice, warn: Warn,
                 available: dict[str, metadata.EntryPoint] | None = None,
                 ) -> dict[str, tuple[ServerConfig, str]]:
    """
    The servers the chosen plugins give: name -> (its L{ServerConfig}, where it came from).
    A name given with C{--plugin} that is not installed is a L{ConfigError}.
    """
    if not choice.enabled:
        return {}
    entries = installed() if available is None else available
    if choice.names:
        missing = [name for name in choice.names if name not in entries]
        if missing:
            raise ConfigError(
                "", f"no jupyter-server-proxy plugin named {', '.join(map(repr, missing))} is "
                "installed", source="--plugin",
                accepted=", ".join(sorted(entries)) or "none is installed")
        entries = {name: entries[name] for name in choice.names}
    servers = {}
    for name, entry in entries.items():
        origin = f"plugin {name} ({entry.value})"
        try:
            servers[name] = (_server(name, entry), origin)
        except _Skipped as why:
            warn(f"jupyter-server-proxy plugin {name!r} ({entry.value}) skipped: {why}")
    return servers


class _Skipped(Exception):
    pass


def _server(name: str, entry: metadata.EntryPoint) -> ServerConfig:
    import re

    if not re.fullmatch(_SERVER_NAME, name) or name in RESERVED_NAMES:
        raise _Skipped(f"{name!r} cannot be a server name here")
    try:
        function = entry.load()
    except (Exception, SystemExit) as error:  # someone else's package: anything may fail
        raise _Skipped(f"it cannot be imported ({type(error).__name__}: {error})") from None
    try:
        settings = function()
    except (Exception, SystemExit) as error:
        raise _Skipped(f"calling it failed ({type(error).__name__}: {error})") from None
    if not isinstance(settings, dict):
        raise _Skipped(f"it returned {type(settings).__name__}, not a dict of server settings")
    try:
        return Table(ServerConfig).coerce(plain_paths(settings), f"servers.{name}")
    except ConfigError as error:
        raise _Skipped(str(error).rstrip(".")) from None


def plain_paths(value: Any) -> Any:
    """C{value} with C{pathlib} paths as strings (jupyter-server-proxy 4.6 takes a C{Path}
    for C{launcher_entry.icon_path}), in nested dicts and lists."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {key: plain_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_paths(item) for item in value]
    return value


def choice_from_flags(no_plugins: bool, names: Sequence[str] | None) -> PluginChoice:
    """C{--no-plugins} and C{--plugin NAME...} as a L{PluginChoice}."""
    if names:
        if no_plugins:
            raise ConfigError("", "give either --no-plugins or --plugin NAME, not both",
                              source="command line")
        return PluginChoice(names=tuple(dict.fromkeys(names)))
    return NONE if no_plugins else ALL
