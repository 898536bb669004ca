"""
C{hubtwist chp --metrics-port}: configurable-http-proxy's Prometheus metrics (same names,
same meanings) on a listener of their own, checked against a real subprocess; and the pure
parts (the sampled summaries, the collector's families) without a reactor.
"""

from __future__ import annotations

import math
import re
import socket
import subprocess
import sys

import pytest
import requests
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hubtwist.counting import FAST_BOUNDS, ChpCounts, Sampled, by_status
from hubtwist.front.metrics import QUANTILES, ChpCollector
from hubtwist.front.routes import RouteTable
from hubtwist.web.metrics import PrometheusPage
from tests.front.conftest import free_port, wait_until
from tests.helpers import APPS

CHP_COUNTERS = ("api_route_get", "api_route_add", "api_route_delete", "requests_ws",
                "requests_web", "requests_proxy", "requests_api")
CHP_SUMMARIES = ("find_target_for_req", "last_activity_updating")


def parse(text: str) -> dict:
    """The page as {(sample name, ((label, value), ...)): value}; raises on anything that
    is not the Prometheus text format, and checks each sample belongs to its family."""
    samples = {}
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            assert sample.name.startswith(family.name), (family.name, sample.name)
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    samples["__types__"] = families
    return samples


class Metrics:
    """The metrics listener of a running C{hubtwist chp}, found in its log."""

    def __init__(self, proxy) -> None:
        def announced():
            for line in proxy.lines:
                found = re.search(r"Serve metrics at http://([^ ]+)/metrics", line)
                if found:
                    return found.group(1)
            return None

        wait_until(announced, 20, "the metrics listener")
        self.url = "http://" + announced().replace("*", "127.0.0.1")

    def scrape(self) -> dict:
        response = requests.get(self.url + "/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return parse(response.text)


def value(page: dict, name: str, **labels) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: dict, after: dict) -> dict:
    """The samples that changed (by how much), the summaries' quantiles and sums aside."""
    return {key: after[key] - before.get(key, 0.0) for key in after
            if key != "__types__" and not key[0].startswith(("process_", "hubtwist_info"))
            and not key[0].endswith("_sum") and not any(n == "quantile" for n, _ in key[1])
            and after[key] != before.get(key, 0.0)}


def K(name: str, **labels) -> tuple:
    return (name, tuple(sorted(labels.items())))


@pytest.fixture
def metered(chp):
    def start(*args: str, **kwargs):
        proxy = chp("--metrics-ip", "127.0.0.1", "--metrics-port", "0", *args, **kwargs)
        return proxy, Metrics(proxy)

    return start


def test_the_page_has_chp_names_types_and_process_metrics(metered):
    _proxy, metrics = metered()
    page = metrics.scrape()
    types = page["__types__"]
    for name in CHP_COUNTERS:
        # prom-client writes CHP's counters without _total; dashboards use these names.
        assert types[name] == "unknown", name
        assert not any(key[0] == name + "_total" for key in page if key != "__types__")
    for name in CHP_SUMMARIES:
        assert types[name] == "summary"
        assert {dict(key[1]).get("quantile") for key in page
                if key != "__types__" and key[0] == name} == {repr(q) for q in QUANTILES}
    for name in ("api_route_get", "requests_web", "requests_ws"):
        assert value(page, name) == 0
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_start_time_seconds", "process_open_fds"):
        assert (name, ()) in page, name
    assert types["hubtwist_chp_requests"] == "counter"


