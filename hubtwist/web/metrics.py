"""
C{GET metrics}: hubtwist's counters in the Prometheus text format (prometheus_client).

The proxy counts with plain ints and dicts (L{hubtwist.counting.Traffic}); L{TrafficCollector}
turns them, and the keepers' states, into metric families only when a scraper asks. See
docs/metrics.md for every metric.
"""

from __future__ import annotations

from typing import Mapping

from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from hubtwist import __version__
from hubtwist.counting import Histogram, Traffic

__all__ = ["TrafficCollector", "MetricsPage", "PrometheusPage", "STATES", "info_family"]

STATES = ("stopped", "starting", "running", "backoff", "exited", "fatal", "stopping")


def _status_class(code: int) -> str:
    return f"{code // 100}xx" if 100 <= code < 600 else "other"


def info_family() -> GaugeMetricFamily:
    """C{hubtwist_info{version}}, always 1."""
    info = GaugeMetricFamily("hubtwist_info", "hubtwist's version (always 1).",
                             labels=["version"])
    info.add_metric([__version__], 1)
    return info


def _histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    family.add_metric(labels, histogram.cumulative(), histogram.sum)


class TrafficCollector:
    """
    A prometheus_client collector over a L{Traffic} and the keepers (name -> Supervisor or
    ExternalServer): everything is read at C{collect} time.
    """

    def __init__(self, traffic: Traffic, keepers: Mapping[str, object]) -> None:
        self._traffic = traffic
        self._keepers = keepers

    def describe(self):
        return []  # families vary with traffic; nothing to check at registration

    def collect(self):
        traffic = self._traffic
        yield info_family()

        requests = CounterMetricFamily(
            "hubtwist_requests", "Requests answered, by server (_hubtwist: hubtwist's own "
            "answers), method and status class.", labels=["server", "method", "status"])
        by_class: dict[tuple[str, str, str], int] = {}
        for (server, method, code), count in list(traffic.requests.items()):
            key = (server, method.decode("latin-1"), _status_class(code))
            by_class[key] = by_class.get(key, 0) + count
        for labels, count in sorted(by_class.items()):
            requests.add_metric(list(labels), count)
        yield requests

        total = sum(by_class.values())
        lean = min(traffic.lean.served, total) if traffic.lean is not None else 0
        paths = CounterMetricFamily(
            "hubtwist_requests_by_path", "The requests of hubtwist_requests by the path that "
            "answered them: lean (plain GET/HEAD proxied without twisted.web's request "
            "object) or ordinary (everything else); a low lean share in Hub mode means "
            "requests whose identity was not cached yet, bodies, or WebSockets.",
            labels=["path"])
        paths.add_metric(["lean"], lean)
        paths.add_metric(["ordinary"], total - lean)
        yield paths

        latency = HistogramMetricFamily(
            "hubtwist_request_duration_seconds",
            "Time from the request head to the last byte of the answer, by server.",
            labels=["server"])
        bytes_in = CounterMetricFamily("hubtwist_request_body_bytes",
                                       "Request body bytes received from clients, by server.",
                                       labels=["server"])
        bytes_out = CounterMetricFamily("hubtwist_response_body_bytes",
                                        "Response body bytes sent to clients, by server.",
                                        labels=["server"])
        for server, counts in sorted(traffic.servers.items()):
            _histogram(latency, [server], counts.latency)
            bytes_in.add_metric([server], counts.bytes_in)
            bytes_out.add_metric([server], counts.bytes_out)
        yield latency
        yield bytes_in
        yield bytes_out

        opened = CounterMetricFamily("hubtwist_websockets_opened",
                                     "WebSockets bridged (a 101 sent), by server.",
                                     labels=["server"])
        open_now = GaugeMetricFamily("hubtwist_websockets_open",
                                     "WebSockets open now, by server.", labels=["server"])
        for server, count in sorted(traffic.websockets_opened.items()):
            opened.add_metric([server], count)
            open_now.add_metric([server], count - traffic.websockets_closed.get(server, 0))
        yield opened
        yield open_now

        state = GaugeMetricFamily("hubtwist_server_state",
                                  "1 for each server's current state, 0 for the others.",
                                  labels=["server", "state"])
        restarts = CounterMetricFamily("hubtwist_server_restarts",
                                       "Restarts of each server after it exited or failed.",
                                       labels=["server"])
        for name, keeper in sorted(self._keepers.items()):
            current = keeper.state.value
            for value in STATES:
                state.add_metric([name, value], 1 if value == current else 0)
            restarts.add_metric([name], getattr(keeper, "restarts", 0))
        yield state
        yield restarts

        startup = HistogramMetricFamily(
            "hubtwist_server_startup_seconds",
            "Time from starting a server to its readiness check passing.", labels=["server"])
        for server, histogram in sorted(traffic.startups.items()):
            _histogram(startup, [server], histogram)
        yield startup

        hub = HistogramMetricFamily("hubtwist_hub_api_duration_seconds",
                                    "Hub API call attempts, by call.", labels=["call"])
        hub_errors = CounterMetricFamily(
            "hubtwist_hub_api_errors",
            "Hub API call attempts without an answer or answered with a 5xx, by call.",
            labels=["call"])
        for call, histogram in sorted(traffic.hub_calls.items()):
            _histogram(hub, [call], histogram)
            hub_errors.add_metric([call], traffic.hub_errors.get(call, 0))
        yield hub
        yield hub_errors


class PrometheusPage:
    """A metrics page (the Prometheus text format): C{collector}'s families and the
    process' CPU, memory and file descriptors (C{process_*}). hubtwist's own page
    (L{MetricsPage}) and C{hubtwist chp}'s (hubtwist.front.metrics) are both rendered here."""

    def __init__(self, collector) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)

    def render(self, request) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"405: metrics are read with GET\n"
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class MetricsPage(PrometheusPage):
    """Renders C{GET metrics}: L{TrafficCollector} and the process' CPU and memory."""

    def __init__(self, traffic: Traffic, keepers: Mapping[str, object]) -> None:
        super().__init__(TrafficCollector(traffic, keepers))
