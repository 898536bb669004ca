"""
jupyter-server-proxy users' files, unchanged: a jupyter_server_config.py with functions,
installed plugins (a real package, pip-installed, found by entry point), and a JupyterHub
services list. Real hubtwist processes, real apps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest

from tests.helpers import alive, free_port, HTTPAPP, HUBTWIST, HubtwistProcesses, try_get, wait_for



@pytest.fixture
def start():
    processes = HubtwistProcesses()
    yield processes
    processes.stop_all()


def stop(process) -> str:
    """SIGTERM hubtwist, return everything it printed."""
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output


def get_json(url: str, token: str | None = None):
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.status, dict(response.headers), json.loads(response.read())


PY_CONFIG = """
import sys
c = get_config()
HTTPAPP = {httpapp!r}

def command(port):
    # the environment function's variable, printed into the app's log
    return ["sh", "-c", 'echo "greeting=$GREETING"; exec "$0" "$@"', sys.executable, HTTPAPP,
            "--port", str(port)]

def environment(port, base_url):
    return {{"GREETING": "hello-{{port}}-" + base_url}}

def mappath(path):
    return "/echo" if path == "/mapped" else path

def headers(port, unix_socket):
    return {{"X-Port": str(port), "X-Socket": "none" + unix_socket}}

def rewrite(response, path, port, orig_response):
    response.headers["X-Rewritten"] = "%s|%s|%s" % (path, port, orig_response.code)

def broken():
    raise ZeroDivisionError("the command function is broken")

c.ServerProxy.servers = {{
    "app": {{"command": command, "environment": environment, "mappath": mappath,
             "request_headers_override": headers, "rewrite_response": [rewrite],
             "timeout": 20, "absolute_url": False}},
    "broken": {{"command": broken, "start_retries": 1}},
}}
c.ServerProxy.host_allowlist = ["localhost", "127.0.0.1"]
c.ServerApp.ip = "0.0.0.0"
c.NotebookApp.open_browser = False
"""


def test_a_jupyter_server_config_with_functions_serves_the_app(tmp_path, start):
    config = tmp_path / "jupyter_server_config.py"
    config.write_text(PY_CONFIG.format(httpapp=HTTPAPP[1]))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start("--config", str(config), "--no-plugins", "--no-auth",
                    "--listen", f"tcp:{port}:interface=127.0.0.1")
    wait_for(lambda: try_get(f"{base}/api"), 30, "hubtwist")
    status, headers, echo = get_json(f"{base}/app/mapped?x=1")
    assert status == 200
    assert echo["path"] == "/echo?x=1"  # mappath function
    app = get_json(f"{base}/api/servers/app")[2]
    app_port = int(app["address"].rpartition(":")[2])
    assert echo["headers"]["x-port"] == str(app_port)  # request_headers_override function
    assert echo["headers"]["x-socket"] == "none"
    assert headers["X-Rewritten"] == f"/echo?x=1|{app_port}|200"  # rewrite_response function
    assert f"greeting=hello-{app_port}-/" in [line["text"] for line in app["logs"]]

    # A function that raises: the server fails to start, with the exception in its log;
    # hubtwist itself keeps serving.
    status, body = try_get(f"{base}/broken/")
    assert status == 503
    assert b"ZeroDivisionError: the command function is broken" in body
    broken = get_json(f"{base}/api/servers/broken")[2]
    assert broken["state"] == "fatal"
    assert any("the command function is broken" in line["text"] for line in broken["logs"])
    assert get_json(f"{base}/app/echo")[0] == 200

    output = stop(process)
    assert output.count("`c.ServerApp.ip` is not used by hubtwist; ignored") == 1
    assert output.count("`c.NotebookApp.open_browser` is not used by hubtwist; ignored") == 1


def test_an_error_in_the_python_file_is_status_2_with_its_line(tmp_path):
    config = tmp_path / "jupyter_server_config.py"
    config.write_text("c.ServerProxy.servers = {}\nc.ServerProxy.servers['a'] = missing\n")
    result = subprocess.run([*HUBTWIST, "--config", str(config), "--no-auth"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr == (f"hubtwist: {config}: line 2: NameError: name 'missing' is not "
                             "defined.\n")


# -- plugins -------------------------------------------------------------------------------

PLUGIN = """
import pathlib
import sys

def setup():
    return {{"command": [sys.executable, {httpapp!r}, "--port", "{{port}}"], "timeout": 20,
             "launcher_entry": {{"title": "HT plugin", "icon_path": pathlib.Path("/x.svg")}}}}

def junk():
    return 42
