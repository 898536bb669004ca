"""
JupyterLab at `/` in single-app mode as a user's server under a real JupyterHub (the recipe
of docs/recipes.md): Spawner.cmd is `hubtwist -- jupyter-lab ... --ServerApp.base_url={prefix}`,
hubtwist does the Hub's OAuth, JupyterLab's own token is off. Alice logs in through the Hub's
form, loads /user/alice/lab, and runs a kernel with her browser's cookies and JupyterLab's
XSRF token, through configurable-http-proxy and hubtwist; then a token client does the same.
"""

from __future__ import annotations

import json
import re
import textwrap

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.e2e.browser import Browser
from tests.e2e.conftest import HUBTWIST, Hub, _prerequisites
from tests.e2e.recipes import VENV, app_environment, evaluate, require_apps

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# The Spawner.cmd of docs/recipes.md (with --allow-root: CI runs the Hub as root).
LAB_CMD = [*HUBTWIST, "--allow-root", "--absolute-url", "--", "jupyter-lab", "--no-browser",
           "--ServerApp.ip=127.0.0.1", "--port={port}", "--ServerApp.base_url={prefix}",
           "--IdentityProvider.token=", "--ServerApp.disable_check_xsrf=True",
           "--ServerApp.allow_remote_access=True"]


class LabHub(Hub):
    """The e2e Hub, with every user's server being hubtwist in front of JupyterLab."""

    def write_config(self):
        config = super().write_config()
        env = app_environment(self.root / "lab", "hub-" + self.control_token[:8])
        keep = ("PATH", "PYTHONPATH", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR",
                "JUPYTER_RUNTIME_DIR", "MPLCONFIGDIR")
        config.write_text(config.read_text() + textwrap.dedent(f"""
            # docs/recipes.md: JupyterLab at / of each user's server, hubtwist in front
            c.Spawner.cmd = {json.dumps(LAB_CMD)}
            c.Spawner.environment.update({json.dumps({k: env[k] for k in keep})})
            c.Spawner.start_timeout = 90
            """))
        return config


@pytest.fixture(scope="module")
def lab_hub(tmp_path_factory):
    _prerequisites()
    require_apps()
    instance = LabHub(tmp_path_factory.mktemp("labhub"))
    instance.start()
    yield instance
    instance.stop()


def _kernel_round_trip(hub: Hub, http, headers: dict, xsrf_headers: dict) -> None:
    base = f"{hub.public_url}/user/alice/"
    created = http.post(base + "api/kernels", json={"name": "python3"}, timeout=60,
                        headers=xsrf_headers)
    assert created.status_code == 201, (created.status_code, created.text[:500])
    kernel = created.json()["id"]
    ws_url = f"ws://127.0.0.1:{hub.public_port}/user/alice/api/kernels/{kernel}/channels"
    try:
        assert evaluate(ws_url, headers, "1+1") == "2"
    finally:
        deleted = http.delete(f"{base}api/kernels/{kernel}", headers=xsrf_headers, timeout=30)
        assert deleted.status_code == 204, (deleted.status_code, deleted.text[:300])


def test_jupyterlab_at_the_root_of_a_users_server(lab_hub):
    assert (VENV / "bin" / "jupyter-lab").exists()
    browser = Browser(lab_hub.public_url)
    landed = browser.login("alice")
    assert landed.status_code == 200, (browser.history, landed.text[:300])
    page = browser.get("/user/alice/lab", spawn_timeout=90)
    assert page.status_code == 200, (browser.history, page.text[:500])
    config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page.text,
                                  re.S)[1])
    assert config["baseUrl"] == "/user/alice/", config
    script = re.search(r'src="(/user/alice/static/lab/[^"]+\.js[^"]*)"', page.text)
    assert script, page.text[:2000]
    asset = browser.session.get(lab_hub.public_url + script[1], timeout=30)
    assert asset.status_code == 200 and "javascript" in asset.headers["Content-Type"]

    # As JupyterLab's own scripts do: fetch() with the _xsrf cookie's value in X-XSRFToken.
    xsrf = browser.cookie("_xsrf", "/user/alice/")
    assert xsrf, list(browser.session.cookies)
    api = {"X-XSRFToken": xsrf, "Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"}
    contents = browser.session.get(lab_hub.public_url + "/user/alice/api/contents",
                                   headers=api, timeout=30)
    assert contents.status_code == 200, (contents.status_code, contents.text[:300])
    ws_headers = {"Cookie": browser.cookie_header("/user/alice/api/kernels"),
                  "Origin": lab_hub.public_url}
    _kernel_round_trip(lab_hub, browser.session, ws_headers, api)
    # JupyterLab's own XSRF check is off (the cookie conflict, docs/recipes.md): hubtwist's,
    # the Hub's rule, is what stops a forged cookie-authenticated POST.
    forged = browser.session.post(lab_hub.public_url + "/user/alice/api/kernels",
                                  json={"name": "python3"}, allow_redirects=False, timeout=30,
                                  headers={"Sec-Fetch-Mode": "cors",
                                           "Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403, (forged.status_code, forged.text[:300])

    # A script with alice's Hub token, no cookies: hubtwist takes the token off, so
    # JupyterLab sees an anonymous request and needs no XSRF token (nor gets one to check).
    token = lab_hub.user_token("alice")
    with requests.Session() as client:
        client.headers["Authorization"] = f"token {token}"
        _kernel_round_trip(lab_hub, client, {"Authorization": f"token {token}"}, {})

    # Nobody else gets in: no credentials, no kernel socket.
    with pytest.raises(InvalidStatus) as refused:
        with connect(f"ws://127.0.0.1:{lab_hub.public_port}/user/alice/api/kernels",
                     origin=Origin(lab_hub.public_url), open_timeout=30):
            pass
    assert refused.value.response.status_code == 403
