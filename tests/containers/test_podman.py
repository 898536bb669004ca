"""
hubtwist as the single-user server in a container, under a real JupyterHub: the real
DockerSpawner (PyPI) talks to podman's Docker-compatible API, and each user's server is a
container of the image conf/container/build-image makes (the one-file binary, busybox httpd
as the app, no Python), on the host's network, reached through configurable-http-proxy.

alice's container runs as the image's user (uid 1000, gid 100), as conf/dockerspawner_config.py
sets it; carol's runs as root, a newcomer's default: hubtwist sees the container and becomes
the image's notebook user before it starts the app. Login reaches the app; stopping the
server removes the container and leaves no process of it. Run directly with `podman run`:
the standalone image as root drops to jovyan, and refuses (exit 2) when the image has no
user to become.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import textwrap
import time

import pytest
import requests

from tests.containers.conftest import (PODMAN, PREFIX, containers, podman,
                                       ulimit_args, ulimits)
from tests.e2e import conftest as e2e
from tests.e2e.browser import Browser
from tests.e2e.conftest import REPO, free_port, wait_until
from tests.helpers import processes_with

pytestmark = pytest.mark.e2e

AS_ROOT = ("carol",)  # the container runs as root: hubtwist's root default in a container


CONF = REPO / "conf" / "dockerspawner_config.py"


def dockerspawner_config(api_url: str, tag: str) -> str:
    """The Hub's DockerSpawner lines: conf/dockerspawner_config.py itself, run with
    NETWORK = "host", then what this machine and the test need on top."""
    source = CONF.read_text()
    assert 'NETWORK = "bridge"' in source, f"{CONF} no longer has the NETWORK switch"
    return textwrap.dedent(f"""
        # -- conf/dockerspawner_config.py, with --network host ------------------------------
        exec(compile({source.replace('NETWORK = "bridge"', 'NETWORK = "host"')!r},
                     {str(CONF)!r}, "exec"))

        # -- podman's Docker-compatible API, this session's image and names -----------------
        def per_user(spawner):
            if spawner.user.name in {AS_ROOT!r}:
                spawner.extra_create_kwargs = {{"user": "0:0"}}

        c.Spawner.pre_spawn_hook = per_user
        c.DockerSpawner.client_kwargs = {{"base_url": {api_url!r}}}   # or DOCKER_HOST
        c.DockerSpawner.image = {tag!r}
        c.DockerSpawner.prefix = {PREFIX!r}
        # runc may not raise the limits here (no CAP_SYS_RESOURCE): keep them as they are.
        c.DockerSpawner.extra_host_config = {{"ulimits": {ulimits()!r}}}
        c.DockerSpawner.environment = {{"JUPYTERHUB_ACTIVITY_INTERVAL": "{e2e.ACTIVITY_INTERVAL}"}}
        c.DockerSpawner.http_timeout = 60
        c.DockerSpawner.start_timeout = 90
        """)


class DockerSpawnerHub(e2e.Hub):
    """The e2e Hub, spawning users' servers as podman containers through DockerSpawner."""

    def __init__(self, root, api_url: str, tag: str) -> None:
        super().__init__(root)
        self.api_url_docker = api_url
        self.tag = tag

    def write_config(self):
        config = super().write_config()
        with config.open("a") as file:
            file.write(dockerspawner_config(self.api_url_docker, self.tag))
        return config

    def container_processes(self, user: str) -> list[int]:
        """Live processes of C{user}'s server: their environment names this Hub and her."""
        return processes_with(f"127.0.0.1:{self.hub_port}/".encode(),
                              f"JUPYTERHUB_USER={user}\0".encode())


@pytest.fixture(scope="module")
def docker_hub(image, podman_api, tmp_path_factory):
    hub = DockerSpawnerHub(tmp_path_factory.mktemp("docker-hub"), podman_api.url, image.tag)
    hub.start()
    yield hub
    for user in ("alice", *AS_ROOT):  # a server a failed test left running: its container too
        hub.api("DELETE", f"/users/{user}/server")
    hub.stop()


