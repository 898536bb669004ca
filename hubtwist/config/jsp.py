"""
jupyter-server-proxy's Python configuration: a C{jupyter_server_config.py} (any C{.py} file)
run with a traitlets-like C{c} object, and the functions such a file may give as values.

What is read (everything else assigned on C{c} is ignored, with one warning per name):

  - C{c.ServerProxy.servers} -> C{servers};
  - C{c.ServerProxy.host_allowlist} (or the old C{host_whitelist}) -> C{proxy_allowed_hosts}.
    Only the list form: a function C{(handler, host)} is refused with a clear error, since
    hubtwist decides before any handler exists and its allow-list is a plain set;
  - C{c.ServerProxy.non_service_rewrite_response} -> C{non_service_rewrite_response};
  - C{c.JupyterHub.services} -> C{services} (a jupyterhub_config.py's managed services).

The values then go through the same schema as a TOML file's (L{hubtwist.config.schema}),
so mistakes are reported the same way.

A function given for C{command}, C{environment} or C{request_headers_override} is called
when its value is needed (each start; each request) with the arguments it names among
C{port}, C{unix_socket} and C{base_url}, as jupyter-server-proxy does; the strings it
returns take the same templates (L{call_for_server}).
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Callable

from hubtwist.config import kinds
from hubtwist.config.errors import ConfigError
from hubtwist.config.templates import expand, template_values
from hubtwist.proxy.rewritable import call_with_asked_args

# c.SECTION.NAME -> (top-level key, the empty container a first read creates, so that
# `c.ServerProxy.servers["x"] = ...` and `c.JupyterHub.services.append(...)` work).
READ = {
    ("ServerProxy", "servers"): ("servers", dict),
    ("ServerProxy", "host_allowlist"): ("proxy_allowed_hosts", list),
    ("ServerProxy", "host_whitelist"): ("proxy_allowed_hosts", list),
    ("ServerProxy", "non_service_rewrite_response"): ("non_service_rewrite_response", list),
    ("JupyterHub", "services"): ("services", list),
}


class _Recorder:
    """What a configuration file assigned: the values hubtwist reads, the names it ignores."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], Any] = {}
        self.ignored: list[str] = []

    def assign(self, path: tuple[str, ...], value: Any) -> None:
        if path in READ:
            self.values[path] = value
        else:
            self.ignore(path)

    def ignore(self, path: tuple[str, ...]) -> None:
        name = "c." + ".".join(path)
        if name not in self.ignored:
            self.ignored.append(name)


class Section:
    """C{c}, or C{c.A.b...}: attribute chains of any depth, as traitlets' C{Config} allows."""

    def __init__(self, recorder: _Recorder, path: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "_recorder", recorder)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        path = self._path + (name,)
        recorder = self._recorder
        if path in recorder.values:
            return recorder.values[path]
        if path in READ:
            value = recorder.values[path] = READ[path][1]()
            return value
        return Section(recorder, path)

    def __setattr__(self, name: str, value: Any) -> None:
        self._recorder.assign(self._path + (name,), value)

    __getitem__ = __getattr__
    __setitem__ = __setattr__

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        # c.Spawner.environment.update({...}) on a value hubtwist does not read
        if len(self._path) > 1:
            self._recorder.ignore(self._path[:-1])

    def __bool__(self) -> bool:
        return False  # an unset value reads as empty


def run_python_config(text: str, source: str) -> tuple[dict[str, Any], list[str]]:
    """
    Run the configuration file C{source} (its C{text}); return the raw settings it gave
    (for L{hubtwist.config.schema.build}) and the names it set that hubtwist ignores.
    Raises L{ConfigError} naming the line when the file fails.
    """
    recorder = _Recorder()
    c = Section(recorder)
    _execute(text, source, c)
    raw: dict[str, Any] = {}
    for path, value in recorder.values.items():
        key = READ[path][0]
        if key == "proxy_allowed_hosts" and callable(value):
            raise ConfigError(
                "", f"`c.{'.'.join(path)}` is a function; hubtwist only takes a list of host "
                "names there (it decides before any request handler exists)", source=source,
                hint='Write the hosts as a list, such as ["localhost", "127.0.0.1", '
                     '"db.internal"].')
        if key in raw and not value:
            continue  # the old name read empty next to the new one
        raw[key] = value
    return raw, recorder.ignored


def _execute(text: str, source: str, c: Section) -> None:
    try:
        code = compile(text, source, "exec")
    except SyntaxError as error:
        raise ConfigError("", f"line {error.lineno}: {error.msg} (a syntax error)",
                          source=source) from None
    namespace = {
        "__file__": source, "__name__": "__hubtwist_config__", "c": c,
        "get_config": lambda: c,
        "load_subconfig": lambda name, path=None: _subconfig(name, path, source, c),
    }
    try:
        exec(code, namespace)
    except ConfigError:
        raise
    except (Exception, SystemExit) as error:  # user code: anything may go wrong in it
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
                 if frame.filename == source]
        where = f"line {lines[-1]}: " if lines else ""
        raise ConfigError("", f"{where}{type(error).__name__}: {error}", source=source) from None


def _subconfig(name: str, path: str | None, source: str, c: Section) -> None:
    """traitlets' C{load_subconfig}: run another file (relative to this one) on the same C{c}."""
    from hubtwist.config.loader import _read

    target = Path(path or Path(source).parent) / name
    _execute(_read(str(target)), str(target), c)


def call_for_server(function: Callable, kind: kinds.Kind, port: int, unix_socket: str,
                    base_url: str, path: str, fill: bool = True) -> Any:
    """
    Call a server's C{command}/C{environment}/C{request_headers_override} function with the
    arguments it names among C{port}, C{unix_socket} and C{base_url}; check its result with
    C{kind} and (with C{fill}) fill the templates in its strings, as jupyter-server-proxy
    does. Raises
    C{ValueError} saying which function failed and how (the supervisor logs it as the
    reason the app did not start).
    """
    try:
        result = kind.coerce(call_with_asked_args(function, {
            "port": port, "unix_socket": unix_socket, "base_url": base_url}), path)
        values = template_values(port, unix_socket, base_url)
        if not fill:
            return result
        if isinstance(result, dict):
            return {expand(key, values): expand(value, values) for key, value in result.items()}
        return tuple(expand(item, values) for item in result)
    except Exception as error:
        name = getattr(function, "__qualname__", repr(function))
        raise ValueError(f"the `{path}` function {name} failed: {type(error).__name__}: "
                         f"{error}") from None
