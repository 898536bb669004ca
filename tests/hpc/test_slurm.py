"""
A real JupyterHub with batchspawner's SlurmSpawner starts each user's server as a Slurm
job running hubtwist: alice's behind the stock wrapper (`batchspawner-singleuser hubtwist
...`, hubtwist pip-installed), bob's as the one-file binary alone (`batchspawner_singleuser_cmd
= ""`: hubtwist reports its port itself). Login reaches the app in the job, `squeue` shows
the job, and stopping the server cancels it and leaves no process of it.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.binary.locate import BINARY, DEFAULT_BINARY
from tests.e2e.browser import Browser
from tests.e2e.conftest import wait_until
from tests.hpc.conftest import BIN, SlurmHub, queue

pytestmark = pytest.mark.e2e

WRAPPER = str(BIN / "batchspawner-singleuser")


@pytest.fixture(scope="module")
def slurm_hub(slurm, tmp_path_factory):
    if BINARY is None:
        pytest.fail(f"no hubtwist binary at {DEFAULT_BINARY}: run `bash tests/setup` "
                    "(packaging/build) or set HUBTWIST_BINARY", pytrace=False)
    root = tmp_path_factory.mktemp("slurm-hub")
    apps = root / "user-apps.toml"  # written by the Hub's write_config
    args = ["--allow-root", "--config", str(apps)]
    hub = SlurmHub(root, {
        # hubtwist is found on the PATH the spawner gives the job; the wrapper runs it with runpy
        "alice": (WRAPPER, ["hubtwist", *args]),
        "bob": ("", [str(BINARY), *args]),
    })
    hub.start()
    yield hub
    for user in hub.users:  # a server a failed test left running: its job goes too
        hub.api("DELETE", f"/users/{user}/server")
    hub.stop()


@pytest.mark.parametrize("user", ["alice", "bob"], ids=["wrapper", "binary-alone"])
def test_the_server_runs_as_a_slurm_job_and_stops_with_it(slurm, slurm_hub, user):
    hub = slurm_hub
    browser = Browser(hub.public_url)
    started = time.monotonic()
    page = browser.login(user)
    assert page.status_code == 200, (browser.history, page.text[:300], hub.log_tail(),
                                     hub.job_log(user))
    reachable = time.monotonic() - started
    echo = browser.get(f"/user/{user}/echo?x=1").json()
    assert echo["path"] == "/echo?x=1"
    assert json.loads(echo["headers"]["x-hubtwist-user"])["name"] == user

    # The job: in squeue, running on the node, and hubtwist runs in it.
    model = hub.server_model(user)
    job_id = model["state"]["job_id"]
    slurm.seen_jobs.add(job_id)
    [(_, name, state, node)] = queue(job_id)
    assert (name, state, node) == ("spawner-jupyterhub", "RUNNING", "localhost")
    processes = hub.job_processes(user)
    assert processes, hub.job_log(user)
    log = hub.job_log(user)
    if user == "bob":
        assert "listens on port" in log, log  # hubtwist reported the port itself
    print(f"\n{user}: login -> app reachable in {reachable:.1f} s (job {job_id})")

    # Stopping the server cancels the job; nothing of it is left.
    response = hub.api("DELETE", f"/users/{user}/server")
    assert response.status_code in (202, 204), response.text
    wait_until(lambda: hub.server_model(user) is None, 60, "the Hub to stop the server")
    wait_until(lambda: not queue(job_id), 30, f"job {job_id} to leave the queue")
    wait_until(lambda: not hub.job_processes(user), 30,
               f"{user}'s job processes to end (left: {hub.job_processes(user)})")
