"""The one error type a configuration problem raises."""

from __future__ import annotations


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
        where = f"{self.source}: " if self.source else ""
        key = f"`{self.key_path}` " if self.key_path else ""
        parts = [f"{where}{key}{self.problem}"]
        if self.has_given:
            parts.append(f"(given: {_show(self.given)})")
        text = " ".join(parts) + "."
        if self.accepted:
            text += f" Accepted: {self.accepted}."
        if self.hint:
            text += f" {self.hint}"
        return text


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
