"""
hubtwist's own pages: the launcher page listing the apps (L{hubtwist.web.launcher}), what
the pages load (C{_pages/...}: icons, the progress page's state; a segment no app name can
take, as names start with a letter or digit), and the dispatch to the JSON API
(L{hubtwist.web.api}, which also has the operator's controls) and to C{POST api/reload}
(when the configuration can be re-read, through a callback).
"""

from __future__ import annotations

import json
from typing import Mapping

from twisted.web.server import NOT_DONE_YET

from hubtwist import __version__
from hubtwist.config.schema import OWN_SEGMENT, Config
from hubtwist.proxy.errors import send_error
from hubtwist.web.api import Api
from hubtwist.web.launcher import render_launcher, send_icon, send_progress_status


class OwnPages:
    """
    Renders hubtwist's own routes under the base URL. C{metrics}, when set (the
    composition root does, unless metrics are off), renders C{GET metrics}.
    """

    metrics = None

    def __init__(self, config: Config, keepers: Mapping[str, object]) -> None:
        self._config = config
        self._keepers = keepers
        self.api = Api(config, keepers)
        # POST api/reload: a callable returning a Deferred of (HTTP status, JSON-able
        # answer); None when this hubtwist cannot reload (no configuration to re-read).
        self.reload = None

    def _url(self, name: str) -> str:
        return f"{self._config.base_url}{name}/"

    def render_own(self, request, rest: bytes) -> bytes:
        """One of hubtwist's own routes; C{rest} is the path below where they live (the
        base URL, or C{_hubtwist/} under it when an app owns the base URL)."""
        if rest == b"":
            return self.render_launcher(request)
        if rest == b"metrics" and self.metrics is not None:
            return self.metrics.render(request)
        if rest == b"api" or rest.startswith(b"api/"):
            return self.render_api(request, rest)
        if rest.startswith(b"_pages/"):
            return self.render_page_parts(request, rest)
        return self.render_not_found(request)

    def render_api(self, request, rest: bytes):
        """C{rest} is the path below the own routes' root, starting with C{api}: the JSON
        API (L{hubtwist.web.api}), and C{api/reload} when this hubtwist can reload."""
        if rest.rstrip(b"/") == b"api/reload" and self.reload is not None:
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            return self._render_reload(request)
        return self.api.render(request, rest)

    @property
    def own_root(self) -> str:
        """Where the own routes live (the rule of L{hubtwist.router})."""
        base = self._config.base_url
        return base if self._config.default_server is None else f"{base}{OWN_SEGMENT}/"

    def _render_reload(self, request):
        """C{POST api/reload}: re-read the configuration (behind the same authentication as
        every own route but C{api})."""
        if request.method != b"POST":
            request.setResponseCode(405)
            request.setHeader(b"allow", b"POST")
            return _json({"error": "use POST to reload the configuration"})

        def answer(result) -> None:
            status, body = result
            if not request.finished and not getattr(request, "_disconnected", False):
                request.setResponseCode(status)
                request.write(_json(body))
                request.finish()

        self.reload().addCallback(answer)
        return NOT_DONE_YET

    def render_launcher(self, request) -> bytes:
        """The launcher page: one card per app with a launcher entry (L{launcher})."""
        if request.method not in (b"GET", b"HEAD"):
            return self._not_allowed(request)
        return render_launcher(request, self._config, self._keepers, self.own_root,
                               __version__)

    def render_page_parts(self, request, rest: bytes):
        """What the pages load: C{_pages/icon/NAME} (an app's icon) and
        C{_pages/progress/NAME} (the state the progress page polls)."""
        if request.method not in (b"GET", b"HEAD"):
            return self._not_allowed(request)
        parts = rest.decode("utf-8", "replace").split("/")
        if len(parts) == 3 and parts[1] == "icon":
            body = send_icon(request, self._keepers, parts[2])
        elif len(parts) == 3 and parts[1] == "progress":
            body = send_progress_status(request, self._keepers, parts[2])
        else:
            return self.render_not_found(request)
        return NOT_DONE_YET if body is None else body

    @staticmethod
    def _not_allowed(request):
        request.setHeader(b"allow", b"GET, HEAD")
        send_error(request, 405, "Method not allowed", "This page only answers GET.")
        return NOT_DONE_YET

    def render_not_found(self, request):
        """404 for a path nothing is served at, in the pages' look (or JSON)."""
        send_error(request, 404, "Not found",
                   f"Nothing is served at {request.path.decode('latin-1')}. "
                   f"The apps are listed at {self.own_root}.")
        return NOT_DONE_YET


def _json(value: object) -> bytes:
    return json.dumps(value).encode()
