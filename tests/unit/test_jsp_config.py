"""jupyter-server-proxy Python configurations, plugins and JupyterHub services: pure logic."""

from __future__ import annotations

from importlib import metadata

import pytest

from hubtwist.config import ConfigError
from hubtwist.config.jsp import call_for_server, run_python_config
from hubtwist.config.kinds import StrDict, StrList
from hubtwist.config.loader import load_dict, load_file
from hubtwist.config.plugins import NONE, PluginChoice, choice_from_flags, load_plugins


def load_py(tmp_path, text, plugins=NONE):
    path = tmp_path / "jupyter_server_config.py"
    path.write_text(text)
    warnings = []
    return load_file(path, plugins, warnings.append), warnings, str(path)


def test_servers_and_globals_are_read_and_other_traitlets_ignored_once_each(tmp_path):
    loaded, warnings, path = load_py(tmp_path, """
c = get_config()
def command(port, base_url):
    return ["app", "--port", str(port), "--prefix", base_url]
c.ServerProxy.servers = {"app": {"command": command, "timeout": 7,
                                 "launcher_entry": {"title": "App"}}}
c.ServerProxy.servers["other"] = {"command": ["other", "{port}"], "absolute_url": True}
c.ServerProxy.host_allowlist = ["localhost", "db.internal"]
c.ServerProxy.non_service_rewrite_response = lambda response: None
c.ServerApp.ip = "0.0.0.0"
c.ServerApp.ip = "127.0.0.1"
c.NotebookApp.tornado_settings.headers.csp = "x"
c.Spawner.environment.update({"A": "1"})
""")
    config = loaded.config
    assert config.servers["app"].timeout == 7
    assert callable(config.servers["app"].command)
    assert config.servers["app"].launcher_entry.title == "App"
    assert config.servers["other"].command == ("other", "{port}")
    assert config.proxy_allowed_hosts == ("localhost", "db.internal")
    assert len(config.non_service_rewrite_response) == 1
    assert warnings == [
        f"{path}: `c.ServerApp.ip` is not used by hubtwist; ignored",
        f"{path}: `c.NotebookApp.tornado_settings.headers.csp` is not used by hubtwist; ignored",
        f"{path}: `c.Spawner.environment` is not used by hubtwist; ignored",
    ]
    assert loaded.sources == {"app": path, "other": path}


def test_python_values_go_through_the_schema(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_py(tmp_path, 'c.ServerProxy.servers = {"app": {"command": ["a"], "timout": 3}}')
    assert str(error.value).endswith("`servers.app.timout` is not a known key. Did you mean "
                                     "`timeout`?")
    with pytest.raises(ConfigError, match=r"`servers.app.command` must be a list"):
        load_py(tmp_path, 'c.ServerProxy.servers = {"app": {"command": "a {port}"}}')


@pytest.mark.parametrize("text, message", [
    ("c.ServerProxy.servers = {\n  'a': [\n", r"line \d: .*\(a syntax error\)\.$"),
    ("x = 1\nc.ServerProxy.servers = undefined_name\n",
     r"line 2: NameError: name 'undefined_name' is not defined\.$"),
    ("def f():\n    raise RuntimeError('boom')\n\nf()\n", r"line 2: RuntimeError: boom\.$"),
    ("import sys\nsys.exit(3)\n", r"line 2: SystemExit: 3\.$"),
])
def test_a_failing_file_is_one_sentence_with_its_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_py(tmp_path, text)
    assert str(error.value).startswith(str(tmp_path / "jupyter_server_config.py") + ": line ")


def test_a_host_allowlist_function_is_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match=r"`c.ServerProxy.host_allowlist` is a function; "
                                          r"hubtwist only takes a list of host names"):
        load_py(tmp_path, "c.ServerProxy.host_allowlist = lambda handler, host: True")


def test_load_subconfig_runs_the_other_file_on_the_same_c(tmp_path):
    (tmp_path / "more.py").write_text("c.ServerProxy.servers['b'] = {'command': ['b']}\n")
    loaded, _, _ = load_py(tmp_path, "c.ServerProxy.servers = {'a': {'command': ['a']}}\n"
                                     "load_subconfig('more.py')\n")
    assert set(loaded.config.servers) == {"a", "b"}


def test_call_for_server_passes_only_the_named_arguments_and_fills_templates():
    seen = {}

    def command(port, unix_socket):
        seen.update(port=port, unix_socket=unix_socket)
        return ["app", "{port}", "{{literal}}"]

    assert call_for_server(command, StrList(), 8000, "", "/base/", "servers.a.command") == (
        "app", "8000", "{literal}")
    assert seen == {"port": 8000, "unix_socket": ""}
    assert call_for_server(lambda: {"A": "{base_url}"}, StrDict(), 1, "", "/b/", "e") == {"A": "/b/"}
    with pytest.raises(ValueError, match=r"the `servers.a.command` function .* failed: "
                                         r"TypeError: .*asks for 'nope'"):
        call_for_server(lambda nope: [], StrList(), 1, "", "/", "servers.a.command")
    with pytest.raises(ValueError, match=r"ZeroDivisionError"):
        call_for_server(lambda: 1 / 0, StrList(), 1, "", "/", "servers.a.command")
    with pytest.raises(ValueError, match=r"must be a list"):
        call_for_server(lambda: "app --port", StrList(), 1, "", "/", "servers.a.command")


