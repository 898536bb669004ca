"""The configuration schema, its loaders and its error messages (pure, no reactor)."""

import os
import pathlib
import sys

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
    ("[servers.app]\nmappath = 'not an import path'", "`servers.app.mappath` is not an import path"),
    ("[servers.app]\nmappath = 5", "`servers.app.mappath` has the wrong type (given: 5)"),
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


# -- what a hostile or mistaken file cannot do: each is one ConfigError sentence --------------


@pytest.mark.parametrize("text, expected", [
    ("a = " + "[" * 10000 + "]" * 10000, "apps.toml: the file nests arrays or inline tables too deeply"),
    ("a = " + "{b = " * 10000 + "1" + "}" * 10000, "the file nests arrays or inline tables too deeply"),
    ("max_body_size = " + "9" * 5000, "apps.toml: the file holds a number that cannot be read"),
    ("[servers.app]\ntimeout = nan", "`servers.app.timeout` must be a finite number (given: nan)"),
    ("[servers.app]\nstop_timeout = inf", "`servers.app.stop_timeout` must be a finite number (given: inf)"),
    ("[servers.app]\nbackoff_max = -inf", "`servers.app.backoff_max` must be a finite number"),
    ("[servers.app]\nmin_uptime = 1e300", "`servers.app.min_uptime` is too large (at most 1000000000 seconds)"),
    # an int too big for a float: compared, never converted
    ("[servers.app]\ntimeout = " + "9" * 400, "`servers.app.timeout` is too large (at most"),
    ("[hub]\ncache_max_age = nan", "`hub.cache_max_age` must be a finite number"),
    ("[servers.app]\nunix_socket = ''", "`servers.app.unix_socket` must not be empty"),
    ("[servers.app]\nunix_socket = '/tmp/" + "x" * 200 + "'",
     "`servers.app.unix_socket` is 205 bytes long, too long for a unix socket"),
    ("[hub]\napi_url = '::::'", "`hub.api_url` is not an http(s) URL (given: '::::')"),
    ("[hub]\nactivity_url = 'http://[::1/x'", "`hub.activity_url` is not an http(s) URL"),
    ("[hub]\nhub_host = 'hub.example.org'", "`hub.hub_host` is not an http(s) URL"),
])
def test_hostile_values_are_config_errors(text, expected):
    assert expected in error_of(text)


def test_values_in_messages_are_bounded_and_keys_stay_on_one_line():
    message = error_of("[servers.app]\ntimeout = '" + "x" * 100000 + "'")
    assert len(message) < 400 and "..." in message
    message = error_of("listen = " + "[" * 200 + "]" * 200)
    assert len(message) < 400
    message = error_of('"a\\nb" = 1')
    assert "\n" not in message and "`a\\nb` is not a known key" in message


def test_good_hub_urls_are_accepted():
    config = load_toml_text("[hub]\napi_url = 'http://127.0.0.1:8081/hub/api'\n"
                            "activity_url = 'https://[::1]:8081/hub/api/users/a/activity'\n"
                            "hub_host = 'https://hub.example.org'")
    assert config.hub.hub_host == "https://hub.example.org"


@pytest.mark.parametrize("make, expected", [
    (lambda path: path.mkdir(), "is a directory, not a configuration file"),
    # a named pipe without a writer: refused at once, not read (which would block)
    (lambda path: os.mkfifo(path), "is a named pipe, not a configuration file"),
    (lambda path: path.write_bytes(b"# hi\na = '\xff'\n"),
     "the file is not UTF-8 text (byte 0xff at line 2 cannot be decoded)"),
    (lambda path: path.write_bytes(b"#" * (1024 * 1024 + 1)),
     "the file is larger than 1 MiB, too large for a configuration file"),
    (lambda path: None, "the file does not exist"),
])
def test_files_that_are_not_configurations(tmp_path, make, expected):
    path = tmp_path / "x.toml"
    make(path)
    with pytest.raises(ConfigError) as caught:
        load_toml(path)
    assert str(caught.value) == f"{path}: {expected}."


def test_a_path_below_a_file_cannot_be_opened(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"file/x.toml: the file cannot be opened \(Not a directory\)"):
        load_toml(tmp_path / "file" / "x.toml")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Makes modules on sys.path from source text; returns their names."""
    names = []

    def make(source: str) -> str:
        name = f"htuser_{tmp_path.name}_{len(names)}".replace("-", "_")
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for name in names:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("key", ["mappath", "rewrite_response"])
def test_import_paths_are_imported_when_the_config_is_checked(user_module, key):
    good = user_module("def f(*args):\n    return args\nVALUE = 3\nclass K:\n    def m(self): pass\n")
    assert load_toml_text(f"[servers.app]\n{key} = '{good}:f'")
    assert load_toml_text(f"[servers.app]\n{key} = '{good}:K.m'")
    at = f"`servers.app.{key}`" if key == "mappath" else f"`servers.app.{key}[0]`"
    broken = user_module("raise RuntimeError('no config here')\n")
    cases = {
        "no_such_module_xyz:f": "cannot be imported: No module named 'no_such_module_xyz'",
        f"{good}:g": f"names a missing attribute: module '{good}' has no attribute 'g'",
        f"{good}:K.n": "names a missing attribute: type 'K' has no attribute 'n'",
        f"{good}:VALUE": "does not name a callable (its type is int)",
        f"{broken}:f": f"cannot be imported: importing '{broken}' failed (RuntimeError: no config here)",
    }
    for value, why in cases.items():
        message = error_of(f"[servers.app]\n{key} = '{value}'")
        assert message.startswith(f"apps.toml: {at} {why} (given: '{value}')."), message


def test_an_import_path_whose_module_exits_is_a_config_error(user_module):
    name = user_module("import sys\nsys.exit(3)\n")
    assert "failed (SystemExit: 3)" in error_of(f"[servers.app]\nmappath = '{name}:f'")


@pytest.mark.parametrize("flags", [["--timeout", "nan"], ["--request-timeout", "inf"],
                                   ["--last-activity-interval", "nan"], ["--timeout", "1e400"]])
def test_duration_flags_must_be_finite(flags):
    from hubtwist.cli import _parser, build_config

    with pytest.raises(ConfigError, match="must be a finite number"):
        build_config(_parser().parse_args(flags), ["app", "{port}"])
