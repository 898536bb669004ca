"""
A headless Chromium (Debian's C{chromium}) driven over the DevTools protocol, loopback
only, for the browser tests of hubtwist's pages. Blocking: run it in a thread
(L{tests.helpers.in_thread}) when the reactor runs in the test's thread.

    with Chromium(tmp_path) as browser:
        browser.navigate(url)
        browser.wait_for("document.querySelector('h1') !== null", 10)
        browser.screenshot(tmp_path / "page.png")

Every wait is bounded; the browser's whole process group is killed on exit.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time
import urllib.request

from websockets.sync.client import connect

BINARY = shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless browser with one page (tab), in a throwaway profile under C{directory}."""

    def __init__(self, directory: pathlib.Path, width: int = 1100, height: int = 800) -> None:
        self.directory = pathlib.Path(directory)
        self.size = (width, height)
        self.process: subprocess.Popen | None = None
        self.socket = None
        self._ids = itertools.count(1)
        self.console: list[str] = []

    def __enter__(self) -> "Chromium":
        assert BINARY, "chromium is not installed (tests/setup installs it)"
        stderr = open(self.directory / "chromium.log", "wb+")  # noqa: SIM115 (kept open for the process)
        self.process = subprocess.Popen(
            [BINARY, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.directory / 'profile'}",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True)
        try:
            port = self._devtools_port(stderr, 30)
            page = self._page_target(port, 10)
            # Entered by hand (closed in close()): connect() is a context manager.
            self._connection = connect(page, open_timeout=10, max_size=64 << 20)
            self.socket = self._connection.__enter__()
            self.call("Page.enable")
            self.call("Runtime.enable")
            self.call("Log.enable")  # CSP violations and failed loads are reported there
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        if self.socket is not None:
            self._connection.__exit__(None, None, None)
            self.socket = None
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
            self.process = None

    def _devtools_port(self, stderr, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stderr.seek(0)
            found = re.search(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/", stderr.read())
            if found:
                return int(found[1])
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        stderr.seek(0)
        raise AssertionError(f"chromium did not start: {stderr.read()[-2000:]!r}")

    @staticmethod
    def _page_target(port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                pages = [t for t in json.load(answer) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise AssertionError("chromium has no page target")

    def call(self, method: str, timeout: float = 20, **params) -> dict:
        """Send one command and return its result (events that arrive meanwhile are kept
        only as console lines)."""
        ident = next(self._ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no answer to {method} within {timeout} s")
            message = json.loads(self.socket.recv(timeout=left))
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description")))
                                             for a in args))
            elif message.get("method") == "Log.entryAdded":
                entry = message["params"]["entry"]
                self.console.append(f"{entry.get('level')}: {entry.get('text')}")
            elif message.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(message["params"]["exceptionDetails"])[:500])

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (None while it cannot run)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            return None
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float, interval: float = 0.1):
        """Poll C{expression} until it is truthy (returns its value); fail after C{timeout}."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except AssertionError:
                value = None  # the page is between two documents
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(f"timed out after {timeout} s waiting for {expression}; "
                                     f"page: {str(text)[:1000]!r}; console: {self.console}")
            time.sleep(interval)

    def screenshot(self, path: pathlib.Path) -> pathlib.Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path
