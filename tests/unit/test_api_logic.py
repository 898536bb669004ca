"""The API's pure parts (hubtwist.web.api) and the log ring's followers, without a reactor."""

from __future__ import annotations

import json
import types

import pytest

from hubtwist.supervise.logring import LogLine, LogRing
from hubtwist.supervise.states import State
from hubtwist.supervise.supervisor import ExitStatus
from hubtwist.web.api import FollowBuffer, cors_headers, iso, parse_tail, readiness, sse_event


def test_a_named_origin_may_send_credentials_a_star_never():
    allowed = ("https://ok.example", "*")
    named = dict(cors_headers("https://OK.example", allowed, preflight=False))
    assert named == {b"access-control-allow-origin": b"https://OK.example",
                     b"access-control-allow-credentials": b"true"}
    star = dict(cors_headers("https://other.example", allowed, preflight=False))
    assert star == {b"access-control-allow-origin": b"*"}
    assert cors_headers("https://other.example", ("https://ok.example",), preflight=True) is None
    assert cors_headers("https://ok.example", (), preflight=True) is None
    preflight = dict(cors_headers("https://x.example", ("*",), preflight=True))
    assert b"access-control-allow-credentials" not in preflight
    assert b"POST" in preflight[b"access-control-allow-methods"]
    assert b"X-XSRFToken" in preflight[b"access-control-allow-headers"]


def test_tail_is_a_count_of_lines():
    assert parse_tail(None) is None and parse_tail("") is None
    assert parse_tail("0") == 0 and parse_tail("25") == 25
    for bad in ("-1", "x", "1.5", " 3"):
        with pytest.raises(ValueError, match="tail must be"):
            parse_tail(bad)


def _keeper(state: State, autostart: bool):
    return types.SimpleNamespace(state=state, config=types.SimpleNamespace(autostart=autostart))


def test_ready_means_every_autostart_server_running():
    assert readiness({}) == (True, {})
    keepers = {"a": _keeper(State.RUNNING, True), "lazy": _keeper(State.STOPPED, False)}
    assert readiness(keepers) == (True, {"a": "running"})
    keepers["b"] = _keeper(State.BACKOFF, True)
    assert readiness(keepers) == (False, {"a": "running", "b": "backoff"})


def test_a_follow_buffer_keeps_the_newest_events_and_says_how_many_it_dropped():
    buffer = FollowBuffer(limit=3)
    for index in range(5):
        buffer.push(b"%d" % index)
    assert len(buffer) == 3 and buffer.dropped == 2
    events = buffer.drain()
    assert events[1:] == [b"2", b"3", b"4"]
    assert events[0] == b'event: dropped\ndata: {"dropped": 2}\n\n'
    assert buffer.drain() == [] and buffer.dropped == 0


def test_sse_events_carry_the_line_number_and_json():
    event = sse_event(7, LogLine(0.5, "stderr", "a\nb"))
    lines = event.split(b"\n")
    assert lines[0] == b"id: 7" and event.endswith(b"\n\n") and len(lines) == 4
    assert json.loads(lines[1].removeprefix(b"data: ")) == {
        "time": "1970-01-01T00:00:00.500000Z", "stream": "stderr", "text": "a\nb"}
    assert iso(None) is None


def test_followers_get_new_lines_and_numbers_survive_the_ring_dropping_old_ones():
    ring = LogRing(size=3)
    seen = []
    stop = ring.follow(seen.append)
    for index in range(5):
        ring.append(LogLine(float(index), "stdout", str(index)))
    assert [line.text for line in seen] == ["0", "1", "2", "3", "4"] and ring.followers == 1
    assert ring.total == 5
    assert [(n, line.text) for n, line in ring.numbered()] == [(3, "2"), (4, "3"), (5, "4")]
    assert [n for n, _ in ring.numbered(after=4)] == [5]
    assert ring.tail(0) == [] and [line.text for line in ring.tail(1)] == ["4"]
    stop()
    ring.append(LogLine(5.0, "stdout", "5"))
    assert len(seen) == 5 and ring.followers == 0


def test_a_failing_follower_is_dropped_and_the_ring_goes_on():
    ring = LogRing()
    good = []

    def broken(line):
        raise RuntimeError("boom")

    ring.follow(broken)
    ring.follow(good.append)
    ring.append(LogLine(0.0, "stdout", "one"))
    ring.append(LogLine(1.0, "stdout", "two"))
    assert [line.text for line in good] == ["one", "two"] and ring.followers == 1
    assert len(ring) == 2


def test_exit_status_describes_itself():
    assert ExitStatus(1, None, 0.0, 1.0, False).describe() == "exited with status 1"
    assert ExitStatus(None, "SIGKILL", 0.0, 1.0, True).describe() == "killed by signal SIGKILL"
