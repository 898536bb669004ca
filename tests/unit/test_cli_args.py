"""
The command line of the peers (jhsingle-native-proxy, jupyter standaloneproxy,
jupyterhub-singleuser, batchspawner's wrapper): argv -> the configuration and the plan, with
no process and no reactor. The app commands are expanded as the supervisor would expand them.
"""

from __future__ import annotations

import os

import pytest

from hubtwist.cli import UNSUPPORTED, build_config, parse_argv, plan_auth
from hubtwist.config import ConfigError
from hubtwist.config.templates import expand, template_values

HUB_ENV = {
    "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api", "JUPYTERHUB_API_TOKEN": "server-token",
    "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice", "JUPYTERHUB_USER": "alice",
    "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
    "JUPYTERHUB_SERVICE_URL": "http://10.1.2.3:5000/user/alice/",
}


def plan(argv, environ=None):
    """(plan, config) for C{argv}, as C{main} computes them."""
    args, command = parse_argv(argv)
    return plan_auth(args, build_config(args, command), environ or {})


def config(argv, environ=None):
    return plan(argv, environ)[1]


def started(argv, port=40001, origin_host="hub.example.org", environ=None, name="app"):
    """The argv the app is started with (what the supervisor expands)."""
    conf = config(argv, environ)
    server = conf.servers[name]
    prefix = conf.base_url if name == conf.default_server else f"{conf.base_url}{name}/"
    values = template_values(port, "", conf.base_url, prefix, origin_host)
    return [expand(arg, values) for arg in server.command]


# -- where hubtwist listens: --port / --ip / --address ------------------------------------


def test_port_is_where_hubtwist_listens_and_destport_the_apps_port():
    conf = config(["--port", "8123", "--destport", "9001", "--", "app", "{port}"])
    assert conf.listen == ("tcp:8123:interface=127.0.0.1",)
    assert conf.servers["app"].port == 9001
    assert config(["--port=8123", "--", "app"]).servers["app"].port == 0  # a free one


@pytest.mark.parametrize("flag", ["--ip", "--address"])
def test_ip_and_address_choose_the_listening_address(flag):
    assert config([flag, "0.0.0.0", "--port", "8000", "--", "app"]).listen == (
        "tcp:8000:interface=0.0.0.0",)
    assert config([flag, "10.0.0.7", "--", "app"]).listen == ("tcp:8888:interface=10.0.0.7",)
    assert config([flag, "::1", "--port", "8000", "--", "app"]).listen == (
        "tcp:8000:interface=\\:\\:1",)


def test_without_listening_flags_the_default_stays():
    assert config(["--", "app"]).listen == ("tcp:8888:interface=127.0.0.1",)


def test_hub_mode_listens_at_the_service_url_and_the_flags_override_each_part():
    assert config(["--", "app"], HUB_ENV).listen == ("tcp:5000:interface=10.1.2.3",)
    assert config(["--port=6000", "--", "app"], HUB_ENV).listen == ("tcp:6000:interface=10.1.2.3",)
    assert config(["--ip=0.0.0.0", "--", "app"], HUB_ENV).listen == ("tcp:5000:interface=0.0.0.0",)


def test_hub_mode_internal_ssl_keeps_tls_on_the_port_given():
    env = {**HUB_ENV, "JUPYTERHUB_SERVICE_URL": "https://10.1.2.3:5000/user/alice/",
           "JUPYTERHUB_SSL_KEYFILE": "/k.pem", "JUPYTERHUB_SSL_CERTFILE": "/c.pem"}
    assert config(["--port", "6000", "--", "app"], env).listen == (
        "ssl:6000:interface=10.1.2.3:privateKey=/k.pem:certKey=/c.pem",)
    # With the client CA too (internal SSL), the port given keeps requiring client certificates.
    env["JUPYTERHUB_SSL_CLIENT_CA"] = "/ca.pem"
    assert config(["--port", "6000", "--", "app"], env).listen == (
        "ssl:6000:interface=10.1.2.3:privateKey=/k.pem:certKey=/c.pem:clientCA=/ca.pem",)
    assert config(["--", "app"], env).listen == (
        "ssl:5000:interface=10.1.2.3:privateKey=/k.pem:certKey=/c.pem:clientCA=/ca.pem",)


def test_batchspawner_appends_port_after_a_jhsingle_style_command():
    # batchspawner's wrapper for JupyterHub < 2: no JUPYTERHUB_SERVICE_URL, `--port=N` last.
    env = {k: v for k, v in HUB_ENV.items() if k != "JUPYTERHUB_SERVICE_URL"}
    argv = ["streamlit", "run", "app.py", "{--}server.port={port}", "--port=47000"]
    mode, conf = plan(argv, env)
    assert mode.mode == "hub"
    assert conf.listen == ("tcp:47000:interface=127.0.0.1",)
    assert conf.servers["app"].command == ("streamlit", "run", "app.py", "--server.port={port}")


def test_listen_and_port_together_are_refused():
    with pytest.raises(ConfigError, match="either --listen or --port"):
        plan(["--listen", "tcp:8000", "--port", "8001", "--", "app"])


