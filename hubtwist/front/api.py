"""
The REST API of C{hubtwist chp}, with configurable-http-proxy's semantics (what
JupyterHub's C{ConfigurableHTTPProxy} class relies on):

  - C{GET /api/routes[?inactive_since=ISO8601]}: the whole table, C{{path: {target,
    last_activity, ...every posted key}}}, the C{/} route included; a bad date is a 400.
    (C{inactiveSince} is accepted too.)
  - C{GET /api/routes/PATH}: one route, or 404.
  - C{POST /api/routes/PATH} with a JSON object that has a string C{target}: 201, empty
    body (400 for invalid JSON or no string target). Other keys are stored and returned;
    a POST to an existing path replaces it. An empty path means C{/}; path segments are
    percent-decoded.
  - C{DELETE /api/routes/PATH}: 204, or 404 when there is no such route.
  - Other methods on C{/api/routes}: 405; any other path: 404.
  - With a token (C{CONFIGPROXY_AUTH_TOKEN}), requests need C{Authorization: token T}
    (403 otherwise; checked after the method and, for POST, after the body is parsed, as
    CHP does); without one the API is open.

Counted for the metrics (the table's L{ChpCounts}), as CHP counts: every answer by status
(C{requests_api}), whole-table GETs that succeeded (C{api_route_get}), routes added
(C{api_route_add}), DELETEs past the token check, found or not (C{api_route_delete}).
"""

from __future__ import annotations

import hmac
import json
import re
from urllib.parse import parse_qs, unquote

from twisted.logger import Logger
from twisted.web.http import RESPONSES
from twisted.web.resource import Resource

from hubtwist.front.routes import RouteTable, parse_time

__all__ = ["RoutesApi", "token_matches"]

log = Logger(namespace="hubtwist.front")

_ROUTES = re.compile(r"^/api/routes(/.*)?$", re.DOTALL)
_TOKEN = re.compile(rb"token\s+(\S+)")


def token_matches(header: bytes | None, token: str) -> bool:
    """Whether an C{Authorization} header carries C{token} as CHP reads it
    (C{token\\s+(\\S+)} anywhere in the header), compared in constant time."""
    found = _TOKEN.search(header or b"")
    return found is not None and hmac.compare_digest(found.group(1), token.encode("utf-8"))


class RoutesApi(Resource):
    """The API site's root resource. C{clock()} is the time in epoch seconds; C{added}
    is called with each route added (the command logs it)."""

    isLeaf = True

    def __init__(self, table: RouteTable, token: str, clock, added=None) -> None:
        super().__init__()
        self.table = table
        self.token = token
        self.clock = clock
        self.added = added

    def render(self, request):
        counts = self.table.counts

        def answered(_) -> None:
            counts.api[request.code] += 1  # as sent, a 500 from an exception included

        request.notifyFinish().addCallbacks(answered, lambda _failure: None)
        return self._answer(request)

    def _answer(self, request):
        path = request.uri.partition(b"?")[0].decode("latin-1")
        match = _ROUTES.match(path)
        if match is None:
            return _fail(request, 404)
        method = request.method
        if method not in (b"GET", b"POST", b"DELETE"):
            return _fail(request, 405, "Method not supported")
        try:
            route_path = unquote(match.group(1) or "", errors="strict")
        except UnicodeDecodeError:
            return _fail(request, 400, "Path is not UTF-8")
        if method == b"POST":
            try:
                data = json.loads(request.content.read() or b"null") or {}
            except (ValueError, UnicodeDecodeError) as error:
                return _fail(request, 400, f"Body not valid JSON: {error}")
        if self.token and not token_matches(request.getHeader(b"authorization"), self.token):
            log.debug("Rejecting API request without the token")
            request.setResponseCode(403)
            return b""
        if method == b"GET":
            return self._get(request, route_path)
        if method == b"POST":
            return self._post(request, route_path or "/", data)
        return self._delete(request, route_path or "/")

    def _get(self, request, path: str) -> bytes:
        if path and path != "/":
            route = self.table.get(path)
            if route is None:
                request.setResponseCode(404)
                return b""
            return _json(request, route.as_json())
        args = parse_qs(request.uri.partition(b"?")[2].decode("latin-1"))
        since_text = (args.get("inactiveSince") or args.get("inactive_since") or [""])[0]
        since = None
        if since_text:
            try:
                since = parse_time(since_text)
            except (ValueError, OverflowError):
                return _fail(request, 400,
                             f"Invalid datestamp '{since_text}' must be ISO8601.")
        body = _json(request, self.table.table(since))
        self.table.counts.route_get += 1
        return body

    def _post(self, request, path: str, data) -> bytes:
        if not isinstance(data, dict) or not isinstance(data.get("target"), str):
            log.warn("Bad POST data: {data}", data=json.dumps(data)[:200])
            return _fail(request, 400, "Must specify 'target' as string")
        route = self.table.add(path, data, self.clock())
        if route.problem:
            log.warn("Route {path}: {problem}; its requests will get 503", path=route.path,
                     problem=route.problem)
        if self.added is not None:
            self.added(route)
        self.table.counts.route_add += 1
        request.setResponseCode(201)
        return b""

    def _delete(self, request, path: str) -> bytes:
        self.table.counts.route_delete += 1  # CHP counts a DELETE of a missing route too
        if self.table.remove(path):
            log.info("Removed route {path}", path=path)
            request.setResponseCode(204)
        else:
            request.setResponseCode(404)
        return b""


def _json(request, value) -> bytes:
    body = json.dumps(value).encode("utf-8")
    request.setHeader(b"content-type", b"application/json")
    return body


def _fail(request, code: int, message: str = "") -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return (message or RESPONSES.get(code, b"").decode("latin-1")).encode("utf-8")
