"""
The router: one leaf resource that maps a path under the base URL to an app, a
C{/proxy/PORT/} target, or hubtwist's own pages. A dict lookup on the first path segment,
no resource-tree traversal, because it runs on every request.

Where hubtwist's own routes live (L{Router.own_root}):

  - no app owns the base URL (several apps, each at C{/NAME/}): at the base URL —
    C{api/...}, the launcher page at the base URL itself;
  - an app owns the base URL (C{default_server}, or C{hubtwist -- COMMAND}): under
    C{_hubtwist/} (L{OWN_SEGMENT}), a name apps do not use, so that the app keeps every
    other path — JupyterLab's C{/api/...}, an app's own C{/proxy/...}.

C{/proxy/PORT/} is served in the first case, and in the second only when C{proxy_ports}
is set to C{true}.
"""

from __future__ import annotations

import re
from typing import Mapping

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from hubtwist.config import schema
from hubtwist.config.schema import Config, ServerConfig
from hubtwist.proxy.errors import send_error
from hubtwist.proxy.forward import Forwarder, Route
from hubtwist.supervise import BackendAddress, ExternalServer
from hubtwist.web.pages import OwnPages

OWN_SEGMENT = schema.OWN_SEGMENT.encode()

_PORT_SPEC = re.compile(rb"(?:(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):)?(?P<port>[0-9]{1,5})")


def _redirect(request, location: bytes):
    request.setResponseCode(301)
    query = request.uri.partition(b"?")[2]
    request.setHeader(b"location", location + (b"?" + query if query else b""))
    request.setHeader(b"content-type", b"text/plain")
    return b"Moved to " + location + b"\n"


