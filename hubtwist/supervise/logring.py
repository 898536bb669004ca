"""The last lines an app wrote, kept for error pages and the API."""

from __future__ import annotations

from collections import deque
from typing import Iterator

import attrs


@attrs.frozen
class LogLine:
    time: float
    stream: str  # "stdout" | "stderr" | "hubtwist"
    text: str


class LogRing:
    """A bounded ring of L{LogLine}s (200 by default); the oldest are dropped first."""

    def __init__(self, size: int = 200) -> None:
        self._lines: deque[LogLine] = deque(maxlen=size)

    def append(self, line: LogLine) -> None:
        self._lines.append(line)

    def __iter__(self) -> Iterator[LogLine]:
        return iter(list(self._lines))

    def __len__(self) -> int:
        return len(self._lines)

    def tail(self, count: int | None = None) -> list[LogLine]:
        lines = list(self._lines)
        return lines if count is None else lines[-count:]


class LineSplitter:
    """
    Turns the chunks a pipe delivers into whole lines. A partial line is held until its
    newline arrives (or L{flush} at exit); very long lines are cut at C{max_line} bytes so a
    chatty app cannot grow memory without bound.
    """

    def __init__(self, max_line: int = 16384) -> None:
        self._buffer = b""
        self._max_line = max_line

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        while len(self._buffer) > self._max_line:
            lines.append(self._buffer[: self._max_line])
            self._buffer = self._buffer[self._max_line :]
        return [_decode(line) for line in lines]

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer, b""
        return [_decode(rest)] if rest else []


def _decode(line: bytes) -> str:
    return line.rstrip(b"\r").decode("utf-8", "replace")