@pytest.mark.parametrize("port", ["0", "70000"])
def test_a_listening_port_out_of_range_is_refused(port):
    with pytest.raises(ConfigError, match="--port"):
        plan(["--port", port, "--", "app"])


# -- jhsingle-native-proxy ------------------------------------------------------------------


VOILA = [  # cdsdashboards' Voilà launcher, as the spawner passes it
    "--destport=0", "python3", "{-}m", "voila", "{presentation_path}", "{--}port={port}",
    "{--}no-browser", "{--}Voila.base_url={base_url}/", "{--}Voila.server_url=/",
    "{--}Voila.ip=0.0.0.0", "{--}Voila.tornado_settings", "allow_origin={origin_host}",
    "--progressive", "--ready-check-path=/voila/static/", "--presentation-path=/srv/nb.ipynb",
    "--port=8888",
]


def test_the_voila_recipe_expands_as_jhsingle_does():
    assert started(VOILA, port=40001, environ=HUB_ENV) == [
        "python3", "-m", "voila", "/srv/nb.ipynb", "--port=40001", "--no-browser",
        "--Voila.base_url=/user/alice/", "--Voila.server_url=/", "--Voila.ip=0.0.0.0",
        "--Voila.tornado_settings", "allow_origin=hub.example.org"]
    conf = config(VOILA, HUB_ENV)
    assert conf.servers["app"].ready_check_path == "/voila/static/"
    assert conf.listen == ("tcp:8888:interface=10.1.2.3",)


def test_the_bokeh_and_panel_recipe_expands_as_jhsingle_does():
    argv = ["--destport=0", "python3", "{-}m", "bokeh_root_cmd.main", "{presentation_path}",
            "{--}port={port}", "{--}allow-websocket-origin={origin_host}", "{--}server=panel",
            "{--}prefix={base_url}", "--ready-check-path=/ready-check",
            "--presentation-path=dash.py"]
    assert started(argv, port=40002, origin_host="hub.example.org:8443", environ=HUB_ENV) == [
        "python3", "-m", "bokeh_root_cmd.main", os.path.join(os.getcwd(), "dash.py"),
        "--port=40002", "--allow-websocket-origin=hub.example.org:8443", "--server=panel",
        "--prefix=/user/alice/"]
    assert config(argv, HUB_ENV).servers["app"].ready_check_path == "/ready-check"


def test_the_streamlit_recipe_with_the_readme_flags_after_the_command():
    argv = ["--port", "8000", "--destport", "8505", "streamlit", "hello", "{--}server.port",
            "{port}", "{--}server.headless", "True", "--ip", "0.0.0.0"]
    assert started(argv, port=8505) == ["streamlit", "hello", "--server.port", "8505",
                                        "--server.headless", "True"]
    conf = config(argv)
    assert conf.listen == ("tcp:8000:interface=0.0.0.0",)
    assert conf.servers["app"].port == 8505


def test_presentation_basename_and_dirname():
    argv = ["--presentation-path", "/data/dash/app.py", "--",
            "run", "{presentation_basename}", "{presentation_dirname}"]
    assert started(argv) == ["run", "app.py", "/data/dash"]


def test_presentation_path_template_without_the_flag_is_a_sentence():
    with pytest.raises(ConfigError, match="--presentation-path is not given"):
        plan(["voila", "{presentation_path}"])


def test_jhsingle_flags_map_to_the_config_keys():
    conf = config(["--ready-timeout", "45", "--request-timeout", "100",
                   "--last-activity-interval", "60", "--force-alive", "--forward-user-info",
                   "--websocket-max-message-size", "1000", "--no-logs", "--debug", "app"])
    server = conf.servers["app"]
    assert (server.timeout, server.request_timeout, server.websocket_max_message_size) == (
        45.0, 100.0, 1000)
    assert server.log_output is False
    assert conf.hub.activity_interval == 60.0
    assert conf.keep_alive and conf.forward_user_info
    assert conf.log_level == "debug"


def test_jhsingle_harmful_defaults_are_not_taken():
    conf = config(["app"])
    server = conf.servers["app"]
    assert conf.keep_alive is False           # jhsingle: --force-alive (never culled)
    assert conf.listen == ("tcp:8888:interface=127.0.0.1",)  # jhsingle: every interface
    assert server.timeout == 30.0             # jhsingle: 10 s
    assert server.log_output is True
    assert config(["--no-force-alive", "app"]).keep_alive is False


def test_websocket_max_message_size_zero_means_the_default_as_in_the_peers():
    assert config(["--websocket-max-message-size", "0", "app"]).servers[
        "app"].websocket_max_message_size == 64 * 1024 * 1024


def test_progressive_and_ignored_singleuser_flags_are_accepted():
    conf = config(["--progressive", "--no-progressive", "--aiohttp-no-ssl-connector",
                   "--aiohttp-request-timeout", "30", "--NotebookApp.allow_origin", "app"])
    assert conf.servers["app"].command == ("app",)


