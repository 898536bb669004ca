"""
Value kinds of the configuration schema.

A kind turns a raw value (from TOML, a Python config or a CLI flag) into the value the
models hold, or raises L{ConfigError} saying what it accepts. The same kinds describe
themselves for the generated reference (docs/configuration.md), so the checks and the
documentation cannot drift apart.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import shlex
import signal
from typing import Any, Protocol

import attrs

from hubtwist.config.errors import ConfigError


class Kind(Protocol):
    def coerce(self, value: object, path: str) -> Any:
        """Return the checked value, or raise L{ConfigError} naming C{path}."""

    def describe(self) -> str:
        """What this kind accepts, as a phrase for messages and docs."""


WRONG_TYPE = "has the wrong type"

# Longer durations mean nothing to a supervisor or a proxy, and floats this size stay
# exact enough for reactor arithmetic (now + delay).
MAX_SECONDS = 1e9

# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107


def _wrong(path: str, value: object, kind: Kind, problem: str | None = None) -> ConfigError:
    return ConfigError(
        path,
        problem or WRONG_TYPE,
        given=value,
        has_given=True,
        accepted=kind.describe(),
    )


@attrs.frozen
class Str:
    """A string; optionally non-empty or matching a pattern."""

    non_empty: bool = False
    pattern: str | None = None
    pattern_text: str | None = None

    def coerce(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            raise _wrong(path, value, self)
        if self.non_empty and not value:
            raise _wrong(path, value, self, "must not be empty")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise _wrong(path, value, self, "is not valid")
        return value

    def describe(self) -> str:
        if self.pattern_text:
            return self.pattern_text
        return "a non-empty string" if self.non_empty else "a string"


@attrs.frozen
class OptionalStr:
    """A string, or absent (C{None})."""

    def coerce(self, value: object, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise _wrong(path, value, self)
        return value

    def describe(self) -> str:
        return "a non-empty string (or leave it out)"


@attrs.frozen
class Bool:
    def coerce(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            raise _wrong(path, value, self)
        return value

    def describe(self) -> str:
        return "true or false"


@attrs.frozen
class Int:
    minimum: int | None = None
    maximum: int | None = None

    def coerce(self, value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(path, value, self)
        if self.minimum is not None and value < self.minimum:
            raise _wrong(path, value, self, "is too small")
        if self.maximum is not None and value > self.maximum:
            raise _wrong(path, value, self, "is too large")
        return value

    def describe(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"a whole number from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"a whole number of at least {self.minimum}"
        return "a whole number"


@attrs.frozen
class Seconds:
    """A duration in seconds: an int or a float, at least C{minimum}, finite, and at most
    L{MAX_SECONDS} (a NaN would pass every comparison and break the reactor's timers)."""

    minimum: float = 0.0
    exclusive: bool = False

    def coerce(self, value: object, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong(path, value, self)
        if isinstance(value, float) and not math.isfinite(value):
            raise _wrong(path, value, self, "must be a finite number")
        if value < self.minimum or (self.exclusive and value == self.minimum):
            raise _wrong(path, value, self, "is out of range")
        if value > MAX_SECONDS:  # compared before float(): a huge int would overflow it
            raise _wrong(path, value, self, f"is too large (at most {MAX_SECONDS:.0f} seconds)")
        return float(value)

    def describe(self) -> str:
        bound = "more than" if self.exclusive else "at least"
        return f"a number of seconds, {bound} {self.minimum:g}"


@attrs.frozen
class Choice:
    options: tuple[str, ...]

    def coerce(self, value: object, path: str) -> str:
        if not isinstance(value, str) or value not in self.options:
            raise _wrong(path, value, self, "is not one of the choices")
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(f'"{o}"' for o in self.options)


@attrs.frozen
class StrList:
    """A list of strings. A single string is refused, with a hint to write a list."""

    non_empty_items: bool = False

    def coerce(self, value: object, path: str) -> tuple[str, ...]:
        if isinstance(value, str):
            raise ConfigError(
                path,
                "must be a list, not a single string",
                given=value,
                has_given=True,
                accepted=self.describe(),
                hint=f"Write it as [{', '.join(json.dumps(p) for p in shlex.split(value))}].",
            )
        if not isinstance(value, (list, tuple)):
            raise _wrong(path, value, self)
        for index, item in enumerate(value):
            if not isinstance(item, str) or (self.non_empty_items and not item):
                raise _wrong(f"{path}[{index}]", item, self, "must be a non-empty string")
        return tuple(value)

    def describe(self) -> str:
        return "a list of strings"


@attrs.frozen
class StrDict:
    """A table of string keys to string values (numbers and booleans are turned into text)."""

    def coerce(self, value: object, path: str) -> dict[str, str]:
        if not isinstance(value, dict):
            raise _wrong(path, value, self)
        result = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise _wrong(path, key, self, "has a key that is not a string")
            if isinstance(item, bool):
                item = "true" if item else "false"
            elif isinstance(item, (int, float)):
                item = str(item)
            if not isinstance(item, str):
                raise _wrong(f"{path}.{key}", item, self, "must be a string")
            result[key] = item
        return result

    def describe(self) -> str:
        return "a table of strings"


class ImportFailed(Exception):
    """An import path names nothing callable; the message says why."""


def load_callable(import_path: str) -> Any:
    """
    C{"package.module:name.attr"} -> the callable it names, or L{ImportFailed} saying why
    (the module is missing or fails to import, the attribute is missing, it is not callable).
    """
    module_name, _, name = import_path.partition(":")
    try:
        target = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ImportFailed(f"cannot be imported: {error}") from None
    except (Exception, SystemExit) as error:  # user code: anything may go wrong in it
        raise ImportFailed(
            f"cannot be imported: importing {module_name!r} failed "
            f"({type(error).__name__}: {error})") from None
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportFailed(
                f"names a missing attribute: {type(target).__name__} "
                f"{getattr(target, '__name__', module_name)!r} has no attribute {part!r}"
            ) from None
    if not callable(target):
        raise ImportFailed(f"does not name a callable (its type is {type(target).__name__})")
    return target


@attrs.frozen
class ImportPath:
    """
    C{"package.module:attribute"}: a callable. It is imported when the configuration is
    checked (as jupyter-server-proxy does), so C{check-config} reports what the run would
    fail on.
    """

    def coerce(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            raise _wrong(path, value, self)
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", value):
            raise _wrong(path, value, self, "is not an import path")
        try:
            load_callable(value)
        except ImportFailed as error:
            raise _wrong(path, value, self, str(error)) from None
        return value

    def describe(self) -> str:
        return 'an import path such as "mypackage.module:function"'


@attrs.frozen
class Function:
    """
    A Python function, as a jupyter_server_config.py or a jupyter-server-proxy plugin gives
    it (TOML has none). It is called when the value is needed, with the arguments it names
    (L{hubtwist.config.jsp.call_for_server}); its result is checked then.
    """

    def coerce(self, value: object, path: str) -> Any:
        if isinstance(value, (str, bytes, type)) or not callable(value):
            raise _wrong(path, value, self)
        return value

    def describe(self) -> str:
        return "a function (Python configuration files and plugins only)"


@attrs.frozen
class Anything:
    """Any value, kept as given: keys of other programs that hubtwist accepts and ignores."""

    def coerce(self, value: object, path: str) -> Any:
        return value

    def describe(self) -> str:
        return "anything (accepted and ignored, with a warning)"


@attrs.frozen
class Either:
    """
    The first of several kinds that accepts the value. When one of them had the value's
    type but refused it, its reason is given (a missing module, an empty string), not a
    bare "wrong type".
    """

    kinds: tuple[Kind, ...]

    def coerce(self, value: object, path: str) -> Any:
        reason = None
        for kind in self.kinds:
            try:
                return kind.coerce(value, path)
            except ConfigError as error:
                if reason is None and error.problem != WRONG_TYPE:
                    reason = error
        raise reason or _wrong(path, value, self)

    def describe(self) -> str:
        return ", or ".join(k.describe() for k in self.kinds)


@attrs.frozen
class ListOf:
    """A list of values of one kind; a single value is accepted as a list of one."""

    item: Kind

    def coerce(self, value: object, path: str) -> tuple[Any, ...]:
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(self.item.coerce(v, f"{path}[{i}]") for i, v in enumerate(items))

    def describe(self) -> str:
        return f"{self.item.describe()}, or a list of them"


_SIGNALS = {s.name[3:]: s for s in signal.Signals if s.name.startswith("SIG") and "_" not in s.name}


@attrs.frozen
class SignalName:
    """A signal name with or without C{SIG}, or its number; held as the bare name (C{"TERM"})."""

    def coerce(self, value: object, path: str) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return signal.Signals(value).name[3:]
            except ValueError:
                raise _wrong(path, value, self, "is not a signal number") from None
        if isinstance(value, str):
            name = value.upper().removeprefix("SIG")
            if name in _SIGNALS:
                return name
        raise _wrong(path, value, self, "is not a signal")

    def describe(self) -> str:
        return 'a signal name such as "TERM", "INT", "HUP", "QUIT", "USR1" or "KILL"'


def signal_number(name: str) -> int:
    """The number of a signal held as a bare name by L{SignalName}."""
    return int(_SIGNALS[name])


@attrs.frozen
class URLPrefix:
    """A path prefix; held with one leading and one trailing slash (C{"/user/alice/"})."""

    def coerce(self, value: object, path: str) -> str:
        if not isinstance(value, str) or not value.startswith("/") or re.search(r"[\s?#]", value):
            raise _wrong(path, value, self, "is not a URL path")
        return "/" + "/".join(part for part in value.split("/") if part) + "/" if value.strip("/") else "/"

    def describe(self) -> str:
        return "a URL path starting with '/' (a trailing '/' is added)"