def _whoami(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.mark.parametrize("user", ["alice", "carol"], ids=["image-user", "root-default"])
def test_dockerspawner_on_podman_runs_hubtwist_as_the_server_and_removes_it(
        image, docker_hub, user):
    hub = docker_hub
    name = f"{PREFIX}-{user}"
    browser = Browser(hub.public_url)
    started = time.monotonic()
    page = browser.login(user)
    reachable = time.monotonic() - started
    logs = podman("logs", name).stdout + podman("logs", name).stderr
    assert page.status_code == 200, (browser.history, page.text[:300], hub.log_tail(), logs)
    assert "busybox httpd behind hubtwist" in page.text, page.text[:300]

    # The app (busybox httpd's CGI) sees hubtwist's request: the user's prefix removed, the
    # user forwarded, and it runs as the image's user (carol's container is root).
    seen = _whoami(browser.get(f"/user/{user}/cgi-bin/whoami?x=1").text)
    assert seen["uri"] == "/cgi-bin/whoami?x=1", seen
    assert json.loads(seen["user"])["name"] == user, seen
    assert seen["uid"] == "1000 gid=100", seen

    assert name in containers(), containers()
    inspected = json.loads(podman("inspect", name).stdout)[0]
    assert inspected["State"]["Running"], inspected["State"]
    assert inspected["Config"]["User"] == ("0:0" if user in AS_ROOT else "1000:100")
    assert inspected["HostConfig"]["NetworkMode"] == "host", inspected["HostConfig"]
    if user in AS_ROOT:
        # The newcomer's path: root in a container, no --user, no --allow-root.
        assert "Running as jovyan (uid 1000, gid 100) (a container's default user" in logs, logs
    assert hub.container_processes(user), "no process of the container seen from the host"
    print(f"\n{user}: login -> app in the container reachable in {reachable:.1f} s "
          f"(image built in {image.build_seconds:.1f} s)")

    # Stopping the server removes the container; nothing of it is left.
    stopping = time.monotonic()
    response = hub.api("DELETE", f"/users/{user}/server")
    assert response.status_code in (202, 204), response.text
    wait_until(lambda: hub.server_model(user) is None, 60, "the Hub to stop the server")
    wait_until(lambda: name not in containers(), 30, f"container {name} to be removed")
    wait_until(lambda: not hub.container_processes(user), 30,
               f"{user}'s container processes to end (left: {hub.container_processes(user)})")
    print(f"{user}: stop -> container removed in {time.monotonic() - stopping:.1f} s")


def _run_standalone(image, name: str, *extra: str) -> tuple[str, int]:
    """`podman run -d` of the image as root, standalone (a token, --listen on loopback)."""
    port = free_port()
    subprocess.run([*PODMAN, "run", "-d", "--name", name, "--user", "0:0", "--network", "host",
                    *ulimit_args(), "-e", "HUBTWIST_TOKEN=" + TOKEN, *extra, image.tag,
                    "--config", "/etc/hubtwist/apps.toml",
                    "--listen", f"tcp:{port}:interface=127.0.0.1"],
                   check=True, capture_output=True, text=True, timeout=60)
    return name, port


TOKEN = secrets.token_hex(24)


def test_root_in_the_container_becomes_the_images_user_standalone(image):
    name, port = _run_standalone(image, f"{PREFIX}-standalone-root")
    try:
        def answer():
            try:
                return requests.get(f"http://127.0.0.1:{port}/cgi-bin/whoami", timeout=2,
                                    headers={"Authorization": f"token {TOKEN}"})
            except requests.RequestException:
                return None
        wait_until(lambda: (r := answer()) is not None and r.status_code == 200, 30,
                   "the standalone container to serve")
        assert _whoami(answer().text)["uid"] == "1000 gid=100"
        logs = podman("logs", name).stderr + podman("logs", name).stdout
        assert "Running as jovyan (uid 1000, gid 100)" in logs, logs
        top = podman("top", name, "user", "args").stdout
        # Only the bootloader stays root (it waits and forwards signals).
        root_lines = [line for line in top.splitlines()[1:] if line.split()[0] == "root"]
        assert len(root_lines) == 1 and "hubtwist" in root_lines[0], top
    finally:
        podman("rm", "-f", "-t", "2", name)
    assert name not in containers()


def test_root_in_a_container_without_a_user_to_become_refuses_clearly(image, tmp_path):
    # An image whose /etc/passwd has no uid 1000 and no $NB_UID: nobody to become, and the
    # app would run as root: hubtwist refuses with one sentence, exit status 2.
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\n")
    name = f"{PREFIX}-standalone-refuse"
    try:
        result = subprocess.run(
            [*PODMAN, "run", "--name", name, "--user", "0:0", "--network", "host",
             *ulimit_args(), "-v", f"{passwd}:/etc/passwd:ro", "-e", "HUBTWIST_TOKEN=" + TOKEN,
             image.tag, "--config", "/etc/hubtwist/apps.toml",
             "--listen", f"tcp:{free_port()}:interface=127.0.0.1"],
            capture_output=True, text=True, timeout=60)
    finally:
        podman("rm", "-f", "-t", "2", name)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "refusing to run apps as root" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