def test_query_user_info_forwards_headers_and_says_so():
    auth, conf = plan(["--query-user-info", "app"], HUB_ENV)
    assert conf.forward_user_info
    assert any("CDSDASHBOARDS_JH_USER" in warning for warning in auth.warnings)


def test_authtype():
    auth, _ = plan(["--authtype", "none", "app"])
    assert auth.open
    auth, _ = plan(["--authtype", "oauth", "app"], HUB_ENV)
    assert auth.mode == "hub"
    with pytest.raises(ConfigError, match="only applies to standalone mode"):
        plan(["--authtype", "none", "app"], HUB_ENV)


def test_origin_host_cannot_be_known_by_an_autostarted_app():
    with pytest.raises(ConfigError, match="origin_host"):
        plan(["--autostart", "app", "{--}allow-websocket-origin={origin_host}"])


# -- jupyter standaloneproxy ----------------------------------------------------------------


def test_standaloneproxy_flags():
    auth, conf = plan([
        "--address", "127.0.0.1", "--port", "8000", "--server-port", "9000", "--base-url",
        "/x", "--absolute-url", "--raw-socket-proxy", "--no-authentication", "--timeout", "60",
        "--activity-interval", "10", "--websocket-max-message-size", "2048",
        "--environment", "A=1", "--environment", "B=x=y", "--mappath", "/a=/b",
        "--request-headers-override", "X-App={prefix}",
        "--exclude-last-activity-patterns", "^/poll", "--exclude-last-activity-patterns", "x$",
        "--log-level", "WARNING", "--", "app", "--port={port}"])
    server = conf.servers["app"]
    assert auth.open
    assert conf.listen == ("tcp:8000:interface=127.0.0.1",)
    assert conf.base_url == "/x/"
    assert (server.port, server.absolute_url, server.raw_socket_proxy, server.timeout) == (
        9000, True, True, 60.0)
    assert server.environment == {"A": "1", "B": "x=y"}
    assert server.mappath == {"/a": "/b"}
    assert server.request_headers_override == {"X-App": "{prefix}"}
    assert server.exclude_last_activity_patterns == ("^/poll", "x$")
    assert server.websocket_max_message_size == 2048
    assert conf.hub.activity_interval == 10.0
    assert conf.log_level == "warn"


def test_standaloneproxy_dict_and_list_options_take_json_too():
    server = config(["--environment", '{"A": "1"}', "--mappath", '{"/a": "/b"}',
                     "--exclude-last-activity-patterns", '["a", "b"]', "--", "app"]).servers["app"]
    assert server.environment == {"A": "1"}
    assert server.mappath == {"/a": "/b"}
    assert server.exclude_last_activity_patterns == ("a", "b")


@pytest.mark.parametrize(("value", "expected"), [
    ("True", True), ("true", True), ("False", False), ("/tmp/hubtwist-test/app.sock",
                                                       "/tmp/hubtwist-test/app.sock")])
def test_unix_socket_takes_standaloneproxys_values(value, expected):
    assert config([f"--unix-socket={value}", "--", "app"]).servers["app"].unix_socket == expected
    assert config(["--unix-socket", "--", "app"]).servers["app"].unix_socket is True


def test_unix_socket_does_not_swallow_a_command_word():
    with pytest.raises(ConfigError, match="--unix-socket takes true, false or a socket path"):
        plan(["--unix-socket", "streamlit", "hello"])


@pytest.mark.parametrize("argv", [["--environment", "NOEQUALS", "--", "app"],
                                  ["--mappath", "{not json", "--", "app"],
                                  ["--server-port", "70000", "--", "app"],
                                  ["--exclude-last-activity-patterns", "(", "--", "app"]])
def test_bad_standaloneproxy_values_are_sentences(argv):
    with pytest.raises(ConfigError) as error:
        plan(argv)
    assert "\n" not in str(error.value)


# -- what is refused -------------------------------------------------------------------------


@pytest.mark.parametrize("flag", sorted(UNSUPPORTED))
def test_unsupported_peer_options_say_why(flag):
    with pytest.raises(ConfigError, match=f"{flag} is not supported: .*docs/migrating.md"):
        parse_argv([flag + "=x", "app"])


def test_unsupported_options_are_all_in_the_migration_guide():
    from pathlib import Path

    guide = (Path(__file__).parents[2] / "docs" / "migrating.md").read_text()
    for flag in UNSUPPORTED:
        assert f"`{flag}`" in guide, flag


def test_app_flags_with_a_config_file_are_refused(tmp_path):
    path = tmp_path / "apps.toml"
    path.write_text('[servers.a]\ncommand = ["a"]\n')
    with pytest.raises(ConfigError, match="--destport sets the app of `-- COMMAND`"):
        plan(["--config", str(path), "--destport", "9000"])
    assert config(["--config", str(path), "--port", "9000"]).listen == (
        "tcp:9000:interface=127.0.0.1",)


def test_a_command_after_the_options_and_after_dashdash_join():
    # click (jhsingle) puts the words before `--` and those after it in one command.
    assert config(["voila", "--", "--port={port}"]).servers["app"].command == (
        "voila", "--port={port}")
