"""
Log output: twisted.logger events as readable text lines or one JSON object per line.

Every event may carry C{server} (the app's name); text lines show it in brackets, JSON
lines as a field. Twisted's chatty per-connection events are dropped below debug level.
"""

from __future__ import annotations

import json
import re
import sys
import time
from json.encoder import encode_basestring_ascii as _json_string
from typing import IO
from urllib.parse import unquote_plus

from twisted.logger import (
    FileLogObserver, FilteringLogObserver, LogLevel, LogLevelFilterPredicate, formatEvent,
    globalLogBeginner, PredicateResult,
)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}

# Namespaces whose info events describe plumbing (factories starting, per-request access
# lines), not anything an operator acts on.
_QUIET_NAMESPACES = ("twisted.internet.protocol", "twisted.web.server", "twisted.internet.endpoints",
                     "twisted.web.client", "twisted.web._newclient", "twisted.internet.base",
                     "twisted.python.log")


def _level_name(event: dict) -> str:
    level = event.get("log_level", LogLevel.info)
    return "warning" if level is LogLevel.warn else level.name


def _timestamp(event: dict) -> str:
    stamp = event.get("log_time") or time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stamp)) + f".{int(stamp % 1 * 1000):03d}"


def format_text(event: dict) -> str:
    """C{2026-11-21T10:00:00.123 info    hubtwist.supervise: [app] started ...}"""
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text += "\n" + failure.getTraceback()
    namespace = event.get("log_namespace", "-")
    return f"{_timestamp(event)} {_level_name(event):7} {namespace}: {text}\n"


def format_json(event: dict) -> str:
    """One JSON object: time, level, namespace, message, and server when there is one."""
    record = {
        "time": _timestamp(event),
        "level": _level_name(event),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    for key in ("server", "stream"):
        if key in event:
            record[key] = event[key]
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record) + "\n"


def _quiet_plumbing(minimum: LogLevel):
    def predicate(event: dict) -> PredicateResult:
        if minimum > LogLevel.debug and event.get("log_level", LogLevel.info) < LogLevel.warn:
            namespace = event.get("log_namespace", "")
            if namespace.startswith(_QUIET_NAMESPACES) or namespace == "log_legacy":
                return PredicateResult.no
        return PredicateResult.maybe

    return predicate


def start_logging(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Send all log events at C{level} or above to C{stream} (stderr) as C{fmt} lines."""
    stream = stream or sys.stderr
    formatter = format_json if fmt == "json" else format_text
    levels = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    observer = FilteringLogObserver(
        FileLogObserver(stream, formatter), [levels, _quiet_plumbing(LEVELS[level])]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False, discardBuffer=True)


# -- the access log ---------------------------------------------------------------------------

# Query arguments that carry credentials or one-time secrets: never written to a log. Any
# argument whose name contains one of these words is dropped too (`api_key`, `access_token`,
# `client_secret`, `password` ...): dropping a harmless one costs nothing, keeping a secret
# in a log file does.
_SECRET_WORDS = (r"token|secret|passw|pwd|key|auth|session|credential|signature|xsrf|csrf"
                 r"|cookie|bearer|jwt|ticket")
_SECRET_ARG = re.compile(rf"^(?:code|state|sig|otp|code_verifier)$|{_SECRET_WORDS}")
# The words anywhere in a whole (lower-cased) query: most queries have none and are kept as
# they are without being taken apart. (Case-insensitive patterns are several times slower.)
_MAYBE_SECRET = re.compile(rf"{_SECRET_WORDS}|code|state|sig|otp|%|\+")


def _is_secret_arg(name: str) -> bool:
    if "%" in name or "+" in name:
        name = unquote_plus(name)
    return _SECRET_ARG.search(name.lower()) is not None


def loggable_target(target: bytes) -> str:
    """
    A request target as the access log shows it: the query without arguments named like a
    secret (C{token}, C{_xsrf}, C{code}, C{state}, anything with C{key}, C{secret},
    C{password} ... in its name), everything else as sent.
    """
    text = target.decode("latin-1")
    path, mark, query = text.partition("?")
    if not mark:
        return text
    if _MAYBE_SECRET.search(query.lower()) is None:
        return text
    kept = [pair for pair in query.split("&")
            if pair and not _is_secret_arg(pair.partition("=")[0])]
    return f"{path}?{'&'.join(kept)}" if kept else path


def _printable(text: str) -> str:
    """No control characters, quotes or backslashes as they are in a text line (a client
    must not be able to write a fake log line with a CR LF in its path)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c not in '"\\' else f"\\x{ord(c):02x}"
                   for c in text)


