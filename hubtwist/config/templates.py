"""
The templates of commands, environments and headers (C{{port}}, C{{prefix}} ...). Pure
functions: checked when the configuration loads, filled when a server starts.

Two kinds of names:

  - filled when the app starts (L{TEMPLATE_NAMES}): C{{port}}, C{{unix_socket}},
    C{{base_url}} (hubtwist's base URL), C{{prefix}} (the app's own public prefix: the base
    URL plus C{NAME/} for a C{[servers.NAME]} app, the base URL for the app that owns it),
    C{{origin_host}} (the C{Host} of the first request, jhsingle-native-proxy's) and
    C{{-}}/C{{--}} (a literal C{-}/C{--}: jhsingle-native-proxy's way to write an app's
    options where they would otherwise be taken for the proxy's own);
  - filled by the command line before the configuration is built (L{COMMAND_LINE_NAMES}):
    C{{presentation_path}}, C{{presentation_basename}} and C{{presentation_dirname}}, from
    C{--presentation-path}.

A C{/} right after C{{base_url}} or C{{prefix}} is dropped, as both end with one: the
jhsingle-native-proxy and jupyter-server-proxy recipes write C{{base_url}/...} for a base URL
that had no trailing slash there.
"""

from __future__ import annotations

import os
import string
from typing import Mapping

from hubtwist.config.errors import ConfigError

TEMPLATE_NAMES = ("port", "unix_socket", "base_url", "prefix", "origin_host", "-", "--")
COMMAND_LINE_NAMES = ("presentation_path", "presentation_basename", "presentation_dirname")
_ACCEPTED = ", ".join("{" + n + "}" for n in TEMPLATE_NAMES) + " (and {{ }} for literal braces)"
_SLASH_ENDED = ("base_url", "prefix")


def _parse(text: str, path: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(text))
    except ValueError as error:
        raise ConfigError(path, f"has unbalanced braces ({error})", given=text,
                          has_given=True, accepted=_ACCEPTED) from None


def check_template(text: str, path: str) -> None:
    """Raise L{ConfigError} unless C{text} uses only the known templates, plainly."""
    for _literal, field, spec, conversion in _parse(text, path):
        if field is None:
            continue
        if field not in TEMPLATE_NAMES or spec or conversion:
            hint = (f"{{{field}}} is filled by the command line's --presentation-path only"
                    if field in COMMAND_LINE_NAMES else None)
            raise ConfigError(path, f"uses an unknown template {{{field}}}", given=text,
                              has_given=True, accepted=_ACCEPTED, hint=hint)


def uses(text: str, name: str) -> bool:
    """True when the (checked) C{text} uses the template C{name}."""
    return any(field == name for _, field, _, _ in string.Formatter().parse(text))


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _render(text: str, values: Mapping[str, object], partial: bool) -> str:
    out = []
    slash_ended = False
    for literal, field, spec, conversion in string.Formatter().parse(text):
        if slash_ended and literal.startswith("/"):
            literal = literal[1:]
        out.append(_escape(literal) if partial else literal)
        slash_ended = False
        if field is None:
            continue
        if field in values:
            value = str(values[field])
            out.append(_escape(value) if partial else value)
            slash_ended = field in _SLASH_ENDED and value.endswith("/")
        elif partial:
            out.append("{" + field + (f"!{conversion}" if conversion else "")
                       + (f":{spec}" if spec else "") + "}")
        else:
            raise KeyError(field)
    return "".join(out)


def expand(text: str, values: Mapping[str, object]) -> str:
    """Fill the templates of a checked C{text}."""
    return _render(text, values, partial=False)


def expand_some(text: str, values: Mapping[str, object], path: str = "command") -> str:
    """
    Fill only the templates named in C{values} and keep the others (and C{{{ }}}) as they
    are, for L{expand} later: how the command line fills its own names early.
    """
    _parse(text, path)  # unbalanced braces: a ConfigError naming C{path}
    return _render(text, values, partial=True)


def template_values(port: int, unix_socket: str, base_url: str, prefix: str | None = None,
                    origin_host: str | None = None) -> dict[str, str]:
    """The values templates are filled with (jupyter-server-proxy: port 0 on a unix socket)."""
    return {"port": str(port), "unix_socket": unix_socket, "base_url": base_url,
            "prefix": base_url if prefix is None else prefix,
            "origin_host": origin_host or "", "-": "-", "--": "--"}


def server_prefix(base_url: str, name: str, default_server: str | None) -> str:
    """The public prefix of server C{name}: the base URL for the app that owns it, else
    C{BASE/NAME/} (what C{{prefix}} is filled with)."""
    return base_url if name == default_server else f"{base_url}{name}/"


def presentation_values(presentation_path: str, cwd: str | None = None) -> dict[str, str]:
    """C{{presentation_path}} (made absolute, as jhsingle-native-proxy does) and its
    C{{presentation_basename}} and C{{presentation_dirname}}."""
    path = presentation_path
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd() if cwd is None else cwd, path)
    return {"presentation_path": path, "presentation_basename": os.path.basename(path),
            "presentation_dirname": os.path.dirname(path)}
