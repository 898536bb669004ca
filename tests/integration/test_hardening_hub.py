"""
Hub mode against a hostile client: identity headers it tries to remove or imitate
(hubtwist's own are added after the client's are cleaned).
"""

from __future__ import annotations

import json

import pytest_twisted
import treq

from tests.integration.test_hub_gate import (  # noqa: F401 (fixtures)
    APP, cookie_header, fake_hub, hub_env, hubtwist, log_in,
)


@pytest_twisted.ensureDeferred
async def test_a_client_cannot_remove_or_imitate_the_identity_headers(hubtwist, fake_hub):
    ht = await hubtwist(hub_env(fake_hub), forward_user_info=True, default_server="app",
                        servers={"app": {"command": APP}})
    cookies = await log_in(ht, fake_hub)
    response = await treq.get(f"{ht.url}/user/alice/echo", headers={
        "Cookie": cookie_header(cookies),
        # Hop-by-hop stripping must not remove what hubtwist adds...
        "Connection": "X-Forwarded-User, X-Hubtwist-User, X-CDSDashboards-JH-User, Host, "
                      "X-Forwarded-For",
        # ...and spellings a WSGI server folds into the same name must not pass.
        "X_Forwarded_User": "admin", "X-Hubtwist_User": '{"name": "admin"}',
        "x_cdsdashboards_jh_user": '{"name": "admin"}', "X_Forwarded_For": "10.9.9.9",
        "X_Forwarded_Proto": "https", "Host": "hub.example:8000",
    })
    echo = json.loads(await response.text())
    names = [name for name, _ in echo["header_list"]]
    assert response.code == 200
    assert echo["headers"]["x-forwarded-user"] == "alice"
    assert json.loads(echo["headers"]["x-hubtwist-user"])["name"] == "alice"
    assert json.loads(echo["headers"]["x-cdsdashboards-jh-user"])["name"] == "alice"
    assert not [name for name in names if "_" in name], names
    assert names.count("x-forwarded-user") == 1
    assert echo["headers"]["host"] == "hub.example:8000"  # Connection: host removes nothing
    assert echo["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert echo["headers"]["x-forwarded-proto"] == "http"
