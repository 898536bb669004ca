"""Mode detection, Hub settings from the environment and the file, where to listen (pure)."""

import json

import pytest

from hubtwist.config import ConfigError, load_toml_text
from hubtwist.hub.listening import check_open_listens, is_private, listen_for_service_url
from hubtwist.hub.settings import resolve_auth, with_hub_defaults

# What JupyterHub 6.1 sets for alice's default server (verified values, see the reference).
SINGLE_USER = {
    "JUPYTERHUB_API_TOKEN": "server-token",
    "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice",
    "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
    "JUPYTERHUB_ACTIVITY_URL": "http://127.0.0.1:8081/hub/api/users/alice/activity",
    "JUPYTERHUB_BASE_URL": "/",
    "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
    "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:57711/user/alice/",
    "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/alice/oauth_callback",
    "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(["access:servers!server=alice/",
                                                  "access:servers!user=alice"]),
    "JUPYTERHUB_USER": "alice",
    "JUPYTERHUB_SERVER_NAME": "",
    "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED": "0",
}
MANAGED_SERVICE = {
    "JUPYTERHUB_API_TOKEN": "service-token",
    "JUPYTERHUB_CLIENT_ID": "service-mgd",
    "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
    "JUPYTERHUB_SERVICE_NAME": "mgd",
    "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:18010",
    "JUPYTERHUB_SERVICE_PREFIX": "/services/mgd/",
    "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/mgd/oauth_callback",
    "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(["access:services", "access:services!service=mgd"]),
}
EMPTY = load_toml_text("")


def test_no_hub_variables_means_standalone_and_says_why():
    plan = resolve_auth({}, EMPTY)
    assert plan.mode == "standalone" and plan.open
    assert "no Hub API URL and token were found" in plan.reason


def test_a_spawned_server_is_in_hub_mode():
    plan = resolve_auth(SINGLE_USER, EMPTY)
    assert plan.mode == "hub" and "JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN" in plan.reason
    hub = plan.hub
    assert hub.kind == "server of alice" and hub.client_id == "jupyterhub-user-alice"
    assert hub.cookie_name == "jupyterhub-user-alice"
    assert hub.access_scopes == ("access:servers!server=alice/", "access:servers!user=alice")
    assert hub.oauth_redirect_uri == "/user/alice/oauth_callback"
    assert hub.activity_interval == 300 and not hub.allow_token_in_url
    assert "server-token" not in repr(plan) and "server-token" not in repr(hub)


def test_hub_mode_listens_where_the_hub_said_under_its_prefix():
    plan = resolve_auth(SINGLE_USER, EMPTY)
    config = with_hub_defaults(EMPTY, plan, listen_given=False, base_url_given=False)
    assert config.listen == ("tcp:57711:interface=127.0.0.1",)
    assert config.base_url == "/user/alice/"
    flags = with_hub_defaults(load_toml_text('listen = "unix:/tmp/s"\nbase_url = "/x/"'), plan,
                              listen_given=False, base_url_given=False)
    assert flags.listen == ("unix:/tmp/s",) and flags.base_url == "/x/"


def test_a_managed_service():
    plan = resolve_auth(MANAGED_SERVICE, EMPTY)
    assert plan.hub.kind == "service mgd" and plan.hub.activity_url == ""
    config = with_hub_defaults(EMPTY, plan, listen_given=False, base_url_given=False)
    assert config.listen == ("tcp:18010:interface=127.0.0.1",)
    assert config.base_url == "/services/mgd/"


