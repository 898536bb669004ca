"""
A scripted browser for the end-to-end tests: a cookie jar (with paths), the headers a
browser sends on a page view, redirects followed one by one (so each hop can be checked),
the Hub's login form with its C{_xsrf}, and the spawn-pending page polled until the server
is up.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import urljoin, urlsplit

import requests
from requests.cookies import get_cookie_header

PAGE_HEADERS = {
    "User-Agent": "hubtwist-e2e-browser/1.0",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Sec-Fetch-Mode": "navigate",
}
MAX_REDIRECTS = 20


class Browser:
    """One browser profile (one user's cookies) against the Hub's public URL."""

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update(PAGE_HEADERS)
        self.history: list[tuple[int, str]] = []

    def url(self, path: str) -> str:
        return path if path.startswith("http") else self.public_url + path

    def get(self, path: str, *, spawn_timeout: float = 60.0, **kwargs) -> requests.Response:
        """GET C{path} like a browser: follow redirects, wait out spawn-pending pages."""
        return self._follow(self.session.get(self.url(path), allow_redirects=False, timeout=30,
                                             **kwargs), spawn_timeout)

    def post_form(self, path: str, data: dict, **kwargs) -> requests.Response:
        response = self.session.post(self.url(path), data=data, allow_redirects=False,
                                     timeout=30, **kwargs)
        return self._follow(response, 60.0)

    def _follow(self, response: requests.Response, spawn_timeout: float) -> requests.Response:
        self.history = [(response.status_code, response.url)]
        deadline = time.monotonic() + spawn_timeout
        hops = 0
        while True:
            if response.is_redirect:
                hops += 1
                assert hops <= MAX_REDIRECTS, f"redirect loop: {self.history}"
                target = urljoin(response.url, response.headers["Location"])
                response = self.session.get(target, allow_redirects=False, timeout=30)
            elif (response.status_code == 200 and "/spawn-pending/" in urlsplit(response.url).path
                  or _starting(response)):
                # The Hub's spawn-pending page, or hubtwist's start-up progress page (which
                # a real browser reloads itself once the app is up).
                assert time.monotonic() < deadline, (
                    f"the server was not up within {spawn_timeout} s: {self.history}")
                time.sleep(0.3)
                response = self.session.get(response.url, allow_redirects=False, timeout=30)
            else:
                return response
            self.history.append((response.status_code, response.url))

    def cookie(self, name: str, path: str | None = None) -> str | None:
        for cookie in self.session.cookies:
            if cookie.name == name and (path is None or cookie.path == path):
                return cookie.value
        return None

    def cookie_header(self, path: str) -> str:
        """The Cookie header this browser sends to C{path} (for WebSocket handshakes)."""
        prepared = requests.Request("GET", self.url(path)).prepare()
        return get_cookie_header(self.session.cookies, prepared) or ""

    def login(self, username: str) -> requests.Response:
        """Log in to the Hub with its form (any password: DummyAuthenticator); the Hub then
        spawns the default server and redirects there through spawn-pending."""
        page = self.get("/hub/login")
        assert page.status_code == 200, page.text[:500]
        xsrf = self.cookie("_xsrf", "/hub/")
        assert xsrf, f"the login page set no _xsrf cookie: {list(self.session.cookies)}"
        return self.post_form("/hub/login", {"username": username, "password": "any",
                                             "_xsrf": xsrf})


def _starting(response: requests.Response) -> bool:
    """hubtwist's progress page for an app that is still starting (not one that failed)."""
    if response.status_code != 503 or "text/html" not in response.headers.get("Content-Type", ""):
        return False
    found = re.search(r'<script type="application/json" id="ht-data">(.*?)</script>',
                      response.text, re.S)
    status = json.loads(found[1]).get("status") if found else None
    return isinstance(status, dict) and not status.get("failed")
