"""
hubtwist's own pages: the JSON API (C{api}, C{api/servers}, C{api/servers/NAME}) and the
launcher page listing the apps. They read the keepers' status; they never change it.
"""

from __future__ import annotations

import html
import json
import time
from typing import Mapping

from hubtwist import __version__
from hubtwist.config.schema import Config


def server_status(name: str, keeper, url: str, *, with_logs: bool = False) -> dict:
    """One app's status as the API shows it."""
    address = keeper.address
    status = {
        "name": name,
        "url": url,
        "state": keeper.state.value,
        "pid": keeper.pid,
        "restarts": keeper.restarts,
        "address": address.describe() if address is not None else None,
        "last_activity": _iso(keeper.last_activity),
        "external": keeper.config.is_external,
    }
    if with_logs:
        status["logs"] = [
            {"time": _iso(line.time), "stream": line.stream, "text": line.text}
            for line in keeper.logs
        ]
    return status


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1e6):06d}Z"


class OwnPages:
    """
    Renders hubtwist's own routes under the base URL. C{metrics}, when set (the
    composition root does, unless metrics are off), renders C{GET metrics}.
    """

    metrics = None

    def __init__(self, config: Config, keepers: Mapping[str, object]) -> None:
        self._config = config
        self._keepers = keepers

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
        return self.render_not_found(request)

    def render_api(self, request, rest: bytes) -> bytes:
        """C{rest} is the path below the own routes' root, starting with C{api}."""
        parts = [p for p in rest.decode("latin-1").split("/") if p]
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            return _json({"error": "hubtwist's API is read-only: use GET"})
        if parts == ["api"]:
            return _json({"version": __version__, "name": "hubtwist"})
        if parts == ["api", "servers"]:
            return _json({"servers": [
                server_status(name, keeper, self._url(name)) for name, keeper in self._keepers.items()
            ]})
        if len(parts) == 3 and parts[:2] == ["api", "servers"] and parts[2] in self._keepers:
            name = parts[2]
            return _json(server_status(name, self._keepers[name], self._url(name), with_logs=True))
        request.setResponseCode(404)
        return _json({"error": f"no such API path: {request.path.decode('latin-1')}"})

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


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


_LAUNCHER = """<!doctype html>
<html><head><meta charset="utf-8"><title>hubtwist</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}
li{{margin:.4rem 0}}</style></head>
<body><h1>Apps</h1><ul>
{items}
</ul><p><small>hubtwist {version}</small></p></body></html>
"""
