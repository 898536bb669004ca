"""
A Hub-mode hubtwist, as a real process, stays single-threaded after talking to the Hub by
host name: a name lookup runs in a thread that ends with it (an idle thread left in the
reactor's pool made all of hubtwist's Python about 10 % slower: see
hubtwist.proxy.twisted_private.resolve_names_in_passing_threads).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest_twisted

from tests.helpers import HTTPAPP, accepts, free_port, in_thread, poll
from tests.integration.test_hub_cli import _status
from tests.integration.test_hub_gate import fake_hub, hub_env  # noqa: F401 (fixture)


@pytest_twisted.ensureDeferred
async def test_talking_to_the_hub_by_host_name_leaves_one_thread(fake_hub):
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("JUPYTERHUB_", "HUBTWIST_")) or key == "HUBTWIST_ALLOW_ROOT"}
    # "localhost": the Hub client must look the name up (127.0.0.1 would need no lookup)
    hub = hub_env(fake_hub)
    hub = {key: value.replace("127.0.0.1", "localhost") for key, value in hub.items()}
    process = subprocess.Popen(
        [sys.executable, "-m", "hubtwist", "--listen", f"tcp:{port}:interface=127.0.0.1",
         "--", *HTTPAPP, "--port", "{port}"],
        env={**env, **hub}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/user/alice/echo"
        token = {"Authorization": "token alice-token"}
        # the version at start-up, then alice's token: two calls to the Hub by name (the
        # fake Hub answers from this reactor: the client runs in a thread)
        await poll(lambda: process.poll() is not None or accepts(port), 60,
                   message="hubtwist listening")
        assert process.poll() is None
        assert await in_thread(_status, url, token) == 200
        assert "/hub/api/user" in fake_hub.calls and "/hub/api/" in fake_hub.calls
        # the lookups' threads have ended: only the main thread is left
        await poll(lambda: len(os.listdir(f"/proc/{process.pid}/task")) == 1, 10,
                   message="hubtwist back to one thread")
        assert await in_thread(_status, url, token) == 200
    finally:
        process.send_signal(signal.SIGTERM)
        stderr = (await in_thread(process.communicate, timeout=30))[1]
    assert "Traceback" not in stderr