"""

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "hubtwist-test-plugin"
version = "0.1"

[project.entry-points.jupyter_serverproxy_servers]
htplug = "htplug:setup"
htjunk = "htplug:junk"
htbroken = "htplug_not_there:setup"

[tool.setuptools]
py-modules = ["htplug"]
"""


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """
    A real plugin package, built from a pyproject.toml and pip-installed. It goes into its
    own target directory put on the PYTHONPATH of the hubtwist processes under test (the
    entry points are found there like in site-packages): installing into the shared
    interpreter would give every other hubtwist test run on this machine these servers too.
    """
    root = tmp_path_factory.mktemp("plugin")
    source, target = root / "src", root / "site"
    source.mkdir()
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "htplug.py").write_text(PLUGIN.format(httpapp=HTTPAPP[1]))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-warn-script-location", "--target",
                    str(target), str(source)], check=True, timeout=120,
                   cwd=root, capture_output=True)
    assert list(target.glob("hubtwist_test_plugin-0.1.dist-info"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    yield env
    # the target directory goes with tmp_path_factory's; nothing was installed elsewhere


def test_plugins_are_loaded_by_entry_point_and_broken_ones_skipped(tmp_path, start, plugin_env):
    config = tmp_path / "apps.toml"
    config.write_text("[servers.mine]\ncommand = ['true']\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start("--config", str(config), "--no-auth", "--listen",
                    f"tcp:{port}:interface=127.0.0.1", env=plugin_env)
    wait_for(lambda: try_get(f"{base}/api"), 30, "hubtwist")
    status, _, echo = get_json(f"{base}/htplug/echo")
    assert status == 200 and echo["path"] == "/echo"
    names = [server["name"] for server in get_json(f"{base}/api/servers")[2]["servers"]]
    assert sorted(names) == ["htplug", "mine"]
    output = stop(process)
    assert "plugin 'htbroken' (htplug_not_there:setup) skipped: it cannot be imported " \
           "(ModuleNotFoundError: No module named 'htplug_not_there')" in output
    assert "plugin 'htjunk' (htplug:junk) skipped: it returned int, not a dict" in output
    warnings = [line for line in output.splitlines() if "skipped" in line]
    assert len(warnings) == 2 and all(w.startswith("hubtwist: warning: ") for w in warnings)


def test_plugin_flags_and_a_file_server_overriding_a_plugin(tmp_path, plugin_env):
    config = tmp_path / "apps.toml"
    config.write_text("[servers.htplug]\ncommand = ['mine', '{port}']\n\n"
                      "[[services]]\nname = 'cull-idle'\ncommand = ['python3', '-m', 'culler']\n")

    def listing(*args):
        result = subprocess.run([*HUBTWIST, "list-servers", *args], capture_output=True,
                                text=True, timeout=60, env=plugin_env)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines(), result.stderr

    lines, errors = listing("--config", str(config))
    assert lines[0].split() == ["NAME", "FROM", "PATH", "COMMAND"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"htplug", "cull-idle"}
    assert rows["htplug"].split() == ["htplug", str(config), "/htplug/", "mine", "{port}"]
    assert rows["cull-idle"].split() == ["cull-idle", str(config), "(services)",
                                         "(not", "proxied)", "python3", "-m", "culler"]
    assert "'htbroken'" in errors and "'htjunk'" in errors

    lines, _ = listing("--plugin", "htplug")
    [row] = lines[1:]
    assert row.split()[:4] == ["htplug", "plugin", "htplug", "(htplug:setup)"]
    assert row.split()[4] == "/htplug/" and row.endswith("--port {port}")

    lines, errors = listing("--no-plugins")
    assert lines[1:] == [] and errors == ""

    result = subprocess.run([*HUBTWIST, "list-servers", "--plugin", "nope"],
                            capture_output=True, text=True, timeout=60, env=plugin_env)
    assert result.returncode == 2
    assert result.stderr.startswith("hubtwist: --plugin: no jupyter-server-proxy plugin named "
                                    "'nope' is installed. Accepted: htbroken, htjunk, htplug")


# -- services ------------------------------------------------------------------------------

WORKER = """
import os, sys, time
with open(sys.argv[1] + ".tmp", "w") as out:
    out.write(json.dumps({"pid": os.getpid(), "env": dict(os.environ)}))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def test_a_services_list_with_and_without_url(tmp_path, start):
    worker = tmp_path / "worker.py"
    worker.write_text("import json\n" + WORKER)
    report = tmp_path / "worker.json"
    service_port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text(textwrap.dedent(f"""
        [[services]]
        name = "web"
        url = "http://127.0.0.1:{service_port}"
        command = {json.dumps([*HTTPAPP, "--port", "{port}"])}
        admin = true

        [[services]]
        name = "cull-idle"
        command = {json.dumps([sys.executable, str(worker), str(report)])}
        environment = {{ CULL_TIMEOUT = "3600" }}
        """))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, HUBTWIST_TOKEN="the-token", JUPYTERHUB_API_TOKEN="hubs-token")
    process = start("--config", str(config), "--no-plugins", "--mode", "standalone",
                    "--listen", f"tcp:{port}:interface=127.0.0.1", env=env)
    first = wait_for(lambda: report.exists() and json.loads(report.read_text()), 30,
                     "the service without url")
    # the url service: routed at /web/ to the port of its url, full path (as the Hub's proxy)
    status, _, echo = wait_for(lambda: try_get(f"{base}/api") and get_json(
        f"{base}/web/echo", "the-token"), 30, "the service with url")
    assert status == 200 and echo["path"] == "/web/echo"
    web = get_json(f"{base}/api/servers/web", "the-token")[2]
    assert web["address"] == f"127.0.0.1:{service_port}" and web["state"] == "running"

    environment = first["env"]
    assert environment["JUPYTERHUB_SERVICE_NAME"] == "cull-idle"
    assert environment["CULL_TIMEOUT"] == "3600"
    assert "JUPYTERHUB_SERVICE_URL" not in environment
    assert "HUBTWIST_TOKEN" not in environment and "JUPYTERHUB_API_TOKEN" not in environment

    # no route for it, and it is restarted when it dies
    with pytest.raises(urllib.error.HTTPError) as missing:
        get_json(f"{base}/cull-idle/", "the-token")
    assert missing.value.code == 404
    report.unlink()
    os.kill(first["pid"], signal.SIGKILL)
    second = wait_for(lambda: report.exists() and json.loads(report.read_text()), 30,
                      "the restarted service")
    assert second["pid"] != first["pid"] and not alive(first["pid"])
    output = stop(process)
    assert "admin ignored" in output
    assert not alive(second["pid"])
