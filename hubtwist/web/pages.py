"""
hubtwist's own pages: the launcher page listing the apps, and the dispatch to the JSON API
(L{hubtwist.web.api}, which also has the operator's controls).
"""

from __future__ import annotations

import html
from typing import Mapping

from hubtwist import __version__
from hubtwist.config.schema import Config
from hubtwist.web.api import Api, server_status  # noqa: F401 (server_status: for the pages)


class OwnPages:
    """Renders hubtwist's own routes under the base URL."""

    def __init__(self, config: Config, keepers: Mapping[str, object]) -> None:
        self._config = config
        self._keepers = keepers
        self.api = Api(config, keepers)

    def _url(self, name: str) -> str:
        return f"{self._config.base_url}{name}/"

    def render_own(self, request, rest: bytes) -> bytes:
        """One of hubtwist's own routes; C{rest} is the path below where they live (the
        base URL, or C{_hubtwist/} under it when an app owns the base URL)."""
        if rest == b"":
            return self.render_launcher(request)
        if rest == b"api" or rest.startswith(b"api/"):
            return self.render_api(request, rest)
        return self.render_not_found(request)

    def render_api(self, request, rest: bytes):
        """C{rest} is the path below the own routes' root, starting with C{api}: the JSON
        API (L{hubtwist.web.api})."""
        return self.api.render(request, rest)

    def render_launcher(self, request) -> bytes:
        """The landing page: one entry per app with a launcher entry."""
        items = []
        for name, keeper in self._keepers.items():
            entry = keeper.config.launcher_entry
            if not entry.enabled:
                continue
            target = self._config.base_url + (entry.path_info or f"{name}/")
            new_tab = ' target="_blank" rel="noopener"' if keeper.config.new_browser_tab else ""
            items.append(
                f'<li><a href="{html.escape(target)}"{new_tab}>{html.escape(entry.title or name)}</a>'
                f' <small>{html.escape(keeper.state.value)}</small></li>'
            )
        body = _LAUNCHER.format(items="\n".join(items) or "<li>No apps are configured.</li>",
                                version=__version__)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return body.encode()

    def render_not_found(self, request) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (f"404: nothing is served at {request.path.decode('latin-1')}. "
                f"The apps are listed at {self._config.base_url}.\n").encode()


_LAUNCHER = """<!doctype html>
<html><head><meta charset="utf-8"><title>hubtwist</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}
li{{margin:.4rem 0}}</style></head>
<body><h1>Apps</h1><ul>
{items}
</ul><p><small>hubtwist {version}</small></p></body></html>
"""
