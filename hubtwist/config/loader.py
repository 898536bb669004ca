"""
Loaders: TOML files, Python (jupyter-server-proxy) files, plugins, the single-app command
line, and CLI overrides, all into L{Config}.

Every error leaves here as a L{ConfigError} attributed to its source (a file name or a flag).
"""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs

from hubtwist.config.errors import ConfigError
from hubtwist.config.schema import (
    RESERVED_NAMES, Config, LauncherEntry, ServerConfig, ServiceConfig, build, service_port,
)


# A configuration file is a few kilobytes; anything this big is the wrong file (a log, a
# disk image), and reading it whole would only waste memory before failing.
MAX_FILE_SIZE = 1024 * 1024

_NOT_FILES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"),
              (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"))


def load_toml(path: str | Path) -> Config:
    """Read and check a TOML configuration file."""
    source = str(path)
    return load_toml_text(_read(source), source)


def _read(source: str) -> str:
    """The text of the configuration file C{source}: a regular UTF-8 file of sensible size."""
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer (it is refused below).
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError("", "the file does not exist", source=source) from None
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the name
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError("", f"the file cannot be opened ({reason})", source=source) from None
    mode = os.fstat(fd).st_mode
    for test, what in _NOT_FILES:
        if test(mode):
            os.close(fd)
            raise ConfigError("", f"is {what}, not a configuration file", source=source)
    with open(fd, "rb") as file:
        try:
            data = file.read(MAX_FILE_SIZE + 1)
        except OSError as error:
            raise ConfigError("", f"the file cannot be read ({error.strerror or error})",
                              source=source) from None
    if len(data) > MAX_FILE_SIZE:
        raise ConfigError("", f"the file is larger than {MAX_FILE_SIZE >> 20} MiB, too large "
                          "for a configuration file", source=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError("", f"the file is not UTF-8 text (byte 0x{data[error.start]:02x} at "
                          f"line {line} cannot be decoded)", source=source) from None


def load_toml_text(text: str, source: str = "<string>") -> Config:
    """Check TOML text; errors name C{source}."""
    return load_dict(_parse_toml(text, source), source)


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("", f"the file is not valid TOML ({error})", source=source) from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise ConfigError("", "the file nests arrays or inline tables too deeply to be read",
                          source=source) from None
    except ValueError as error:
        # Python refuses integers of more than 4300 digits (sys.int_info.str_digits_check_threshold).
        raise ConfigError("", f"the file holds a number that cannot be read "
                          f"({str(error).split(':')[0]})", source=source) from None
    return raw


def load_dict(raw: dict[str, Any], source: str, warn: Callable[[str], None] | None = None,
              ) -> Config:
    """Check an already-parsed table (TOML, JSON or Python) against the schema; its
    C{services} become servers (L{services_as_servers})."""
    if not isinstance(raw, dict):
        raise ConfigError("", "must be a table of settings", given=raw, has_given=True,
                          source=source)
    try:
        warn = warn or warn_on_stderr
        return services_as_servers(build(Config, raw), lambda text: warn(f"{source}: {text}"))
    except ConfigError as error:
        raise error.with_source(source) from None


def warn_on_stderr(text: str) -> None:
    """How configuration warnings reach the user: logging has not started yet."""
    print(f"hubtwist: warning: {text}", file=sys.stderr, flush=True)


@attrs.frozen
class Loaded:
    """A loaded configuration, and where each server came from (for C{list-servers})."""

    config: Config
    sources: dict[str, str]


def load_file(path: str | Path, plugins=None, warn: Callable[[str], None] | None = None,
              ) -> Loaded:
    """
    Read a configuration file: TOML, or Python (C{.py}: a jupyter_server_config.py, see
    L{hubtwist.config.jsp}); then add the servers of the installed jupyter-server-proxy
    plugins that C{plugins} (a L{hubtwist.config.plugins.PluginChoice}, all by default)
    picks. A server of the file overrides a plugin's of the same name.
    """
    from hubtwist.config import jsp
    from hubtwist.config.plugins import ALL, load_plugins, plain_paths

    warn = warn or warn_on_stderr
    source = str(path)
    text = _read(source)
    if source.endswith(".py"):
        raw, ignored = jsp.run_python_config(text, source)
        raw = plain_paths(raw)
        for name in ignored:
            warn(f"{source}: `{name}` is not used by hubtwist; ignored")
    else:
        raw = _parse_toml(text, source)
    if not isinstance(raw, dict):
        raise ConfigError("", "must be a table of settings", source=source)
    found = load_plugins(ALL if plugins is None else plugins, warn)
    servers = raw.get("servers")
    if found and (servers is None or isinstance(servers, dict)):
        # Plugins first, so that the file's servers of the same name replace them.
        raw = {**raw, "servers": {**{name: server for name, (server, _) in found.items()},
                                  **(servers or {})}}
    config = load_dict(raw, source, warn)
    own = servers if isinstance(servers, dict) else {}
    sources = {}
    for name in config.servers:
        if name in found and name not in own:
            sources[name] = found[name][1]
        else:
            sources[name] = source if name in own else f"{source} (services)"
    return Loaded(config, sources)


def services_as_servers(config: Config, warn: Callable[[str], None]) -> Config:
    """
    C{config} with each of its C{services} turned into a server (see L{ServiceConfig}), and
    C{services} emptied: the rest of hubtwist knows only servers.
    """
    if not config.services:
        return config
    servers = dict(config.servers)
    hub_env = {}
    if config.hub.api_url:
        hub_env["JUPYTERHUB_API_URL"] = config.hub.api_url
    if config.hub.hub_base_url:
        hub_env["JUPYTERHUB_BASE_URL"] = config.hub.hub_base_url
    for index, service in enumerate(config.services):
        path = f"services[{index}]"
        if service.name in servers:
            raise ConfigError(f"{path}.name", "is already the name of a server or service",
                              given=service.name, has_given=True)
        if service.name in RESERVED_NAMES:
            raise ConfigError(f"{path}.name", "is a name hubtwist uses for its own pages",
                              given=service.name, has_given=True)
        ignored = [field.name for field in attrs.fields(ServiceConfig)
                   if field.metadata.get("ignored") and getattr(service, field.name) is not None]
        if ignored:
            warn(f"`{path}` ({service.name}): {', '.join(ignored)} ignored (JupyterHub's own "
                 "settings; hubtwist gives services no token)")
        if not service.command and service.url is None:
            warn(f"`{path}` ({service.name}) has neither `command` nor `url`: nothing to run "
                 "or route; skipped")
            continue
        environment = {**hub_env, "JUPYTERHUB_SERVICE_NAME": service.name}
        settings: dict[str, Any] = {}
        if service.url is not None:
            port = service_port(service.url, f"{path}.url")
            scheme = service.url.partition(":")[0]
            environment["JUPYTERHUB_SERVICE_URL"] = f"{scheme}://127.0.0.1:{{port}}"
            environment["JUPYTERHUB_SERVICE_PREFIX"] = f"{{base_url}}{service.name}/"
            # The Hub's proxy passes the full path: a service serves under its prefix.
            settings.update(port=port, absolute_url=True)
        else:
            settings.update(proxied=False)
        servers[service.name] = ServerConfig(
            command=service.command, environment={**environment, **service.environment},
            cwd=service.cwd, user=service.user, autostart=True, restart="always",
            launcher_entry=LauncherEntry(enabled=service.display and service.url is not None),
            **settings)
    return attrs.evolve(config, servers=servers, services=())


def single_app(
    command: Sequence[str], name: str = "app", server: dict[str, Any] | None = None,
    **top: Any,
) -> Config:
    """
    The configuration of C{hubtwist [OPTIONS] -- COMMAND ...}: one server, served at the
    base URL. C{server} holds server keys from flags, C{top} top-level keys.
    """
    raw = {
        **top,
        "servers": {name: {"command": list(command), **(server or {})}},
        "default_server": name,
    }
    return load_dict(raw, "command line")


def with_overrides(config: Config, **flags: Any) -> Config:
    """
    Return C{config} with top-level keys replaced by command-line values (C{None} = not
    given). Each value is checked like a file's, and errors name the flag.
    """
    fields = attrs.fields_dict(Config)
    changes = {}
    for key, value in flags.items():
        if value is None:
            continue
        try:
            changes[key] = fields[key].metadata["kind"].coerce(value, key)
        except ConfigError as error:
            raise error.with_source("--" + key.replace("_", "-")) from None
    return attrs.evolve(config, **changes) if changes else config