class AccessLog:
    """
    Writes one line per request, text or JSON, straight to the log stream (stderr).

    Not through twisted.logger: an event per request (a dict, the publisher, the filters,
    C{formatEvent}) would cost several times the formatting itself. Lines go to the same
    stream as the other log lines, whole. With a C{reactor}, they are gathered and written
    together at most L{FLUSH_DELAY} seconds later (or once L{FLUSH_SIZE} characters are
    waiting): stderr is line-buffered, and a C{write(2)} per line cost as much as the rest
    of the access log; call L{flush} before stopping.

    C{limit}: at most that many lines per C{window} seconds (the trace of hubtwist's own
    answers when the access log is off; C{None}: no limit); the lines held back are counted
    and reported with the next line written.
    """

    FLUSH_DELAY = 0.25
    FLUSH_SIZE = 64 * 1024

    def __init__(self, fmt: str = "text", stream: IO[str] | None = None, *,
                 limit: int | None = None, window: float = 10.0, clock=time.time,
                 reactor=None) -> None:
        self._json = fmt == "json"
        self._stream = stream
        self._reactor = reactor
        self._pending: list[str] = []
        self._pending_size = 0
        self._flush_call = None
        self._limit = limit
        self._window = window
        self._clock = clock
        self._window_start = 0.0
        self._in_window = 0
        self._held_back = 0
        self._second = -1
        self._stamp = ""

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # strftime once a second, not once a line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
        return f"{self._stamp}.{int(now % 1 * 1000):03d}"

    def write(self, server: str, method: bytes, target: bytes, code: int, seconds: float,
              bytes_in: int, bytes_out: int, user: str | None, client: bytes | str,
              own: bool) -> None:
        """One request; C{own}: hubtwist answered it itself (no app did)."""
        now = self._clock()
        if self._limit is not None:
            if now - self._window_start >= self._window:
                self._window_start = now
                self._in_window = 0
            if self._in_window >= self._limit:
                self._held_back += 1
                return
            self._in_window += 1
        line = self.format(now, server, method, target, code, seconds, bytes_in, bytes_out,
                           user, client, own)
        if self._held_back:
            held, self._held_back = self._held_back, 0
            line += self._held_back_line(now, held)
        if self._reactor is None:
            (self._stream or sys.stderr).write(line)
            return
        self._pending.append(line)
        self._pending_size += len(line)
        if self._pending_size >= self.FLUSH_SIZE:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self._reactor.callLater(self.FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Write the lines gathered so far."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            stream = self._stream or sys.stderr
            stream.write(text)
            stream.flush()

    def format(self, now: float, server: str, method: bytes, target: bytes, code: int,
               seconds: float, bytes_in: int, bytes_out: int, user: str | None,
               client: bytes | str, own: bool) -> str:
        """The line for one request (see docs/metrics.md for the fields)."""
        method_text = method.decode("latin-1")
        path = loggable_target(target)
        if isinstance(client, bytes):
            client = client.decode("latin-1")
        duration = round(seconds * 1000, 3)
        by = "hubtwist" if own else "app"
        if self._json:
            # What json.dumps of the dict would write, without building the dict (half
            # the cost): the strings through json's own C escaper.
            method_json, path_json = _json_string(method_text), _json_string(path)
            return (f'{{"time": "{self._timestamp(now)}", "level": "info", '
                    f'"namespace": "hubtwist.access", '
                    f'"message": {_json_string(f"{method_text} {path} {code}")}, '
                    f'"method": {method_json}, "path": {path_json}, "status": {code}, '
                    f'"duration_ms": {duration!r}, "bytes_in": {bytes_in}, '
                    f'"bytes_out": {bytes_out}, "server": {_json_string(server)}, '
                    f'"user": {_json_string(user) if user is not None else "null"}, '
                    f'"client": {_json_string(client)}, "answered_by": "{by}"}}\n')
        return (f"{self._timestamp(now)} info    hubtwist.access: {client} "
                f"{_printable(user) if user else '-'} \"{_printable(method_text)} "
                f"{_printable(path)}\" {code} {bytes_out} {duration:.3f}ms server={server} "
                f"in={bytes_in} by={by}\n")

    def _held_back_line(self, now: float, count: int) -> str:
        message = (f"{count} more answer(s) of hubtwist itself not logged (at most "
                   f"{self._limit} per {self._window:g} s)")
        if self._json:
            return json.dumps({"time": self._timestamp(now), "level": "info",
                               "namespace": "hubtwist.access", "message": message}) + "\n"
        return f"{self._timestamp(now)} info    hubtwist.access: {message}\n"
