"""
The launcher and start-up progress pages in a real headless Chromium (Debian's
C{chromium}, installed by tests/setup): they render, their scripts run under their CSP,
the launcher's state is live, and the progress page reaches the app by itself. The
screenshots are saved in the test's tmp_path.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.chromium import BINARY, Chromium
from tests.helpers import http_get, in_thread
from tests.integration.test_proxy import APP, hubtwist  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(BINARY is None, reason="chromium is missing: run tests/setup")

ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" '
        'height="32" rx="7" fill="#e07a1f"/><path d="M8 22l8-12 8 12z" fill="#fff"/></svg>')


def _no_policy_violations(browser: Chromium) -> None:
    blocked = [line for line in browser.console
               if "Content Security Policy" in line or "Refused" in line]
    assert not blocked, blocked


@pytest_twisted.ensureDeferred
async def test_launcher_renders_and_follows_the_apps_state(hubtwist, tmp_path):
    icon = tmp_path / "dash.svg"
    icon.write_text(ICON)
    ht = await hubtwist(servers={
        "dash": {"command": APP, "autostart": True,
                 "launcher_entry": {"title": "Sales <dashboard>", "icon_path": str(icon)}},
        "notebook": {"command": APP},
        "lab": {"command": APP, "launcher_entry": {"title": "Lab"}},
    })

    def drive():
        with Chromium(tmp_path) as browser:
            browser.navigate(ht.url + "/")
            browser.wait_for("document.querySelectorAll('.app').length === 3", 15)
            # The script ran (it hides the buttons that do not apply) under the CSP.
            browser.wait_for("""(() => {const c = document.querySelector('[data-app="dash"]');
                return c.querySelector('[data-state]').textContent === 'running'
                  && c.querySelector('[data-action="start"]').classList.contains('hidden')
                  && !c.querySelector('[data-action="restart"]').classList.contains('hidden');
                })()""", 15)
            browser.wait_for("(() => {const i = document.querySelector('img.icon');"
                             " return i.complete && i.naturalWidth > 0;})()", 10)
            title = browser.evaluate(
                "document.querySelector('[data-app=\"dash\"] .app-title').textContent")
            assert title == "Sales <dashboard>"
            browser.screenshot(tmp_path / "launcher.png")
            # Live state: the lazy app starts (another client asks for it) and the page
            # shows it without a reload.
            assert http_get(ht.url + "/notebook/", 30)[0] == 200
            browser.wait_for("document.querySelector('[data-app=\"notebook\"] [data-state]')"
                             ".textContent === 'running'", 15)
            browser.screenshot(tmp_path / "launcher-live.png")
            _no_policy_violations(browser)

    await in_thread(drive, timeout=90)
    assert (tmp_path / "launcher.png").stat().st_size > 5000


@pytest_twisted.ensureDeferred
async def test_progress_page_shows_the_start_then_reaches_the_app(hubtwist, tmp_path):
    ht = await hubtwist(servers={"slow": {
        "command": [*APP, "--startup-delay", "4", "--print", "Loading the model <v2>..."],
        "timeout": 30, "launcher_entry": {"title": "Slow Model"}}})

    def drive():
        with Chromium(tmp_path) as browser:
            browser.navigate(ht.url + "/slow/")
            browser.wait_for("(document.getElementById('headline') || {}).textContent"
                             " === 'Starting Slow Model\u2026'", 10)
            browser.wait_for("document.getElementById('log').textContent"
                             ".includes('Loading the model <v2>...')", 10)
            browser.wait_for("/waiting [1-9]/.test(document.getElementById('elapsed')"
                             ".textContent)", 10)
            browser.screenshot(tmp_path / "progress.png")
            # No reload by hand: the page moves on to the app once it is ready.
            browser.wait_for("document.body && document.body.innerText"
                             " === 'hello from httpapp'", 30)
            browser.screenshot(tmp_path / "app.png")
            _no_policy_violations(browser)

    await in_thread(drive, timeout=90)


@pytest_twisted.ensureDeferred
async def test_progress_page_of_a_failing_app_shows_the_error_and_retry(hubtwist, tmp_path):
    ht = await hubtwist(servers={"broken": {
        "command": ["sh", "-c", "sleep 0.6; echo 'ImportError: no module named <dash>' >&2;"
                                " exit 3"],
        "start_retries": 1, "backoff_initial": 0.05, "backoff_max": 60}})

    def drive():
        with Chromium(tmp_path) as browser:
            browser.navigate(ht.url + "/broken/")
            browser.wait_for("document.getElementById('headline').textContent"
                             " === 'broken could not start'", 20)
            browser.wait_for("document.getElementById('log').textContent"
                             ".includes('ImportError: no module named <dash>')", 5)
            visible = browser.evaluate(
                "!document.getElementById('actions').classList.contains('hidden')")
            assert visible, "the retry button is shown"
            browser.screenshot(tmp_path / "failed.png")
            _no_policy_violations(browser)

    await in_thread(drive, timeout=90)