def test_proxied_requests_are_counted_by_path_kind_and_status(metered, echo):
    target = echo()
    proxy, metrics = metered()
    proxy.add("/user/a", target.url)
    proxy.add("/down", f"http://127.0.0.1:{free_port()}")
    session = requests.Session()
    before = metrics.scrape()
    for _ in range(5):  # plain GETs: the lean path
        assert session.get(proxy.url + "/user/a/tree", timeout=10).status_code == 200
    assert moved(before, metrics.scrape()) == {
        K("requests_web"): 5, K("hubtwist_chp_requests_total", kind="lean"): 5,
        K("requests_proxy", status="200"): 5, K("find_target_for_req_count"): 5,
        K("last_activity_updating_count"): 5,
    }

    before = metrics.scrape()
    for _ in range(3):  # with a body: the ordinary path
        response = session.post(proxy.url + "/user/a/api", data=b"x" * 100, timeout=10)
        assert response.status_code == 200
    assert session.get(proxy.url + "/user/a/status/418", timeout=10).status_code == 418
    assert moved(before, metrics.scrape()) == {
        K("requests_web"): 4, K("hubtwist_chp_requests_total", kind="ordinary"): 3,
        K("hubtwist_chp_requests_total", kind="lean"): 1,
        K("requests_proxy", status="200"): 3, K("requests_proxy", status="418"): 1,
        K("find_target_for_req_count"): 4,
        # each POST: its body went through, then its answer (< 300) was sent in full
        K("last_activity_updating_count"): 6,
    }

    before = metrics.scrape()
    assert session.get(proxy.url + "/nowhere", timeout=10).status_code == 404
    assert session.get(proxy.url + "/down/x", timeout=10).status_code == 503
    assert session.get(proxy.url + "/_chp_healthz", timeout=10).status_code == 200
    changed = moved(before, metrics.scrape())
    assert changed.pop(K("find_target_for_req_count")) >= 2
    assert changed == {  # the health check is not a web request (as CHP counts)
        K("requests_web"): 2, K("requests_proxy", status="404"): 1,
        K("requests_proxy", status="503"): 1,
        # the lean path takes /down (it has a target) and hands /nowhere over
        K("hubtwist_chp_requests_total", kind="lean"): 1,
        K("hubtwist_chp_requests_total", kind="ordinary"): 1,
    }


