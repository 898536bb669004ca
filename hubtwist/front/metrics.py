"""
C{hubtwist chp --metrics-port PORT} (or C{--metrics-socket PATH}): configurable-http-
proxy's Prometheus metrics, same names and meanings, at C{GET /metrics} on a listener of
their own (neither the proxy nor the REST API is served there).

CHP's metrics (prom-client), as hubtwist counts them (L{ChpCounts}, plain ints):

  - C{requests_web}: HTTP requests on the proxy port, C{/_chp_healthz} aside;
    C{requests_ws}: WebSocket handshakes;
  - C{requests_proxy{status}}: the status of each target response relayed, and the
    proxy's own errors (404 no route, 503 target failed, 500 path that does not decode);
  - C{requests_api{status}}: REST API answers; C{api_route_get} (whole-table GETs
    answered), C{api_route_add} (routes added), C{api_route_delete} (DELETEs, found or not);
  - C{find_target_for_req}, C{last_activity_updating}: summaries (seconds) of the route
    lookups and the C{last_activity} stamps, with CHP's quantiles.

CHP's counters carry no C{_total} suffix (prom-client writes the name as given), and
dashboards query them by those names; prometheus_client adds the suffix to anything typed
C{counter}. So they are written as C{untyped} families under CHP's exact names: the same
series, which C{rate()} reads as it reads a counter. hubtwist's own additions are proper
counters: C{hubtwist_chp_requests_total{kind="lean"|"ordinary"}} (how the HTTP requests
were served: the split of C{requests_web}) and C{hubtwist_info}. The process' C{process_*}
metrics come with the page (L{PrometheusPage}).
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, Metric, UnknownMetricFamily
from twisted.web.resource import Resource

from hubtwist.counting import ChpCounts, Sampled, by_status
from hubtwist.web.metrics import PrometheusPage, info_family

__all__ = ["ChpCollector", "MetricsRoot", "QUANTILES"]

QUANTILES = (0.01, 0.05, 0.5, 0.9, 0.95, 0.99, 0.999)
"""The quantiles CHP's summaries report (prom-client's defaults)."""


def _untyped(name: str, documentation: str, value: int) -> UnknownMetricFamily:
    return UnknownMetricFamily(name, documentation, value=value)


def _by_status(name: str, documentation: str, counts: list[int]) -> UnknownMetricFamily:
    family = UnknownMetricFamily(name, documentation, labels=["status"])
    for status, count in by_status(counts):
        family.add_metric([status], count)
    return family


def _summary(name: str, documentation: str, sampled: Sampled) -> Metric:
    family = Metric(name, documentation, "summary")
    for q in QUANTILES:
        family.add_sample(name, {"quantile": repr(q)}, sampled.quantile(q))
    family.add_sample(name + "_sum", {}, sampled.total())
    family.add_sample(name + "_count", {}, sampled.calls)
    return family


class ChpCollector:
    """
    A prometheus_client collector over C{counts} (the route table's) and, when the proxy
    port has the lean path, its C{lean} factory (whose C{served} counts the requests it
    answered). Everything is read at C{collect} time.
    """

    def __init__(self, counts: ChpCounts, lean=None) -> None:
        self._counts = counts
        self._lean = lean

    def describe(self):
        return []  # the status label values vary with traffic

    def collect(self):
        counts = self._counts
        lean = self._lean.served if self._lean is not None else 0
        yield info_family()
        yield _untyped("api_route_get", "REST API GETs of the whole route table answered.",
                       counts.route_get)
        yield _untyped("api_route_add", "Routes added (or replaced) through the REST API.",
                       counts.route_add)
        yield _untyped("api_route_delete", "REST API DELETEs of a route, found or not.",
                       counts.route_delete)
        yield _summary("find_target_for_req", "Route lookups, in seconds (one in 64 timed).",
                       counts.lookups)
        yield _summary("last_activity_updating",
                       "last_activity stamps on routes, in seconds (one in 64 timed).",
                       counts.activity)
        yield _untyped("requests_ws", "WebSocket handshakes on the proxy port.", counts.ws)
        yield _untyped("requests_web",
                       "HTTP requests on the proxy port (/_chp_healthz aside).",
                       counts.web + lean)
        yield _by_status("requests_proxy",
                         "Target responses relayed and the proxy's own errors, by status.",
                         counts.proxy)
        yield _by_status("requests_api", "REST API answers, by status.", counts.api)
        kinds = CounterMetricFamily(
            "hubtwist_chp_requests", "HTTP requests on the proxy port by how hubtwist served "
            "them: the lean path, or the ordinary one (requests_web is their sum).",
            labels=["kind"])
        kinds.add_metric(["lean"], lean)
        kinds.add_metric(["ordinary"], counts.web)
        yield kinds


class MetricsRoot(Resource):
    """The metrics listener's root: C{/metrics} is the page (L{PrometheusPage} over a
    L{ChpCollector}), any other path a 404."""

    isLeaf = True

    def __init__(self, counts: ChpCounts, lean=None) -> None:
        super().__init__()
        self.page = PrometheusPage(ChpCollector(counts, lean))

    def render(self, request):
        if request.path == b"/metrics":
            return self.page.render(request)
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Not Found: the metrics are at /metrics\n"
