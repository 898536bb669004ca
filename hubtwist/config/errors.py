"""The one error type a configuration problem raises."""

from __future__ import annotations

import reprlib


class ConfigError(Exception):
    """
    A configuration value is missing, unknown or of the wrong kind.

    The message is a sentence for the person who wrote the file: it names the file,
    the key path (C{servers.app.timeout}), what was given and what is accepted.
    """

    def __init__(
        self,
        key_path: str,
        problem: str,
        *,
        source: str | None = None,
        given: object = None,
        has_given: bool = False,
        accepted: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.key_path = key_path
        self.problem = problem
        self.source = source
        self.given = given
        self.has_given = has_given
        self.accepted = accepted
        self.hint = hint
        super().__init__(self.message())

    def with_source(self, source: str) -> "ConfigError":
        """Return the same error, attributed to C{source} (a file name or C{--flag})."""
        return ConfigError(
            self.key_path,
            self.problem,
            source=source,
            given=self.given,
            has_given=self.has_given,
            accepted=self.accepted,
            hint=self.hint,
        )

    def message(self) -> str:
        where = f"{_printable(self.source)}: " if self.source else ""
        key = f"`{_printable(self.key_path)}` " if self.key_path else ""
        parts = [f"{where}{key}{self.problem}"]
        if self.has_given:
            parts.append(f"(given: {_show(self.given)})")
        text = " ".join(parts) + "."
        if self.accepted:
            text += f" Accepted: {self.accepted}."
        if self.hint:
            text += f" {self.hint}"
        return text


# What a message shows of a given value: bounded, so that a huge or deeply nested value
# (a megabyte string, 300 nested arrays) still gives one short sentence.
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 120
_REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = 8
_REPR.maxdict = 6


def _printable(text: str) -> str:
    """C{text}, with control characters escaped: a quoted TOML key or a file name may hold a
    newline, and the message must stay one line."""
    return text if text.isprintable() else repr(text)[1:-1]


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and len(str(value)) > 80:  # at most 4300 digits: TOML's limit
        text = str(value)
        return f"{text[:20]}...{text[-5:]} ({len(text)} digits)"
    return _REPR.repr(value)