def test_websockets_are_counted_as_chp_counts_them(metered):
    from websockets.sync.client import connect

    port = free_port()
    app = subprocess.Popen([sys.executable, str(APPS / "wsapp.py"), "--port", str(port)])
    try:
        wait_until(lambda: _listening(port), 20, "the WebSocket app")
        proxy, metrics = metered("--no-include-prefix")
        proxy.add("/user/a", f"http://127.0.0.1:{port}")
        before = metrics.scrape()
        with connect(f"ws://127.0.0.1:{proxy.port}/user/a/echo", open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
        with pytest.raises(Exception):
            connect(f"ws://127.0.0.1:{proxy.port}/nowhere/echo", open_timeout=10)
        changed = moved(before, metrics.scrape())
        assert changed.pop(K("last_activity_updating_count")) >= 1  # the messages
        # CHP counts no status for a bridged WebSocket, only its own errors.
        assert changed == {K("requests_ws"): 2, K("requests_proxy", status="404"): 1,
                           K("find_target_for_req_count"): 2}
    finally:
        app.terminate()
        app.wait(10)


def test_api_requests_are_counted_as_chp_counts_them(metered):
    proxy, metrics = metered()
    before = metrics.scrape()
    assert proxy.api("GET").status_code == 200
    assert proxy.api("GET", "?inactive_since=nonsense").status_code == 400
    assert proxy.api("GET", "/user/a").status_code == 404  # one route: not api_route_get
    assert proxy.api("POST", "/user/a", json={"target": "http://127.0.0.1:9"}).status_code == 201
    assert proxy.api("POST", "/user/b", json={"no": "target"}).status_code == 400
    assert proxy.api("DELETE", "/user/a").status_code == 204
    assert proxy.api("DELETE", "/user/a").status_code == 404  # CHP counts it too
    assert proxy.api("PUT", "/user/a").status_code == 405
    assert proxy.api("GET", headers={"Authorization": "token wrong"}).status_code == 403
    assert requests.get(proxy.api_url + "/elsewhere", timeout=10).status_code == 404
    assert moved(before, metrics.scrape()) == {
        K("api_route_get"): 1, K("api_route_add"): 1, K("api_route_delete"): 2,
        K("requests_api", status="200"): 1, K("requests_api", status="201"): 1,
        K("requests_api", status="204"): 1, K("requests_api", status="400"): 2,
        K("requests_api", status="403"): 1, K("requests_api", status="404"): 3,
        K("requests_api", status="405"): 1,
    }


def test_listeners_keep_to_their_own(metered, echo):
    target = echo("root")
    proxy, metrics = metered()
    proxy.add("/", target.url)
    before = metrics.scrape()
    # The proxy port routes /metrics like any path (here to the / route's target).
    routed = requests.get(proxy.url + "/metrics", timeout=10)
    assert routed.status_code == 200 and routed.json()["name"] == "root"
    assert routed.json()["url"] == "/metrics"
    # The API port has no /metrics; the metrics port serves neither the API nor the proxy.
    assert requests.get(proxy.api_url + "/metrics", timeout=10).status_code == 404
    for path in ("/api/routes", "/", "/user/a", "/_chp_healthz", "/metrics/x"):
        assert requests.get(metrics.url + path, timeout=10).status_code == 404, path
    changed = moved(before, metrics.scrape())
    assert changed[K("requests_web")] == 1 and changed[K("requests_api", status="404")] == 1
    assert K("api_route_get") not in changed
    # Scrapes are reads: other methods are refused.
    assert requests.post(metrics.url + "/metrics", timeout=10).status_code == 405


def test_metrics_on_a_unix_socket(chp, tmp_path):
    path = str(tmp_path / "metrics.sock")
    proxy = chp("--metrics-socket", path)
    wait_until(lambda: any("Serve metrics at http://" + path in line for line in proxy.lines),
               20, "the metrics socket")
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(path)
        client.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    assert ("requests_web", ()) in parse(body.decode())


@pytest.mark.parametrize("args", [
    ["--metrics-socket", "/tmp/m.sock", "--metrics-port", "9000"],
    ["--metrics-socket", "/tmp/m.sock", "--metrics-ip", "127.0.0.1"],
])
def test_metrics_socket_excludes_ip_and_port(args):
    done = subprocess.run([sys.executable, "-m", "hubtwist", "chp", *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--metrics-socket cannot be given with" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# -- pure parts ------------------------------------------------------------------------------


def test_lookups_and_stamps_are_all_counted_and_one_in_64_timed():
    table = RouteTable()
    route = table.add("/user/a", {"target": "http://127.0.0.1:9"}, 0.0)
    for step in range(130):
        assert table.match("/user/a/x") is route
        route.touch(float(step))
        assert route.last_activity == step  # timed or not, the stamp is made
    for sampled in (table.counts.lookups, table.counts.activity):
        assert sampled.calls == 130
        assert sampled.timed.count == 3  # calls 1, 65 and 129
    assert table.match("/elsewhere") is None and table.counts.lookups.calls == 131


def test_sampled_quantiles_and_total():
    sampled = Sampled()
    assert math.isnan(sampled.quantile(0.5)) and sampled.total() == 0.0
    for seconds in [1e-6] * 90 + [1e-3] * 10:
        sampled.timed.observe(seconds)
    sampled.calls = 6400  # 100 of them timed
    for q, expected in ((0.5, 1e-6), (0.9, 1e-6), (0.95, 1e-3), (0.99, 1e-3)):
        estimate = sampled.quantile(q)
        assert expected / 1.34 <= estimate <= expected * 1.34, (q, estimate)
    # the timed calls' mean times the count of all calls
    assert sampled.total() == pytest.approx((90e-6 + 10e-3) / 100 * 6400)
    sampled.timed.observe(100.0)  # beyond the last bucket
    assert sampled.quantile(1.0) == FAST_BOUNDS[-1]


def test_by_status_lists_the_statuses_seen():
    counts = ChpCounts()
    counts.proxy[404] += 2
    counts.proxy[200] += 1
    assert by_status(counts.proxy) == [("200", 1), ("404", 2)]
    assert by_status(counts.api) == []


class _Lean:
    served = 7


def test_collector_renders_chp_names_and_the_lean_split():
    counts = ChpCounts()
    counts.web, counts.ws, counts.route_get, counts.route_add, counts.route_delete = 3, 2, 4, 5, 6
    counts.proxy[200] = 9
    counts.proxy[503] = 1
    counts.api[201] = 5
    counts.lookups.calls = 12
    counts.lookups.timed.observe(2e-6)
    page = parse(generate_latest(PrometheusPage(ChpCollector(counts, _Lean())).registry).decode())
    assert value(page, "requests_web") == 10  # the ordinary path's 3 and the lean path's 7
    assert value(page, "hubtwist_chp_requests_total", kind="lean") == 7
    assert value(page, "hubtwist_chp_requests_total", kind="ordinary") == 3
    assert value(page, "requests_ws") == 2
    assert (value(page, "api_route_get"), value(page, "api_route_add"),
            value(page, "api_route_delete")) == (4, 5, 6)
    assert value(page, "requests_proxy", status="200") == 9
    assert value(page, "requests_proxy", status="503") == 1
    assert K("requests_proxy", status="404") not in page
    assert value(page, "requests_api", status="201") == 5
    assert value(page, "find_target_for_req_count") == 12
    assert value(page, "find_target_for_req_sum") == pytest.approx(24e-6)
    assert 1e-6 < value(page, "find_target_for_req", quantile="0.5") <= 2e-6 * 1.34
    assert math.isnan(value(page, "last_activity_updating", quantile="0.5"))
    # without the lean path (a proxy on a port it cannot take), the ordinary count alone
    alone = parse(generate_latest(PrometheusPage(ChpCollector(counts)).registry).decode())
    assert value(alone, "requests_web") == 3
