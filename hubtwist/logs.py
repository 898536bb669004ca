"""
Log output: twisted.logger events as readable text lines or one JSON object per line.

Every event may carry C{server} (the app's name); text lines show it in brackets, JSON
lines as a field. Twisted's chatty per-connection events are dropped below debug level.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO

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
