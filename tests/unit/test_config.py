"""The configuration schema, its loaders and its error messages (pure, no reactor)."""

import pathlib

import pytest

from hubtwist.config import Config, ConfigError, ServerConfig, load_toml, load_toml_text, single_app, with_overrides
from hubtwist.config.docs import render
from hubtwist.config.dump import to_toml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_toml_text(text, "apps.toml")
    return str(caught.value)


def test_defaults_of_an_empty_file():
    config = load_toml_text("")
    assert config.listen == ("tcp:8888:interface=127.0.0.1",)
    assert config.base_url == "/"
    assert config.servers == {}
    assert config.proxy_allowed_hosts == ("localhost", "127.0.0.1", "::1")


def test_a_full_server_table_is_read():
    config = load_toml_text("""
        listen = "unix:/tmp/ht.sock:mode=600"
        base_url = "/user/alice"
        default_server = "lab"
        [servers.lab]
        command = ["python3", "-m", "http.server", "{port}"]
        environment = { GREETING = "hi {base_url}", N = 3 }
        timeout = 5
        unix_socket = true
        restart = "always"
        stop_signal = "SIGINT"
        mappath = { "/" = "/lab" }
        [servers.lab.launcher_entry]
        title = "Lab"
    """)
    lab = config.servers["lab"]
    assert config.listen == ("unix:/tmp/ht.sock:mode=600",)
    assert config.base_url == "/user/alice/"
    assert lab.command == ("python3", "-m", "http.server", "{port}")
    assert lab.environment == {"GREETING": "hi {base_url}", "N": "3"}
    assert lab.timeout == 5.0 and lab.unix_socket is True and lab.restart == "always"
    assert lab.stop_signal == "INT"
    assert lab.launcher_entry.title == "Lab" and lab.launcher_entry.enabled is True


@pytest.mark.parametrize("text, expected", [
    ("[servers.app]\ncomand = ['x']",
     "apps.toml: `servers.app.comand` is not a known key. Did you mean `command`?"),
    ("[servers.app]\ntimeout = 'soon'",
     "apps.toml: `servers.app.timeout` has the wrong type (given: 'soon'). "
     "Accepted: a number of seconds, more than 0."),
    ("[servers.app]\ntimeout = 0", "`servers.app.timeout` is out of range (given: 0)"),
    ("[servers.app]\ncommand = 'streamlit run app.py'",
     'must be a list, not a single string (given: \'streamlit run app.py\'). Accepted: a list of '
     'strings. Write it as ["streamlit", "run", "app.py"].'),
    ("[servers.app]\ncommand = ['app', '--port={prot}']",
     "`servers.app.command[1]` uses an unknown template {prot}"),
    ("[servers.app]\nrestart = 'sometimes'",
     'Accepted: one of "on-failure", "always", "never".'),
    ("[servers.app]\nstop_signal = 'STOPP'", "`servers.app.stop_signal` is not a signal"),
    ("[servers.app]\nport = 70000", "`servers.app.port` is too large (given: 70000)"),
    ("default_server = 'lab'", "`default_server` names no configured server (given: 'lab')"),
    ("[servers.api]", "`servers.api` is a name hubtwist uses for its own pages"),
    ("[servers.'bad name']", "`servers.bad name` is not a usable server name"),
    ("[servers.app]\nexclude_last_activity_patterns = ['(']",
     "`servers.app.exclude_last_activity_patterns[0]` is not a valid regular expression"),
    ("[servers.app.launcher_entry]\ntitel = 'x'", "Did you mean `title`?"),
    ("base_url = 'user/alice'", "`base_url` is not a URL path"),
    ("listen = [", "apps.toml: the file is not valid TOML"),
    ("[servers.app]\nmappath = 'not an import path'", "`servers.app.mappath` has the wrong type"),
])
def test_errors_name_file_key_given_and_accepted(text, expected):
    assert expected in error_of(text)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: the file does not exist"):
        load_toml(tmp_path / "nope.toml")


def test_single_app_serves_the_command_at_the_base_url():
    config = single_app(["app", "--port", "{port}"], "app", {"timeout": 3.0})
    assert config.default_server == "app"
    assert config.servers["app"].command == ("app", "--port", "{port}")
    assert config.servers["app"].timeout == 3.0


def test_overrides_are_checked_and_name_the_flag():
    config = with_overrides(load_toml_text(""), listen=["tcp:0"], base_url="/x", log_level=None)
    assert config.listen == ("tcp:0",) and config.base_url == "/x/"
    with pytest.raises(ConfigError, match=r"^--base-url: `base_url` is not a URL path"):
        with_overrides(config, base_url="nope")


def test_effective_config_round_trips_through_toml():
    config = load_toml_text("""
        [servers.a]
        command = ["x", "{{literal}}", "{port}"]
        environment = { K = "v" }
        [servers.b]
        port = 9000
        unix_socket = "/tmp/b.sock"
    """)
    assert load_toml_text(to_toml(config)) == config


def test_external_server_has_no_command():
    assert ServerConfig(port=9000).is_external
    assert not ServerConfig(command=("x",)).is_external


def test_configuration_docs_are_generated_from_the_schema():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render(), (
        "docs/configuration.md is stale: run `python -m hubtwist.config.docs > docs/configuration.md`")


def test_every_schema_key_is_documented():
    import attrs

    page = render()
    for model in (Config, ServerConfig):
        for field in attrs.fields(model):
            assert f"| `{field.name}` |" in page
            assert field.metadata["doc"]


def test_example_configs_in_conf_are_valid():
    examples = sorted((ROOT / "conf").glob("*.toml"))
    assert examples, "conf/ should hold example TOML configurations"
    for path in examples:
        load_toml(path)


def test_last_activity_interval_flag_is_checked_like_the_config_key():
    from hubtwist.cli import _parser, build_config
    from hubtwist.config import ConfigError

    args = _parser().parse_args(["--last-activity-interval", "5"])
    assert build_config(args, ["app", "{port}"]).hub.activity_interval == 5.0
    args = _parser().parse_args(["--last-activity-interval", "-1"])
    with pytest.raises(ConfigError) as error:
        build_config(args, ["app", "{port}"])
    assert "--last-activity-interval" in str(error.value)
    assert "hub.activity_interval" in str(error.value)
