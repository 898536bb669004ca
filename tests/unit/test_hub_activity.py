"""The activity reporter, driven by a fake clock (no reactor, no network)."""

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock

from hubtwist.hub.activity import ActivityReporter, activity_report, iso8601, latest
from hubtwist.hub.client import HubRefused, HubUnavailable, retry_delay

T0 = 1_800_000_000.0


class FakeHub:
    """Records reports; answers with the queued outcomes (None = accepted)."""

    def __init__(self, outcomes=()):
        self.reports = []
        self.outcomes = list(outcomes)

    def post(self, url, report):
        self.reports.append((url, report))
        outcome = self.outcomes.pop(0) if self.outcomes else None
        return fail(outcome) if outcome is not None else succeed(None)


def reporter(clock, hub, stamps, **kwargs):
    return ActivityReporter(clock, hub.post, url="http://hub/api/users/alice/activity",
                            server_name="", sources=lambda: stamps, interval=300,
                            jitter=lambda low, high: 0.0, **kwargs)


def test_the_report_body_is_what_the_hub_takes():
    assert iso8601(T0 + 0.25) == "2027-01-15T08:00:00.250000Z"
    assert activity_report("srv1", T0) == {
        "servers": {"srv1": {"last_activity": "2027-01-15T08:00:00Z"}},
        "last_activity": "2027-01-15T08:00:00Z"}
    assert latest([None, 3.0, 5.0]) == 5.0 and latest([None]) is None


def test_reports_only_new_activity_each_interval():
    clock, hub, stamps = Clock(), FakeHub(), [None]
    r = reporter(clock, hub, stamps)
    r.start()
    clock.advance(300)
    assert hub.reports == []  # never used: nothing to say, the culler may cull
    stamps[0] = T0
    clock.advance(300)
    assert len(hub.reports) == 1 and hub.reports[0][1]["last_activity"] == iso8601(T0)
    clock.advance(300)
    clock.advance(300)
    assert len(hub.reports) == 1  # idle since: no more reports
    stamps[0] = T0 + 700
    clock.advance(300)
    assert len(hub.reports) == 2
    r.stop()
    stamps[0] = T0 + 2000
    clock.advance(3000)
    assert len(hub.reports) == 2


def test_keep_alive_reports_now_every_interval():
    clock, hub = Clock(), FakeHub()
    r = reporter(clock, hub, [None], keep_alive=True, now=lambda: T0 + clock.seconds())
    r.start()
    clock.advance(300)
    clock.advance(300)
    assert [report["last_activity"] for _, report in hub.reports] == [iso8601(T0 + 300), iso8601(T0 + 600)]


def test_an_unreachable_hub_is_retried_with_backoff_for_a_minute():
    clock = Clock()
    hub = FakeHub([HubUnavailable("down")] * 3)
    r = reporter(clock, hub, [T0])
    r.start()
    clock.advance(300)
    assert len(hub.reports) == 1
    clock.advance(retry_delay(1, 1.0, 15.0))
    clock.advance(retry_delay(2, 1.0, 15.0))
    clock.advance(retry_delay(3, 1.0, 15.0))
    assert len(hub.reports) == 4 and r.last_reported == T0


def test_giving_up_after_a_minute_and_trying_again_next_interval():
    clock = Clock()
    hub = FakeHub([HubUnavailable("down")] * 50)
    r = reporter(clock, hub, [T0])
    r.start()
    clock.advance(300)
    for _ in range(20):
        clock.advance(15)
    attempts = len(hub.reports)
    assert 4 <= attempts <= 8 and r.last_reported is None
    hub.outcomes = []
    clock.advance(300)
    assert r.last_reported == T0


def test_a_refusal_is_not_retried():
    clock = Clock()
    hub = FakeHub([HubRefused("an activity report", 400, "No such server")])
    r = reporter(clock, hub, [T0])
    r.start()
    clock.advance(300)
    clock.advance(60)
    assert len(hub.reports) == 1 and r.last_reported is None


def test_retry_delays_double_up_to_the_cap():
    assert [retry_delay(n, 0.5, 8) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, 8]
