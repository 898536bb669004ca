"""
`rewrite_urls = true` end to end: hubtwist (in-process) in front of a real prefix-unaware
app (tests/apps/prefixless.py, http.server) behind `[servers.site]`; a plain HTTP client.
"""

from __future__ import annotations

import http.client
import sys

import pytest
import pytest_twisted

from hubtwist.app import serve
from hubtwist.config.loader import load_dict
from hubtwist.proxy.urlrewrite import rewrite_whole
from tests.helpers import APPS, in_thread, reactor, within

APP = [sys.executable, str(APPS / "prefixless.py"), "{port}"]


@pytest.fixture
def hubtwist():
    running = []

    async def start(**raw):
        raw.setdefault("listen", ["tcp:0:interface=127.0.0.1"])
        instance = await serve(reactor(), load_dict(raw, "test"))
        instance.port = instance.ports[0].getHost().port
        running.append(instance)
        return instance

    yield start
    for instance in running:
        pytest_twisted.blockon(within(instance.stop(), 30))


def fetch(port: int, path: str, headers=None):
    """(status, headers as a lower-case dict, body, whether it came chunked)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return (response.status, {k.lower(): v for k, v in response.getheaders()}, body,
                response.chunked)
    finally:
        connection.close()


def site(**extra):
    return {"servers": {"site": {"command": APP, "rewrite_urls": True, **extra}}}


@pytest_twisted.ensureDeferred
async def test_html_links_go_under_the_prefix_streamed_and_chunked(hubtwist):
    ht = await hubtwist(**site())
    status, headers, body, chunked = await in_thread(fetch, ht.port, "/site/?big=2000",
                                                     {"Accept-Encoding": "gzip, br"})
    assert status == 200
    assert "content-length" not in headers and chunked
    assert headers["x-seen-accept-encoding"] == "identity"  # asked for uncompressed
    assert len(body) > 400_000  # many of the proxy's reads, tags cut between them
    assert b'<base href="/site/">' in body
    assert b'<link rel="stylesheet" href="/site/style.css">' in body
    assert b"content='30;url=/site/later'" in body
    assert b"<style>body{background:url(/site/bg.png)}</style>" in body
    assert body.count(b'<a href="/site/page">') == 2000
    assert body.count(b"<img src=/site/img.png srcset='/site/img.png 1x, /site/img@2x.png 2x'>") == 2000
    assert body.count(b'<form action="/site/submit"><button formaction=/site/other>') == 2000
    assert body.count(b"url('/site/tile.png')") == 2000
    # untouched: protocol-relative, relative, scripts and a JSON island
    assert body.count(b"<a href=//cdn.example/lib.js>") == 2000
    assert body.count(b'<a href="rel/ok">') == 2000
    assert b'var api = "/api/x"; var html = "<a href=/js>";' in body
    assert b'{"next": "/json-island"}' in body
    assert b'href="/page"' not in body
    # the streamed result is the whole-body rewrite of what the app sent
    sent = await in_thread(_direct, ht, "/?big=2000")
    assert body == rewrite_whole(sent, b"/site/")


def _direct(ht, path):
    address = ht.keepers["site"].address
    return fetch(address.port, path)[2]


@pytest_twisted.ensureDeferred
async def test_css_is_rewritten_and_other_types_are_not(hubtwist):
    ht = await hubtwist(**site())
    status, headers, body, _ = await in_thread(fetch, ht.port, "/site/style.css")
    assert status == 200
    assert body == (b'@import "/site/base.css";\nbody { background: url(/site/bg.png) }\n'
                    b'.a { background: url("//cdn/x.png") }\n')
    status, headers, body, _ = await in_thread(fetch, ht.port, "/site/data.json")
    assert body == b'{"links": ["/x", "/y"]}'
    assert headers["content-length"] == str(len(body))


@pytest_twisted.ensureDeferred
async def test_the_app_is_asked_for_identity_and_a_compressed_answer_passes_untouched(hubtwist):
    ht = await hubtwist(**site())
    status, headers, body, _ = await in_thread(fetch, ht.port, "/site/gzip",
                                               {"Accept-Encoding": "gzip"})
    assert headers["x-seen-accept-encoding"] == "identity"
    assert "content-encoding" not in headers
    assert b'href="/site/style.css"' in body


@pytest_twisted.ensureDeferred
async def test_without_rewrite_urls_nothing_changes(hubtwist):
    ht = await hubtwist(servers={"site": {"command": APP}})
    status, headers, body, chunked = await in_thread(fetch, ht.port, "/site/",
                                                     {"Accept-Encoding": "gzip"})
    assert b'<link rel="stylesheet" href="/style.css">' in body
    assert headers["x-seen-accept-encoding"] == "gzip"
    assert headers["content-length"] == str(len(body)) and not chunked
