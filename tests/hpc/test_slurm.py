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
DEAD_JOB_TIMEOUT = 20  # dave's start_timeout: batchspawner waits for the port that long


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
        # a job that dies at once (hubtwist refuses its configuration)
        "dave": ("", [str(BINARY), "--allow-root", "--config", str(root / "missing.toml")],
                 {"start_timeout": DEAD_JOB_TIMEOUT}),
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


def test_a_job_that_dies_at_once_fails_the_spawn_and_its_log_says_why(slurm, slurm_hub):
    # The trap: batchspawner only asks squeue before the job runs; once it ran, it waits for
    # the port until start_timeout, whatever became of the job. The job's log has the reason.
    hub = slurm_hub
    hub.api("POST", "/users/dave")  # the Hub knows her (201, or 409 once she exists)
    started = time.monotonic()
    response = hub.api("POST", "/users/dave/server")
    assert response.status_code in (201, 202), response.text
    wait_until(lambda: hub.server_model("dave") is None, DEAD_JOB_TIMEOUT + 40,
               "the Hub to give up on dave's server")
    failed_after = time.monotonic() - started
    wait_until(lambda: "hubtwist:" in hub.job_log("dave"), 10, "the job's log")
    log = hub.job_log("dave")
    assert "missing.toml" in log and "Traceback" not in log, log
    assert not hub.job_processes("dave")
    print(f"\ndave: the spawn of a job that died at once failed after {failed_after:.1f} s")