def test_services_become_servers_as_the_hub_would_run_them():
    warnings = []
    config = load_dict({
        "hub": {"api_url": "http://127.0.0.1:8081/hub/api"},
        "services": [
            {"name": "web", "url": "http://127.0.0.1:10101", "command": ["web"],
             "environment": {"EXTRA": "1"}, "admin": True, "api_token": "secret"},
            {"name": "cull-idle", "command": ["python3", "-m", "culler"], "cwd": "/tmp"},
            {"name": "external", "url": "http://127.0.0.1:9999"},
            {"name": "nothing", "oauth_no_confirm": True},
        ]}, "hub.toml", warnings.append)
    web, cull, external = (config.servers[n] for n in ("web", "cull-idle", "external"))
    assert "nothing" not in config.servers and config.services == ()
    assert web.port == 10101 and web.absolute_url and web.proxied and web.autostart
    assert web.restart == "always"
    assert web.environment == {
        "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
        "JUPYTERHUB_SERVICE_NAME": "web", "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:{port}",
        "JUPYTERHUB_SERVICE_PREFIX": "{base_url}web/", "EXTRA": "1"}
    assert not cull.proxied and cull.cwd == "/tmp" and cull.restart == "always"
    assert cull.environment == {"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
                                "JUPYTERHUB_SERVICE_NAME": "cull-idle"}
    assert not cull.launcher_entry.enabled
    assert external.is_external and external.port == 9999
    assert warnings == [
        "hub.toml: `services[0]` (web): admin, api_token ignored (JupyterHub's own settings; "
        "hubtwist gives services no token)",
        "hub.toml: `services[3]` (nothing): oauth_no_confirm ignored (JupyterHub's own "
        "settings; hubtwist gives services no token)",
        "hub.toml: `services[3]` (nothing) has neither `command` nor `url`: nothing to run or "
        "route; skipped",
    ]


@pytest.mark.parametrize("service, message", [
    ({"name": "x", "url": "http://example.org:80", "command": ["x"]},
     r"`services\[0\].url` is not a local http URL"),
    ({"command": ["x"]}, r"`services\[0\].name` is missing"),
    ({"name": "a", "command": ["x"]}, r"`services\[0\].name` is already the name of a server"),
    ({"name": "api", "command": ["x"]}, r"`services\[0\].name` is a name hubtwist uses"),
    ({"name": "x", "command": ["x"], "env": {}}, r"`services\[0\].env` is not a known key. "
                                                 r"Known keys here: .*environment"),
])
def test_service_mistakes_name_the_entry(service, message):
    with pytest.raises(ConfigError, match=message):
        load_dict({"servers": {"a": {"command": ["a"]}}, "services": [service]}, "f.toml")


def test_a_default_server_must_be_proxied():
    with pytest.raises(ConfigError, match="`default_server` names a server that is not proxied"):
        load_dict({"servers": {"a": {"command": ["a"], "proxied": False}},
                   "default_server": "a"}, "f.toml")


class _Entry:
    """Stands in for an importlib.metadata.EntryPoint (the real ones are tested end to end)."""

    def __init__(self, name, function):
        self.name, self.value, self._function = name, f"pkg:{name}", function

    def load(self):
        if isinstance(self._function, Exception):
            raise self._function
        return self._function


def test_plugins_broken_ones_are_reported_by_name_and_skipped():
    warnings = []
    available = {
        "good": _Entry("good", lambda: {"command": ["good", "{port}"], "timeout": 9}),
        "noimport": _Entry("noimport", ImportError("No module named 'gone'")),
        "junk": _Entry("junk", lambda: ["not", "a", "dict"]),
        "badkey": _Entry("badkey", lambda: {"command": ["x"], "timeout": "soon"}),
        "raises": _Entry("raises", lambda: 1 / 0),
    }
    found = load_plugins(PluginChoice(), warnings.append, available)
    assert list(found) == ["good"] and found["good"][0].timeout == 9
    assert found["good"][1] == "plugin good (pkg:good)"
    assert [w.split(" skipped: ")[0] for w in warnings] == [
        f"jupyter-server-proxy plugin {n!r} (pkg:{n})" for n in ("noimport", "junk", "badkey", "raises")]
    assert "ImportError: No module named 'gone'" in warnings[0]
    assert "returned list, not a dict" in warnings[1]
    assert "`servers.badkey.timeout` has the wrong type" in warnings[2]
    assert "ZeroDivisionError" in warnings[3]
    picked = load_plugins(PluginChoice(names=("good",)), warnings.append, available)
    assert list(picked) == ["good"]
    with pytest.raises(ConfigError, match="no jupyter-server-proxy plugin named 'nope'"):
        load_plugins(PluginChoice(names=("nope",)), warnings.append, available)
    assert load_plugins(NONE, warnings.append, available) == {}


def test_plugin_flags():
    assert choice_from_flags(False, None) == PluginChoice()
    assert choice_from_flags(True, None) == NONE
    assert choice_from_flags(False, ["a", "b", "a"]) == PluginChoice(names=("a", "b"))
    with pytest.raises(ConfigError, match="not both"):
        choice_from_flags(True, ["a"])


def test_the_entry_point_group_is_jupyter_server_proxys():
    from hubtwist.config.plugins import GROUP

    assert GROUP == "jupyter_serverproxy_servers"
    assert isinstance(metadata.entry_points(group=GROUP), metadata.EntryPoints)
