"""
The activity reporter: tells the Hub when the apps were last used, so that
jupyterhub-idle-culler can stop servers nobody uses — and only those.

Activity is real: the newest C{last_activity} of the keepers, which the proxy stamps on
every request that counts (see C{update_last_activity} and
C{exclude_last_activity_patterns}). A report goes out each interval only when there was
activity since the last one; an idle server stays idle. C{keep_alive} reproduces
jhsingle-native-proxy's C{--force-alive} (report "now" every time) for those who want it.

Time is injected: C{clock} (an C{IReactorTime}) schedules, C{now} gives wall-clock time.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone
from typing import Awaitable, Callable, Iterable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from hubtwist.hub.client import HubRefused, HubUnavailable, retry_delay

log = Logger(namespace="hubtwist.hub")

RETRY_FOR = 60.0  # seconds a report is retried, as jupyterhub-singleuser
RETRY_INITIAL, RETRY_MAX = 1.0, 15.0
JITTER = 0.1  # reports spread over +-10% of the interval, so servers do not report in step


def iso8601(stamp: float) -> str:
    """C{2026-11-21T10:00:00.123456Z}, the form the Hub's activity API takes."""
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat().replace("+00:00", "Z")


def activity_report(server_name: str, stamp: float) -> dict:
    """The body of C{POST /hub/api/users/NAME/activity} for one server."""
    when = iso8601(stamp)
    return {"servers": {server_name: {"last_activity": when}}, "last_activity": when}


def latest(stamps: Iterable[float | None]) -> float | None:
    """The newest of the stamps that are set, or C{None}."""
    known = [stamp for stamp in stamps if stamp is not None]
    return max(known) if known else None


class ActivityReporter:
    """
    Every C{interval} seconds (with jitter), report the newest of C{sources()} to C{url}
    through C{post(url, report)} when it is newer than the last report.
    """

    def __init__(self, clock, post: Callable[[str, dict], Awaitable[None]], *, url: str,
                 server_name: str, sources: Callable[[], Iterable[float | None]], interval: float,
                 keep_alive: bool = False, now: Callable[[], float] = time.time,
                 jitter: Callable[[float, float], float] = random.uniform) -> None:
        self._clock = clock
        self._post = post
        self.url = url
        self.server_name = server_name
        self._sources = sources
        self.interval = interval
        self.keep_alive = keep_alive
        self._now = now
        self._jitter = jitter
        self.last_reported: float | None = None
        self._call = None
        self._running: Deferred | None = None

    def start(self) -> None:
        log.info("Reporting activity to the Hub every {interval:g} s{mode}", interval=self.interval,
                 mode=" (keep_alive: always, even when idle)" if self.keep_alive else
                 " when there was any")
        self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._running is not None:
            self._running.cancel()

    def _schedule(self) -> None:
        delay = self.interval * (1 + self._jitter(-JITTER, JITTER))
        self._call = self._clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._running = Deferred.fromCoroutine(self.report_once())
        self._running.addErrback(lambda failure: failure.trap(CancelledError))
        self._running.addErrback(lambda failure: log.failure("Activity reporting failed", failure))
        self._running.addBoth(self._ticked)

    def _ticked(self, _result) -> None:
        self._running = None
        if self._call is not None:  # not stopped meanwhile
            self._schedule()

    async def report_once(self) -> bool:
        """Report if there is something new; retry failures with backoff for a minute."""
        stamp = self._now() if self.keep_alive else latest(self._sources())
        if stamp is None or (self.last_reported is not None and stamp <= self.last_reported):
            return False
        report = activity_report(self.server_name, stamp)
        deadline = self._clock.seconds() + RETRY_FOR
        attempt = 0
        while True:
            try:
                await self._post(self.url, report)
            except HubRefused as error:
                log.warn("Activity not recorded: {why}", why=str(error))
                return False
            except HubUnavailable as error:
                attempt += 1
                delay = retry_delay(attempt, RETRY_INITIAL, RETRY_MAX)
                if self._clock.seconds() + delay > deadline:
                    log.warn("Activity could not be reported for {seconds:g} s: {why}",
                             seconds=RETRY_FOR, why=str(error))
                    return False
                await deferLater(self._clock, delay, lambda: None)
                continue
            self.last_reported = stamp
            log.debug("Reported activity {when}", when=report["last_activity"])
            return True
