"""
The counting behind the metrics, their Prometheus exposition and the access log's lines,
without a reactor: plain functions and objects.
"""

from __future__ import annotations

import io
import json

from prometheus_client.parser import text_string_to_metric_families

from hubtwist.counting import Histogram, Traffic, method_label, server_label
from hubtwist.logs import AccessLog, loggable_target
from hubtwist.supervise import State
from hubtwist.web.metrics import MetricsPage


def samples(text: str) -> dict:
    """{(sample name, sorted labels): value} from the Prometheus text format."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class _Keeper:
    def __init__(self, state: State, restarts: int) -> None:
        self.state = state
        self.restarts = restarts


class _Request:
    method = b"GET"

    def __init__(self) -> None:
        self.headers = {}
        self.code = 200

    def setHeader(self, name, value) -> None:
        self.headers[name] = value

    def setResponseCode(self, code) -> None:
        self.code = code


def test_histogram_buckets_are_cumulative_with_inf_last():
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.count == 4 and abs(histogram.sum - 3.65) < 1e-9


def test_labels_bound_what_clients_choose():
    assert method_label(b"GET") == b"GET" and method_label(b"FOO") == b"OTHER"
    assert server_label("lab") == "lab" and server_label("proxy/8080") == "proxy"


def test_the_exposition_parses_and_has_every_family():
    traffic = Traffic()
    traffic.request("app", b"GET", 200, 0.003, 0, 1024)
    traffic.request("app", b"GET", 204, 0.2, 0, 0)
    traffic.request("app", b"POST", 502, 0.01, 100, 50)
    traffic.request("_hubtwist", b"GET", 404, 0.0001, 0, 10)
    traffic.websocket_opened("app")
    traffic.websocket_opened("app")
    traffic.websocket_closed("app")
    traffic.startup("app", 1.5)
    traffic.hub_call("user", 0.02, False)
    traffic.hub_call("user", 10.0, True)
    page = MetricsPage(traffic, {"app": _Keeper(State.BACKOFF, 3)})
    request = _Request()
    found = samples(page.render(request).decode())
    assert request.headers[b"content-type"].startswith(b"text/plain; version=")
    assert found[("hubtwist_requests_total",
                  (("method", "GET"), ("server", "app"), ("status", "2xx")))] == 2
    assert found[("hubtwist_requests_total",
                  (("method", "POST"), ("server", "app"), ("status", "5xx")))] == 1
    assert found[("hubtwist_requests_total",
                  (("method", "GET"), ("server", "_hubtwist"), ("status", "4xx")))] == 1
    assert found[("hubtwist_request_duration_seconds_count", (("server", "app"),))] == 3
    assert found[("hubtwist_request_duration_seconds_bucket",
                  (("le", "0.005"), ("server", "app")))] == 1
    assert found[("hubtwist_request_body_bytes_total", (("server", "app"),))] == 100
    assert found[("hubtwist_response_body_bytes_total", (("server", "app"),))] == 1074
    assert found[("hubtwist_websockets_opened_total", (("server", "app"),))] == 2
    assert found[("hubtwist_websockets_open", (("server", "app"),))] == 1
    assert found[("hubtwist_server_state", (("server", "app"), ("state", "backoff")))] == 1
    assert found[("hubtwist_server_state", (("server", "app"), ("state", "running")))] == 0
    assert found[("hubtwist_server_restarts_total", (("server", "app"),))] == 3
    assert found[("hubtwist_server_startup_seconds_count", (("server", "app"),))] == 1
    assert found[("hubtwist_hub_api_duration_seconds_count", (("call", "user"),))] == 2
    assert found[("hubtwist_hub_api_errors_total", (("call", "user"),))] == 1
    assert ("process_cpu_seconds_total", ()) in found


def test_only_get_reads_the_metrics():
    request = _Request()
    request.method = b"POST"
    MetricsPage(Traffic(), {}).render(request)
    assert request.code == 405


def test_query_secrets_never_reach_the_log():
    assert loggable_target(b"/app/x") == "/app/x"
    assert loggable_target(b"/a?token=t&x=1&_xsrf=y&code=c&state=s&page=2") == "/a?x=1&page=2"
    assert loggable_target(b"/a?api_key=k&client_secret=s&Password=p&access_token=a"
                           b"&X-Amz-Signature=z&SESSION_id=q") == "/a"
    assert loggable_target(b"/a?%74oken=t&q") == "/a?q"  # percent-encoded name
    assert loggable_target(b"/a?") == "/a?"  # as sent: nothing to drop


def _line(fmt: str, **overrides) -> str:
    stream = io.StringIO()
    fields = dict(server="app", method=b"GET", target=b"/app/x?token=secret&page=2", code=200,
                  seconds=0.0123, bytes_in=0, bytes_out=1024, user="alice",
                  client=b"127.0.0.1", own=False)
    fields.update(overrides)
    AccessLog(fmt, stream, clock=lambda: 1_800_000_000.5).write(**fields)
    return stream.getvalue()


def test_a_text_line_has_every_field_and_no_secret():
    line = _line("text")
    assert line.endswith("\n") and line.count("\n") == 1
    assert ' info    hubtwist.access: 127.0.0.1 alice "GET /app/x?page=2" 200 1024 12.300ms ' \
           'server=app in=0 by=app' in line
    assert "secret" not in line


def test_a_text_line_cannot_be_split_by_what_a_client_sends():
    line = _line("text", target=b'/a\r\n2026 error fake"line', user=None)
    assert line.count("\n") == 1 and '\\x0d\\x0a' in line and '\\x22' in line
    assert " - " in line  # no user


def test_a_json_line_has_every_field_and_no_secret():
    record = json.loads(_line("json", own=True, code=404, server="_hubtwist", user=None))
    assert record == {
        "time": record["time"], "level": "info", "namespace": "hubtwist.access",
        "message": "GET /app/x?page=2 404", "method": "GET", "path": "/app/x?page=2",
        "status": 404, "duration_ms": 12.3, "bytes_in": 0, "bytes_out": 1024,
        "server": "_hubtwist", "user": None, "client": "127.0.0.1", "answered_by": "hubtwist",
    }


def test_the_trace_of_own_answers_is_rate_limited_and_says_how_many_it_held_back():
    stream = io.StringIO()
    now = [1000.0]
    trace = AccessLog("text", stream, limit=2, window=10.0, clock=lambda: now[0])
    for _ in range(5):
        trace.write("_hubtwist", b"GET", b"/x", 404, 0.001, 0, 10, None, "127.0.0.1", True)
    assert stream.getvalue().count("\n") == 2
    now[0] += 10
    trace.write("_hubtwist", b"GET", b"/y", 404, 0.001, 0, 10, None, "127.0.0.1", True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and '"GET /y"' in lines[2]
    assert "3 more answer(s) of hubtwist itself not logged" in lines[3]


def test_access_lines_are_written_in_batches_within_a_quarter_second():
    from twisted.internet.task import Clock

    clock, stream = Clock(), io.StringIO()
    log = AccessLog("text", stream, reactor=clock)
    for _ in range(3):
        log.write("app", b"GET", b"/x", 200, 0.001, 0, 10, None, "127.0.0.1", False)
    assert stream.getvalue() == ""
    clock.advance(AccessLog.FLUSH_DELAY)
    assert stream.getvalue().count("\n") == 3 and not clock.getDelayedCalls()
    log.write("app", b"GET", b"/y", 200, 0.001, 0, 10, None, "127.0.0.1", False)
    log.flush()  # at shutdown
    assert stream.getvalue().count("\n") == 4 and not clock.getDelayedCalls()
    big = b"/" + b"z" * AccessLog.FLUSH_SIZE
    log.write("app", b"GET", big, 200, 0.001, 0, 10, None, "127.0.0.1", False)
    assert stream.getvalue().count("\n") == 5  # a full batch goes at once
