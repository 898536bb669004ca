"""
C{hubtwist chp} on hubtwist's lean path (L{hubtwist.proxy.lean}): plain GET and HEAD
requests are parsed and proxied without twisted.web, as hubtwist's own proxy does for its
apps; everything else (WebSockets, bodies, C{/_chp_healthz}, no route or an unusable
target, a path that does not decode or holds C{//}) is handed to the ordinary path (L{hubtwist.front.proxy.Front}), which answers it CHP's way.

The lean path asks its router for C{route_for(path)} and proxies along the L{Route}-like
object it returns; L{ChpLeanRouter} gives it one per CHP route (built once, kept on the
route), so that:

  - the target is the route's (C{http://} or C{http+unix://});
  - the request target sent is CHP's (L{upstream_target}: the route's prefix kept unless
    C{--no-include-prefix}, the target's path prepended unless C{--no-prepend-path});
  - the request headers are CHP's (L{chp_headers}: C{X-Forwarded-*}, C{Host},
    C{--custom-header});
  - the response headers pass untouched (C{Location} rewritten only with
    C{--auto-rewrite} / C{--protocol-rewrite}, as L{chp_location} does);
  - C{last_activity} is stamped when a response below 300 was sent in full (never for
    errors), and a target that fails gets CHP's 503 (L{Front.error}: the error target or
    page).
"""

from __future__ import annotations

from hubtwist.front.proxy import FRONT_LIMITS, Front, chp_headers, chp_location, decode_path
from hubtwist.front.routes import ChpRoute, upstream_target
from hubtwist.proxy.lean import LeanExchange
from hubtwist.supervise import State

__all__ = ["ChpForwarder", "ChpLeanExchange", "ChpLeanRouter"]

_HEALTHZ = b"/_chp_healthz"


class _Logs:
    def tail(self, _count=None) -> list:
        return []


class _Keeper:
    """The target as the lean path sees an app: always running (CHP does not supervise)."""

    __slots__ = ("name", "address", "state", "logs")

    def __init__(self, route: ChpRoute) -> None:
        self.name = route.path
        self.address = route.target.address
        self.state = State.RUNNING
        self.logs = _Logs()

    def touch(self) -> None:
        pass  # activity is stamped by ChpLeanExchange, CHP's way


class _Config:
    """The server options the lean path reads, fixed for CHP's behaviour."""

    __slots__ = ("request_timeout",)
    rewrite_urls = False
    raw_socket_proxy = False
    absolute_url = True  # the path is CHP's, built by mappath below
    update_last_activity = False

    def __init__(self, request_timeout: float) -> None:
        self.request_timeout = request_timeout


class _LeanRoute:
    """One CHP route as a L{hubtwist.proxy.forward.Route} for the lean path."""

    __slots__ = ("chp", "target", "keeper", "prefix", "config", "mappath", "front")
    rewriters = ()
    limits = FRONT_LIMITS

    def __init__(self, route: ChpRoute, front: Front) -> None:
        options = front.options
        self.chp = route
        self.front = front
        self.target = route.target
        self.keeper = _Keeper(route)
        self.prefix = route.prefix_bytes + b"/"
        self.config = _Config(options.upstream_timeout or 0)
        if options.include_prefix and options.prepend_path and route.target.path == b"/":
            # CHP's join leaves such a path as it is (route_for hands over any with "//").
            self.mappath = None
        else:
            self.mappath = self._chp_path

    def _chp_path(self, path: str) -> str:
        options = self.front.options
        return upstream_target(path.encode("latin-1"), self.chp, self.target,
                               include_prefix=options.include_prefix,
                               prepend_path=options.prepend_path).decode("latin-1")

    def counts_as_activity(self, _target: bytes) -> bool:
        return False  # see ChpLeanExchange


class ChpLeanRouter:
    """
    The lean path's router over C{front}'s L{RouteTable}. Under C{--host-routing} the
    lean path is given L{admit} too: the lean channel calls it with the request's view
    just before L{route_for} (synchronously, in the same call), so it notes the C{Host}
    that the lookup puts in front of the path.
    """

    def __init__(self, front: Front) -> None:
        self.front = front
        self.table = front.table
        self._host: bytes | None = None

    def admit(self, view) -> bool:
        """Every request may take the lean path; remember its C{Host} (host routing)."""
        self._host = view.getHeader(b"host") or b""
        return True

    def route_for(self, path: bytes) -> _LeanRoute | None:
        """The lean route for the raw request path C{path} (no query), or None to leave
        the request to the ordinary path."""
        if path == _HEALTHZ or b"//" in path:
            return None
        try:
            decoded = decode_path(path)
        except (ValueError, UnicodeDecodeError):
            return None  # the ordinary path answers 500
        if self.table.host_routing:
            host, self._host = self._host, None
            if host is None:
                return None  # (not called through admit)
            decoded = "/" + host.split(b":")[0].decode("latin-1") + decoded
        route = self.table.match(decoded)
        if route is None or route.target is None:
            return None  # 404, 503: the ordinary path's pages
        lean = route.lean
        if lean is None:
            lean = route.lean = _LeanRoute(route, self.front)
        return lean


class ChpForwarder:
    """What the lean path uses of a L{hubtwist.proxy.forward.Forwarder}: the reactor,
    the upstream pool and the request headers (CHP's)."""

    def __init__(self, front: Front) -> None:
        self.reactor = front.reactor
        self.upstream = front.pool
        self.options = front.options

    def headers_for(self, incoming, client: bytes, secure: bool, route: _LeanRoute,
                    _address, _identity=()) -> list:
        return chp_headers(incoming, client, secure, False, route.target, self.options)


class ChpLeanExchange(LeanExchange):
    """One lean request with CHP's answers: the target's headers untouched, 503 (the
    error target or page) when the target fails, C{last_activity} on success."""

    __slots__ = ()

    @property
    def uri(self) -> bytes:
        return self.public_target  # what Front.error logs and sends to the error target

    @property
    def _disconnected(self) -> bool:
        return self.client_gone  # for request_disconnected()

    def _response_headers(self, response) -> list:
        # Called once per target response, as its head is relayed: where CHP counts its
        # status (requests_proxy). The lean path's requests are counted by LeanFactory.served.
        front = self.route.front
        front.counts.proxy[response.code] += 1
        options = front.options
        if not (options.auto_rewrite or options.protocol_rewrite):
            return response.headers
        host = self.getHeader(b"host") or b""
        return [(name, chp_location(value, response.code, self.route.target, host,
                                    auto_rewrite=options.auto_rewrite,
                                    protocol=options.protocol_rewrite))
                if name.lower() == b"location" else (name, value)
                for name, value in response.headers]

    def _failed(self, failure) -> None:
        self.pending = None
        if not self.client_gone:
            self.route.front.error(self, 503)

    def finish(self) -> None:
        if not self.startedWriting:
            self.write(b"")  # an empty error page (HEAD) still needs its head
        super().finish()

    def _touch(self, failure) -> None:
        if failure is None and not self.client_gone and self.code < 300 and not self.own:
            self.route.chp.touch(self.route.front.clock())

    def _body_done(self, failure) -> None:
        self._touch(failure)
        super()._body_done(failure)

    def _spliced(self, failure) -> None:
        self._touch(failure)
        super()._spliced(failure)