def test_an_external_service_needs_only_url_token_and_name(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  external-token\n")
    config = load_toml_text(f'[hub]\napi_url = "http://127.0.0.1:8081/hub/api/"\n'
                            f'api_token_file = "{token_file}"\nservice_name = "ext"\n')
    plan = resolve_auth({}, config)
    hub = plan.hub
    assert plan.mode == "hub" and "[hub] api_url" in plan.reason
    assert hub.api_url == "http://127.0.0.1:8081/hub/api" and hub.api_token == "external-token"
    assert hub.client_id == "service-ext"
    assert hub.service_prefix == "/services/ext/"
    assert hub.oauth_redirect_uri == "/services/ext/oauth_callback"
    assert hub.access_scopes == ("access:services!service=ext",)
    assert with_hub_defaults(config, plan, listen_given=False, base_url_given=False).base_url == \
        "/services/ext/"


def test_the_file_wins_over_the_environment_and_flags_over_both():
    config = load_toml_text('[hub]\nmode = "standalone"\nclient_id = "service-x"\n'
                            'activity_interval = 5\nallow_token_in_url = true')
    assert resolve_auth(SINGLE_USER, config).mode == "standalone"
    plan = resolve_auth(SINGLE_USER, config, mode="auto")
    assert plan.hub.client_id == "service-x" and plan.hub.activity_interval == 5
    assert plan.hub.allow_token_in_url
    env = {**SINGLE_USER, "JUPYTERHUB_ACTIVITY_INTERVAL": "7", "JUPYTERHUB_ALLOW_TOKEN_IN_URL": "1"}
    plan = resolve_auth(env, EMPTY)
    assert plan.hub.activity_interval == 7 and plan.hub.allow_token_in_url


def test_forced_hub_mode_without_a_hub_is_a_clear_error():
    with pytest.raises(ConfigError) as caught:
        resolve_auth({}, EMPTY, mode="hub")
    assert "Hub mode needs the Hub's API URL (JUPYTERHUB_API_URL or hub.api_url) and an API token" \
        in str(caught.value)


@pytest.mark.parametrize("variable, value, message", [
    ("JUPYTERHUB_API_URL", "::::", "`JUPYTERHUB_API_URL` is not an http(s) URL"),
    ("JUPYTERHUB_API_URL", "http://[oops/hub/api", "`JUPYTERHUB_API_URL` is not an http(s) URL"),
    ("JUPYTERHUB_ACTIVITY_INTERVAL", "nan", "JUPYTERHUB_ACTIVITY_INTERVAL is not a number"),
    ("JUPYTERHUB_ACTIVITY_INTERVAL", "inf", "JUPYTERHUB_ACTIVITY_INTERVAL is not a number"),
    ("JUPYTERHUB_ACTIVITY_INTERVAL", "-5", "JUPYTERHUB_ACTIVITY_INTERVAL is not a number"),
    ("JUPYTERHUB_ACTIVITY_INTERVAL", "soon", "JUPYTERHUB_ACTIVITY_INTERVAL is not a number"),
])
def test_bad_hub_variables_are_config_errors_not_tracebacks(variable, value, message):
    with pytest.raises(ConfigError) as caught:
        resolve_auth({**SINGLE_USER, variable: value}, EMPTY)
    assert message in str(caught.value)


@pytest.mark.parametrize("url", ["http://[oops", "http://127.0.0.1:99999/", "http://h:x/"])
def test_a_bad_service_url_is_a_config_error_not_a_traceback(url):
    with pytest.raises(ConfigError, match="JUPYTERHUB_SERVICE_URL is not an http"):
        listen_for_service_url(url)


def test_bad_scopes_in_the_environment_are_a_clear_error():
    with pytest.raises(ConfigError, match="JUPYTERHUB_OAUTH_ACCESS_SCOPES is not a JSON list"):
        resolve_auth({**SINGLE_USER, "JUPYTERHUB_OAUTH_ACCESS_SCOPES": "access:servers"}, EMPTY)


def test_named_server_and_host_prefixed_cookies():
    env = {**SINGLE_USER, "JUPYTERHUB_SERVER_NAME": "srv1", "JUPYTERHUB_CLIENT_ID":
           "jupyterhub-user-alice-srv1", "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED": "1"}
    hub = resolve_auth(env, EMPTY).hub
    assert hub.kind == "server 'srv1' of alice"
    assert hub.cookie_name == "__Host-jupyterhub-user-alice-srv1"


def test_standalone_token_sources_in_order():
    config = load_toml_text('token = "from-file"')
    assert resolve_auth({}, config, token="from-flag").token == "from-flag"
    assert resolve_auth({"HUBTWIST_TOKEN": "from-env"}, config).token == "from-env"
    assert resolve_auth({}, config).token == "from-file"
    generated = resolve_auth({}, EMPTY, generate_token=True)
    assert generated.token_generated and len(generated.token) >= 32
    assert resolve_auth({}, config, no_auth=True, generate_token=True).open


def test_token_files_and_their_place_in_the_order(tmp_path):
    flag_file, key_file = tmp_path / "flag", tmp_path / "key"
    flag_file.write_text("  from-flag-file\n")
    key_file.write_text("from-key-file\n")
    flag_file.chmod(0o600)
    key_file.chmod(0o600)
    config = load_toml_text(f'token_file = "{key_file}"')
    assert resolve_auth({}, config, token="from-flag").token == "from-flag"
    plan = resolve_auth({"HUBTWIST_TOKEN": "from-env"}, config, token_file=str(flag_file))
    assert plan.token == "from-flag-file" and plan.warnings == ()
    assert resolve_auth({"HUBTWIST_TOKEN": "from-env"}, config).token == "from-env"
    assert resolve_auth({}, config).token == "from-key-file"
    with pytest.raises(ConfigError, match="`token_file` cannot be given together with `token`"):
        load_toml_text(f'token = "x"\ntoken_file = "{key_file}"')


def test_a_token_file_that_is_missing_empty_or_open_to_others(tmp_path):
    with pytest.raises(ConfigError, match="--token-file: names a token file that cannot be read "
                                          r"\(No such file or directory\)"):
        resolve_auth({}, EMPTY, token_file=str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(ConfigError, match="names an empty token file"):
        resolve_auth({}, EMPTY, token_file=str(empty))
    with pytest.raises(ConfigError, match="`token_file` names an empty token file"):
        resolve_auth({}, load_toml_text(f'token_file = "{empty}"'))
    # Read even in Hub mode, where it is not used: a wrong path is said at once.
    with pytest.raises(ConfigError, match="--token-file"):
        resolve_auth(SINGLE_USER, EMPTY, token_file=str(tmp_path / "missing"))
    shared = tmp_path / "shared"
    shared.write_text("tok")
    shared.chmod(0o644)
    [warning] = resolve_auth({}, EMPTY, token_file=str(shared)).warnings
    assert "readable by other users (mode 644)" in warning and f"chmod 600 {shared}" in warning


def test_a_token_on_the_command_line_is_warned_about():
    [warning] = resolve_auth({}, EMPTY, token="from-flag").warnings
    assert "visible to every user" in warning and "HUBTWIST_TOKEN" in warning
    assert "--token-file" in warning
    assert resolve_auth({"HUBTWIST_TOKEN": "from-env"}, EMPTY).warnings == ()


@pytest.mark.parametrize("description, private", [
    ("tcp:8888:interface=127.0.0.1", True),
    ("tcp:port=8888:interface=127.0.0.5", True),
    ("tcp6:8888:interface=\\:\\:1", True),
    ("tcp:8888:interface=localhost", True),
    ("unix:/run/ht.sock:mode=600", True),
    ("tcp:8888", False),
    ("tcp:8888:interface=0.0.0.0", False),
    ("tcp:8888:interface=192.168.1.5", False),
    ("ssl:443:privateKey=k.pem:interface=127.0.0.1", True),
    ("systemd:domain=INET:index=0", False),
])
def test_which_listens_are_private(description, private):
    assert is_private(description) is private


def test_no_auth_on_a_public_address_needs_the_explicit_flag():
    check_open_listens(["tcp:8888:interface=127.0.0.1", "unix:/tmp/s"], allow_public=False)
    with pytest.raises(ConfigError, match="--allow-unauthenticated-public"):
        check_open_listens(["tcp:8888"], allow_public=False)
    check_open_listens(["tcp:8888"], allow_public=True)


def test_listen_for_the_service_url():
    assert listen_for_service_url("http://127.0.0.1:57711/user/alice/") == "tcp:57711:interface=127.0.0.1"
    assert listen_for_service_url("http://[::1]:9000") == "tcp:9000:interface=\\:\\:1"
    assert listen_for_service_url("https://127.0.0.1:9000/", "/k.pem", "/c.pem") == (
        "ssl:9000:interface=127.0.0.1:privateKey=/k.pem:certKey=/c.pem")
    with pytest.raises(ConfigError, match="JUPYTERHUB_SSL_KEYFILE"):
        listen_for_service_url("https://127.0.0.1:9000/")
    # Internal SSL's client CA: clients must present a certificate it signed.
    assert listen_for_service_url("https://127.0.0.1:9000/", "/k.pem", "/c.pem",
                                  "/ca:1.pem") == (
        "ssl:9000:interface=127.0.0.1:privateKey=/k.pem:certKey=/c.pem:clientCA=/ca\\:1.pem")
    with pytest.raises(ConfigError, match="not an http"):
        listen_for_service_url("127.0.0.1:9000")


def test_check_config_shows_the_hub_table_but_never_a_token():
    from hubtwist.config.dump import to_toml

    config = load_toml_text('token = "standalone-secret"\n[hub]\napi_url = "http://h/hub/api"\n'
                            'api_token = "hub-secret"\nservice_name = "ext"\n')
    text = to_toml(config)
    assert "standalone-secret" not in text and "hub-secret" not in text
    assert '"api_url" = "http://h/hub/api"' in text and '"service_name" = "ext"' in text
    plain = load_toml_text('[hub]\nservice_name = "ext"\nactivity_interval = 60\n')
    assert load_toml_text(to_toml(plain)) == plain
