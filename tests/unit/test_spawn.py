"""Spawning rules: who may run apps as whom, the app's environment, Twisted hooks."""

import os

import pytest
from twisted.internet import process

from hubtwist.supervise import spawn


def test_only_root_may_switch_users(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    with pytest.raises(PermissionError, match="only root can start processes as another user"):
        spawn.check_user_allowed("root")


def test_running_as_oneself_needs_no_switch(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert spawn.check_user_allowed("0").uid == 0
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    assert spawn.check_user_allowed("nobody") is None


def test_unknown_users_are_named():
    with pytest.raises(KeyError, match="there is no user 'no-such-user-xyz'"):
        spawn.check_user_allowed("no-such-user-xyz")


def test_environment_restores_the_frozen_library_path_and_sets_the_account():
    run_as = spawn.RunAs("alice", 1000, 100, "/home/alice", "/bin/bash")
    env = spawn.app_environment(
        {"PATH": "/bin", "LD_LIBRARY_PATH": "/tmp/_MEI123", "LD_LIBRARY_PATH_ORIG": "/opt/lib",
         "HOME": "/root"},
        {"APP": "1"}, run_as, frozen=True)
    assert env == {"PATH": "/bin", "LD_LIBRARY_PATH": "/opt/lib", "HOME": "/home/alice",
                   "USER": "alice", "LOGNAME": "alice", "SHELL": "/bin/bash", "APP": "1"}
    env = spawn.app_environment({"LD_LIBRARY_PATH": "/tmp/_MEI123"}, {}, None, frozen=True)
    assert "LD_LIBRARY_PATH" not in env
    bundle = {"_PYI_APPLICATION_HOME_DIR": "/tmp/_MEI123", "_PYI_PARENT_PROCESS_LEVEL": "1",
              "PYINSTALLER_RESET_ENVIRONMENT": "1", "PATH": "/bin"}
    assert spawn.app_environment(bundle, {}, None, frozen=True) == {
        "PYINSTALLER_RESET_ENVIRONMENT": "1", "PATH": "/bin"}
    assert spawn.app_environment({"LD_LIBRARY_PATH": "/x"}, {}, None, frozen=False) == {"LD_LIBRARY_PATH": "/x"}


def test_the_apps_do_not_get_hubtwists_tokens():
    inherited = {"PATH": "/bin", "HUBTWIST_TOKEN": "t", "JUPYTERHUB_API_TOKEN": "h",
                 "JPY_API_TOKEN": "h", "JUPYTERHUB_API_URL": "http://hub/hub/api"}
    assert spawn.app_environment(inherited, {}, None, frozen=False) == {
        "PATH": "/bin", "JUPYTERHUB_API_URL": "http://hub/hub/api"}
    # pass_hub_token: the Hub's token (an app that calls the Hub API), never hubtwist's own.
    assert spawn.app_environment(inherited, {}, None, frozen=False, pass_hub_token=True) == {
        "PATH": "/bin", "JUPYTERHUB_API_TOKEN": "h", "JPY_API_TOKEN": "h",
        "JUPYTERHUB_API_URL": "http://hub/hub/api"}
    # The server's own `environment` is what the configuration asks for: it wins.
    assert spawn.app_environment(inherited, {"HUBTWIST_TOKEN": "app"}, None,
                                 frozen=False)["HUBTWIST_TOKEN"] == "app"


def test_find_executable(tmp_path):
    assert spawn.find_executable("sh", {"PATH": "/bin:/usr/bin"}, None)
    assert spawn.find_executable("no-such-program-xyz", {"PATH": "/bin"}, None) is None
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    assert spawn.find_executable("./run.sh", {}, str(tmp_path)) is None
    script.chmod(0o755)
    assert os.path.samefile(spawn.find_executable("./run.sh", {}, str(tmp_path)), script)


def test_twisted_process_hooks_we_override_still_exist():
    """SessionLeaderProcess overrides private hooks of twisted.internet.process.Process."""
    for name in ("_trySpawnInsteadOfFork", "_execChild", "_fork"):
        assert hasattr(process.Process, name), (
            f"Twisted's Process.{name} is gone: hubtwist/supervise/spawn.py must be adapted "
            "to the installed Twisted")
