"""
Loaders: TOML files, the single-app command line, and CLI overrides, all into L{Config}.

Every error leaves here as a L{ConfigError} attributed to its source (a file name or a flag).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Sequence

import attrs

from hubtwist.config.errors import ConfigError
from hubtwist.config.schema import Config, build


def load_toml(path: str | Path) -> Config:
    """Read and check a TOML configuration file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", "the file does not exist", source=source) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError("", f"the file cannot be read ({error})", source=source) from None
    return load_toml_text(text, source)


def load_toml_text(text: str, source: str = "<string>") -> Config:
    """Check TOML text; errors name C{source}."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("", f"the file is not valid TOML ({error})", source=source) from None
    return load_dict(raw, source)


def load_dict(raw: dict[str, Any], source: str) -> Config:
    """Check an already-parsed table (TOML, JSON or Python) against the schema."""
    try:
        return build(Config, raw)
    except ConfigError as error:
        raise error.with_source(source) from None


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
