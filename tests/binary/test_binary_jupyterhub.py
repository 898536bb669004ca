"""
The binary behind a real JupyterHub: a Hub like the e2e tests' (tests/e2e/conftest.py), but
with `Spawner.cmd = [<binary>, "--config", ...]` and the managed and external services run
by the binary too. A user logs in through the Hub's OAuth and reaches her app.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.binary.locate import skip_module_without_binary
from tests.e2e import conftest as e2e
from tests.e2e.browser import Browser

skip_module_without_binary()

pytestmark = pytest.mark.e2e


class BinaryHub(e2e.Hub):
    """The e2e Hub, every hubtwist of it being the binary."""

    def __init__(self, root, binary: str) -> None:
        super().__init__(root)
        self.binary = binary

    def start(self) -> None:
        saved = e2e.HUBTWIST
        e2e.HUBTWIST = [self.binary]  # read by write_config and start_external_service
        try:
            super().start()
        finally:
            e2e.HUBTWIST = saved


@pytest.fixture(scope="module")
def binary_hub(binary, tmp_path_factory):
    e2e._prerequisites()
    hub = BinaryHub(tmp_path_factory.mktemp("binary-hub"), binary)
    hub.start()
    yield hub
    hub.stop()


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().split(b"\0")
    except OSError:
        return []


def test_a_user_logs_in_through_the_hub_and_reaches_her_app_served_by_the_binary(binary_hub, binary):
    browser = Browser(binary_hub.public_url)
    page = browser.login("alice")
    assert page.status_code == 200, (browser.history, page.text[:300], binary_hub.log_tail())
    paths = [url.split(binary_hub.public_url, 1)[-1] for _, url in browser.history]
    assert any(p.startswith("/hub/api/oauth2/authorize?") for p in paths), paths
    assert any(p.startswith("/user/alice/oauth_callback?code=") for p in paths), paths
    response = browser.get("/user/alice/echo?x=1")
    assert response.status_code == 200, response.text[:500]
    echo = response.json()
    assert echo["path"] == "/echo?x=1"
    assert json.loads(echo["headers"]["x-hubtwist-user"])["name"] == "alice"
    # her server is the binary itself (not `python -m hubtwist`)
    servers = [pid for pid in binary_hub._ours()
               if _cmdline(pid)[:1] == [binary.encode()] and b"--config" in _cmdline(pid)]
    assert servers, [(_cmdline(pid)) for pid in binary_hub._ours()]
    # the managed service, also the binary, answers through the Hub's proxy after login
    service = browser.get("/services/mgd/")
    assert service.status_code == 200, service.text[:300]
    assert os.path.exists(binary)
