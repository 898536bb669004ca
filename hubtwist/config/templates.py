"""
The C{{port}}, C{{unix_socket}} and C{{base_url}} templates of commands, environments and
headers. Pure functions: checked when the configuration loads, filled when a server starts.
"""

from __future__ import annotations

import string
from typing import Mapping

from hubtwist.config.errors import ConfigError

TEMPLATE_NAMES = ("port", "unix_socket", "base_url")
_ACCEPTED = ", ".join("{" + n + "}" for n in TEMPLATE_NAMES) + " (and {{ }} for literal braces)"


def check_template(text: str, path: str) -> None:
    """Raise L{ConfigError} unless C{text} uses only the known templates, plainly."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as error:
        raise ConfigError(path, f"has unbalanced braces ({error})", given=text,
                          has_given=True, accepted=_ACCEPTED) from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_NAMES or spec or conversion:
            raise ConfigError(path, f"uses an unknown template {{{field}}}", given=text,
                              has_given=True, accepted=_ACCEPTED)


def expand(text: str, values: Mapping[str, object]) -> str:
    """Fill the templates of a checked C{text}."""
    return text.format_map(values)


def template_values(port: int, unix_socket: str, base_url: str) -> dict[str, str]:
    """The values templates are filled with (jupyter-server-proxy: port 0 on a unix socket)."""
    return {"port": str(port), "unix_socket": unix_socket, "base_url": base_url}
