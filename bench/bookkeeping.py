"""
CPU per request of hubtwist's bookkeeping alone: the C{record} call every finished request
makes (hubtwist.app.request_recorder) with metrics off/on and the access log off/on, the
access log written to a real file. A proxied 1 KB request costs ~100-300 µs of CPU in all
(bench/run), so this says what share of it counting and logging take, without the noise of
a loaded machine that the end-to-end rows (`bench/run --targets
hubtwist-bare,hubtwist-metrics,hubtwist-access`) carry.

Run: C{python3 bench/bookkeeping.py} (a few seconds, one core); it imports this
checkout's hubtwist.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from time import monotonic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attrs  # noqa: E402

from hubtwist.app import request_recorder  # noqa: E402
from hubtwist.config.schema import Config  # noqa: E402
from hubtwist.counting import Traffic  # noqa: E402
from hubtwist.web.metrics import MetricsPage  # noqa: E402

ROUNDS = 200_000


class _Reactor:
    """Enough of a reactor for the access log's batching: the timer never fires here (the
    size limit flushes)."""

    class _Call:
        def active(self) -> bool:
            return True

        def cancel(self) -> None:
            pass

    def callLater(self, _delay, _function):
        return self._Call()


def per_call(record, rounds: int = ROUNDS) -> float:
    """µs of CPU per call of C{record} for a lean-path GET, best of three."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(rounds):
            begun = monotonic()  # what the lean path adds besides the call
            record("nginx", b"GET", b"/1k.bin?page=2", 200, monotonic() - begun, 0, 1024,
                   None, b"127.0.0.1", False)
        best = min(best, time.process_time() - started)
    return best / rounds * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        # line-buffered, as stderr is: one write(2) per line
        log = open(os.path.join(scratch, "access.log"), "w", buffering=1)
        sys.stderr, real_stderr = log, sys.stderr  # the access log writes to stderr
        try:
            rows = []
            for label, keys in [("metrics off, access log off", {"metrics": False}),
                                ("metrics on, access log off", {}),
                                ("metrics on, access log on", {"access_log": True}),
                                ("metrics on, access log on (JSON)",
                                 {"access_log": True, "log_format": "json"})]:
                config = attrs.evolve(Config(), **keys)
                traffic = Traffic() if config.metrics else None
                record = request_recorder(config, traffic, _Reactor())
                rows.append((label, per_call(record)))
                record.flush()
            traffic = Traffic()
            record = request_recorder(Config(), traffic)
            for index in range(1000):  # a scrape of a busy hubtwist: a few servers, codes
                record(f"app{index % 5}", b"GET", b"/", 200 + index % 3, 0.001 * index, 0, 10,
                       None, b"127.0.0.1", False)
            page = MetricsPage(traffic, {})

            class Request:
                method = b"GET"

                def setHeader(self, *_):
                    pass

            started = time.process_time()
            for _ in range(200):
                page.render(Request())
            scrape_ms = (time.process_time() - started) / 200 * 1e3
        finally:
            sys.stderr = real_stderr
            log.close()
    print("| bookkeeping per request | µs CPU |\n|---|---:|")
    for label, micros in rows:
        print(f"| {label} | {micros:.2f} |")
    print(f"\none scrape of `metrics` (5 servers, 3 status codes): {scrape_ms:.2f} ms CPU")


if __name__ == "__main__":
    main()