class Router(Resource):
    """Routes every request of the site; see the module docstring."""

    isLeaf = True

    def __init__(self, config: Config, keepers: Mapping[str, object], forwarder: Forwarder) -> None:
        super().__init__()
        self._config = config
        self._forwarder = forwarder
        self._base = config.base_url.encode()
        self._pages = OwnPages(config, keepers)
        self._routes = {
            name.encode(): Route.for_server(keeper, self._base + name.encode() + b"/",
                                            keeper.config, config.base_url)
            for name, keeper in keepers.items() if keeper.config.proxied
        }
        self._default = None
        if config.default_server is not None:
            keeper = keepers[config.default_server]
            self._default = Route.for_server(keeper, self._base, keeper.config, config.base_url)
        self.own_root = self._base if self._default is None else self._base + OWN_SEGMENT + b"/"
        forwarder.own_root = self.own_root  # the progress page polls the own routes
        # hubtwist's version (the Hub's readiness probe asks it) and the liveness probe:
        # no login. api/ready is not open: it tells which apps are down.
        self.open_paths = frozenset({self.own_root + b"api", self.own_root + b"api/",
                                     self.own_root + b"api/health"})
        self.api = self._pages.api  # hubtwist.app configures it and closes its streams
        self._proxy_ports = (config.proxy_ports if config.proxy_ports is not None
                             else self._default is None)
        self._allowed_hosts = {h.lower().strip("[]") for h in config.proxy_allowed_hosts}
        self._port_routes: dict[tuple[str, int, bool], Route] = {}
        # Ports hubtwist itself listens on: /proxy/<own port>/ would loop back into itself.
        self.own_ports: set[int] = set()

    def put_server(self, name: str, keeper) -> None:
        """Route C{NAME/} (and the base URL, for the default server) to C{keeper} from
        now on: a server added or changed by a reload. Requests already on their way keep
        the route they were given."""
        route = Route.for_server(keeper, self._base + name.encode() + b"/", keeper.config,
                                 self._config.base_url)
        self._routes[name.encode()] = route
        if name == self._config.default_server:
            self._default = Route.for_server(keeper, self._base, keeper.config,
                                             self._config.base_url)

    def remove_server(self, name: str) -> None:
        """Stop routing C{NAME/} (a server removed by a reload): 404 from now on. (The
        default server cannot be removed without a restart; see L{hubtwist.app}.)"""
        self._routes.pop(name.encode(), None)

    def on_reload(self, callback) -> None:
        """Serve C{POST api/reload} with C{callback} (see L{OwnPages.render_api})."""
        self._pages.reload = callback

    def port_keepers(self) -> list:
        """The keepers of the C{/proxy/PORT/} targets used so far (their activity counts
        as the user's, as in jupyter-server-proxy)."""
        return [route.keeper for route in self._port_routes.values()]

    def route_for(self, path: bytes) -> Route | None:
        """
        The route of an app that C{path} (without its query) is proxied along, when
        that is all there is to it: not a redirect, not hubtwist's own pages, not a
        C{/proxy/PORT/} target (those are checked in L{render}). For the lean path.
        """
        base = self._base
        if not path.startswith(base):
            return None
        first, slash, _ = path[len(base):].partition(b"/")
        route = self._routes.get(first)
        if route is not None:
            return route if slash else None
        if self._default is None or first == OWN_SEGMENT or (
                first == b"proxy" and self._proxy_ports):
            return None
        return self._default

    def render(self, request):
        path = request.path
        base = self._base
        if not path.startswith(base):
            if path + b"/" == base:
                return _redirect(request, base)
            return self._pages.render_not_found(request)
        rest = path[len(base):]
        first, slash, _ = rest.partition(b"/")
        route = self._routes.get(first)
        if route is not None:
            if not slash:
                return _redirect(request, base + first + b"/")
            return self._forwarder.forward(request, route)
        if first == b"proxy" and self._proxy_ports:
            return self._proxy_port(request, rest)
        if self._default is None:
            return self._pages.render_own(request, rest)
        if first == OWN_SEGMENT:
            if not slash:
                return _redirect(request, self.own_root)
            return self._pages.render_own(request, rest[len(OWN_SEGMENT) + 1:])
        return self._forwarder.forward(request, self._default)

    def _proxy_port(self, request, rest: bytes):
        """C{proxy/[absolute/]PORT/...} and C{proxy/HOST:PORT/...} (jupyter-server-proxy's)."""
        segments = rest.split(b"/", 3)
        absolute = len(segments) > 2 and segments[1] == b"absolute"
        spec_index = 2 if absolute else 1
        if len(segments) <= spec_index or not segments[spec_index]:
            return self._forbid(request, "Use /proxy/PORT/ or /proxy/HOST:PORT/ to reach a local port.")
        spec = segments[spec_index]
        match = _PORT_SPEC.fullmatch(spec)
        if match is None:
            return self._forbid(request, f"{spec.decode('latin-1')!r} is not PORT or HOST:PORT.")
        host = (match["host"] or b"127.0.0.1").decode("idna").lower().strip("[]")
        port = int(match["port"])
        if not 0 < port < 65536:
            return self._forbid(request, f"{port} is not a TCP port.")
        if match["host"] is not None and host not in self._allowed_hosts:
            return self._forbid(
                request, f"Proxying to host {host!r} is not allowed; allowed hosts are "
                f"{', '.join(sorted(self._allowed_hosts))} (proxy_allowed_hosts).")
        if port in self.own_ports and host in ("127.0.0.1", "localhost", "::1"):
            return self._forbid(request, f"Port {port} is hubtwist itself; proxying to it would loop.")
        prefix = self._base + b"/".join(segments[: spec_index + 1]) + b"/"
        if len(segments) == spec_index + 1:
            return _redirect(request, prefix)
        key = (host, port, absolute)
        route = self._port_routes.get(key)
        if route is None:
            target = "127.0.0.1" if host == "localhost" else host
            config = ServerConfig(port=port, absolute_url=absolute,
                                  rewrite_response=self._config.non_service_rewrite_response)
            keeper = ExternalServer(f"proxy/{spec.decode('latin-1')}", config,
                                    BackendAddress.tcp(port, target))
            route = self._port_routes[key] = Route.for_server(keeper, prefix, config, self._config.base_url)
        return self._forwarder.forward(request, route)

    @staticmethod
    def _forbid(request, reason: str):
        send_error(request, 403, "Forbidden", reason)
        return NOT_DONE_YET
