"""
Loaders: TOML files, the single-app command line, and CLI overrides, all into L{Config}.

Every error leaves here as a L{ConfigError} attributed to its source (a file name or a flag).
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any, Sequence

import attrs

from hubtwist.config.errors import ConfigError
from hubtwist.config.schema import Config, build


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
    return load_dict(raw, source)


def load_dict(raw: dict[str, Any], source: str) -> Config:
    """Check an already-parsed table (TOML, JSON or Python) against the schema."""
    if not isinstance(raw, dict):
        raise ConfigError("", "must be a table of settings", given=raw, has_given=True,
                          source=source)
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
