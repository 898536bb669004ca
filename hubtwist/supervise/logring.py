"""The last lines an app wrote, kept for error pages and the API, and followed live."""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterator

import attrs
from twisted.logger import Logger

log = Logger(namespace="hubtwist.supervise")


@attrs.frozen
class LogLine:
    time: float
    stream: str  # "stdout" | "stderr" | "hubtwist"
    text: str


class LogRing:
    """
    A bounded ring of L{LogLine}s (200 by default); the oldest are dropped first. Followers
    (L{follow}) are called with every line appended from then on.
    """

    def __init__(self, size: int = 200) -> None:
        self._lines: deque[LogLine] = deque(maxlen=size)
        self._followers: list[Callable[[LogLine], None]] = []
        self.total = 0  # lines appended so far: the last line's number (the first is 1)

    def append(self, line: LogLine) -> None:
        self._lines.append(line)
        self.total += 1
        for follower in list(self._followers):
            try:
                follower(line)
            except Exception:
                # A broken follower (an API stream) must not break reading the app's output.
                log.failure("A log follower failed; it follows no more")
                self.unfollow(follower)

    def follow(self, follower: Callable[[LogLine], None]) -> Callable[[], None]:
        """Call C{follower} with each new line; returns the function that stops it."""
        self._followers.append(follower)
        return lambda: self.unfollow(follower)

    def unfollow(self, follower: Callable[[LogLine], None]) -> None:
        if follower in self._followers:
            self._followers.remove(follower)

    @property
    def followers(self) -> int:
        """How many followers there are (streams that have not ended)."""
        return len(self._followers)

    def __iter__(self) -> Iterator[LogLine]:
        return iter(list(self._lines))

    def __len__(self) -> int:
        return len(self._lines)

    def tail(self, count: int | None = None) -> list[LogLine]:
        lines = list(self._lines)
        return lines if count is None else lines[-count:] if count else []

    def numbered(self, after: int = 0) -> list[tuple[int, LogLine]]:
        """The kept lines numbered after C{after} (see C{total}), each with its number:
        a follower that reconnects asks for what it has not seen yet."""
        first = self.total - len(self._lines) + 1
        return [(first + index, line) for index, line in enumerate(self._lines)
                if first + index > after]


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
