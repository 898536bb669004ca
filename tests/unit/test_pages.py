"""The pages' pure parts: who gets the progress page, escaping, the CSP, the page data."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import types

import pytest

from hubtwist.config.schema import LauncherEntry
from hubtwist.proxy.errors import error_page
from hubtwist.proxy.look import csp, data_block, esc
from hubtwist.proxy.progress import (
    PROGRESS_JS, is_navigation, progress_page, progress_status,
)
from hubtwist.supervise.logring import LogLine, LogRing
from hubtwist.supervise.states import State
from hubtwist.web.launcher import LAUNCHER_JS, icon_file, launcher_page

HTML = b"text/html,application/xhtml+xml,*/*;q=0.8"


@pytest.mark.parametrize("method, accept, mode, upgrade, xhr, expected", [
    (b"GET", HTML, b"navigate", b"1", None, True),
    (b"GET", HTML, b"navigate", None, None, True),
    (b"GET", HTML, None, b"1", None, True),          # a browser without Sec-Fetch-*
    (b"GET", HTML, None, None, None, False),         # a script asking for HTML
    (b"GET", b"*/*", b"navigate", b"1", None, False),
    (b"GET", b"application/json", b"navigate", b"1", None, False),
    (b"GET", HTML, b"cors", b"1", None, False),      # fetch()
    (b"GET", HTML, b"same-origin", None, None, False),
    (b"GET", HTML, b"no-cors", None, None, False),
    (b"GET", HTML, b"websocket", None, None, False),
    (b"GET", HTML, b"navigate", b"1", b"XMLHttpRequest", False),
    (b"POST", HTML, b"navigate", b"1", None, False),
    (b"HEAD", HTML, b"navigate", b"1", None, False),
])
def test_only_page_views_are_navigations(method, accept, mode, upgrade, xhr, expected):
    assert is_navigation(method, accept, mode, upgrade, xhr) is expected


def test_data_blocks_cannot_end_their_element():
    value = {"title": "</script><script>alert(1)</script>", "amp": "a & b <!--"}
    block = data_block(value)
    inner = block[block.index(">") + 1: -len("</script>")]
    assert "<" not in inner and ">" not in inner and "&" not in inner
    assert json.loads(inner) == value


def test_esc_covers_text_and_attributes():
    assert esc("<a href='x'>\"&") == "&lt;a href=&#x27;x&#x27;&gt;&quot;&amp;"


def _sha(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_the_csp_allows_exactly_the_pages_own_script_and_style():
    policy = csp(PROGRESS_JS).decode()
    assert f"script-src 'sha256-{_sha(PROGRESS_JS)}'" in policy
    assert "'unsafe-inline'" not in policy and "default-src 'none'" in policy
    assert "script-src 'none'" in csp().decode()
    # The script in the page is byte for byte the one hashed.
    page = progress_page("app", _keeper(State.STARTING), "/").decode()
    assert f"<script>{PROGRESS_JS}</script>" in page
    style = re.search(r"<style>(.*?)</style>", page, re.S)[1]
    assert f"style-src 'sha256-{_sha(style)}'" in policy


def _keeper(state: State, lines=(), title: str = "", icon: str = "", external: bool = False):
    logs = LogRing()
    for stream, text in lines:
        logs.append(LogLine(0.0, stream, text))
    config = types.SimpleNamespace(
        launcher_entry=LauncherEntry(title=title, icon_path=icon), is_external=external,
        new_browser_tab=False)
    return types.SimpleNamespace(state=state, logs=logs, restarts=0, config=config)


def test_progress_status_says_when_and_why_the_start_failed():
    starting = progress_status("app", _keeper(State.STARTING, [("stdout", "hi")]))
    assert not starting["failed"] and starting["error"] is None
    assert starting["logs"] == [{"stream": "stdout", "text": "hi"}]
    assert not progress_status("app", _keeper(State.BACKOFF))["failed"]  # tried again soon
    for state in (State.FATAL, State.EXITED, State.STOPPED):
        status = progress_status("app", _keeper(state))
        assert status["failed"] and status["error"].startswith("The app 'app' ")
    told = progress_status("app", _keeper(State.FATAL), reason="failed 3 times in a row")
    assert told["error"] == "The app 'app' failed 3 times in a row."


def test_progress_and_error_pages_escape_what_apps_print():
    evil = "<img src=x onerror=alert(1)>"
    keeper = _keeper(State.STARTING, [("stderr", evil)], title=evil)
    page = progress_page("app", keeper, "/").decode()
    assert evil not in page and esc(evil) in page
    page = error_page(503, evil, evil, [LogLine(0.0, "stdout", evil)]).decode()
    assert evil not in page and esc(evil) in page


def test_launcher_page_escapes_titles_and_urls():
    apps = [{"name": "app", "title": '"><script>x</script>', "url": '/a"b/',
             "state": "running", "external": False, "icon": True, "new_tab": True}]
    page = launcher_page(apps, "/", "1.0").decode()
    assert "<script>x" not in page and "&quot;&gt;&lt;script&gt;x" in page
    assert 'href="/a&quot;b/"' in page and 'src="/_pages/icon/app"' in page
    assert f"<script>{LAUNCHER_JS}</script>" in page
    assert "No apps are configured" in launcher_page([], "/", "1.0").decode()


def test_only_image_files_are_icons():
    assert icon_file(_keeper(State.RUNNING, icon="/x/logo.SVG")) == ("/x/logo.SVG", b"image/svg+xml")
    assert icon_file(_keeper(State.RUNNING, icon="/x/logo.png"))[1] == b"image/png"
    assert icon_file(_keeper(State.RUNNING, icon="/etc/passwd")) is None
    assert icon_file(_keeper(State.RUNNING)) is None
