"""--user NAME|UID[:GID]: resolving the account (the drop itself: tests/binary, as root)."""

import os
import pwd

import pytest

from hubtwist.privileges import Account, drop_privileges, prepare_home, resolve_account


def test_names_and_numbers_resolve_to_the_same_account():
    root = pwd.getpwuid(0)
    by_name = resolve_account(root.pw_name)
    assert by_name == resolve_account("0")
    assert (by_name.uid, by_name.gid, by_name.home) == (0, root.pw_gid, root.pw_dir)
    assert by_name.groups[0] == root.pw_gid


def test_an_explicit_group_by_number_or_name():
    assert resolve_account("0:100").gid == 100
    assert resolve_account("0:root").gid == 0
    with pytest.raises(KeyError, match="no group 'no-such-group-xyz'"):
        resolve_account("0:no-such-group-xyz")


def test_a_uid_without_a_passwd_entry_is_allowed_a_name_is_not():
    assert resolve_account("54321:100") == Account("54321", 54321, 100, None, (100,))
    assert resolve_account("54321").gid == 54321
    with pytest.raises(KeyError, match="no user 'no-such-user-xyz'"):
        resolve_account("no-such-user-xyz")


def test_prepare_home_creates_only_a_missing_directory(tmp_path):
    home = tmp_path / "homes" / "ann"
    account = Account("ann", os.getuid(), os.getgid(), str(home), (os.getgid(),))
    assert prepare_home(account) is True
    assert home.is_dir() and home.stat().st_mode & 0o777 == 0o750
    assert prepare_home(account) is False


def test_becoming_oneself_is_nothing_and_another_user_needs_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    assert drop_privileges("4242")[0].uid == 4242
    with pytest.raises(PermissionError, match="only root"):
        drop_privileges("4243")


# -- root in containers, and apps as root ------------------------------------------------------

def test_container_detection_reads_markers_and_variables():
    from hubtwist.privileges import in_container

    nothing = lambda path: False  # noqa: E731
    assert not in_container({}, nothing)
    assert in_container({"container": "podman"}, nothing)
    assert in_container({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, nothing)
    assert in_container({}, lambda path: path == "/.dockerenv")
    assert in_container({}, lambda path: path == "/run/.containerenv")


def test_container_default_user_prefers_nb_uid_then_uid_1000():
    from hubtwist.privileges import container_default_user

    has_1000 = lambda uid: uid == 1000  # noqa: E731
    assert container_default_user({"NB_UID": "1234", "NB_GID": "555"}, has_1000) == "1234:555"
    assert container_default_user({"NB_UID": "1234"}, has_1000) == "1234"
    assert container_default_user({}, has_1000) == "1000:100"
    assert container_default_user({"NB_UID": "0"}, has_1000) == "1000:100"  # never root
    assert container_default_user({"NB_UID": "jovyan"}, lambda uid: False) is None
    assert container_default_user({}, lambda uid: False) is None


def test_servers_running_as_root_are_those_without_another_user():
    from hubtwist.config.loader import load_dict
    from hubtwist.privileges import servers_running_as_root

    config = load_dict({"servers": {
        "plain": {"command": ["app"]},
        "as_root": {"command": ["app"], "user": "root"},
        "as_uid0": {"command": ["app"], "user": "0"},
        "as_other": {"command": ["app"], "user": pwd.getpwall()[-1].pw_name},
        "external": {"port": 8000},
    }}, "test")
    other = pwd.getpwall()[-1]
    expected = ["plain", "as_root", "as_uid0"] + (["as_other"] if other.pw_uid == 0 else [])
    assert sorted(servers_running_as_root(config, 0)) == sorted(expected)
    assert servers_running_as_root(config, 1000) == []


def test_prepare_workspaces_creates_missing_directories_under_the_home_only(tmp_path):
    from hubtwist.privileges import prepare_workspaces

    home = tmp_path / "home"
    home.mkdir()
    account = Account("ann", os.getuid(), os.getgid(), str(home), (os.getgid(),))
    outside = tmp_path / "elsewhere" / "work"
    created = prepare_workspaces(account, [str(home / "a" / "b"), str(outside), str(home)])
    assert created == [str(home / "a"), str(home / "a" / "b")]
    assert (home / "a" / "b").is_dir() and not outside.exists()
    assert (home / "a").stat().st_mode & 0o777 == 0o750
    assert prepare_workspaces(account, [str(home / "a" / "b")]) == []
    assert prepare_workspaces(Account("x", 1, 1, None, (1,)), [str(home / "c")]) == []


def _args(*argv):
    from hubtwist.cli import _parser

    return _parser().parse_args(list(argv))


def test_choose_user_takes_the_container_default_only_for_a_root_without_allow_root():
    from hubtwist.cli import choose_user

    container = lambda environ: True  # noqa: E731
    bare_host = lambda environ: False  # noqa: E731
    nb = {"NB_UID": "1234", "NB_GID": "100"}
    assert choose_user(_args(), nb, 0, container) == "1234:100"
    assert choose_user(_args("--user", "bob"), nb, 0, container) == "bob"
    assert choose_user(_args("--allow-root"), nb, 0, container) is None
    assert choose_user(_args(), {**nb, "HUBTWIST_ALLOW_ROOT": "1"}, 0, container) is None
    assert choose_user(_args(), nb, 0, bare_host) is None
    assert choose_user(_args(), nb, 1000, container) is None


def test_root_apps_are_refused_with_a_sentence_unless_allowed():
    from hubtwist.cli import refuse_root_apps
    from hubtwist.config.loader import load_dict

    config = load_dict({"servers": {"lab": {"command": ["lab"]}}}, "test")
    refusal = refuse_root_apps(_args(), config, {}, 0)
    assert refusal is not None
    assert "'lab' would run as root" in refusal and "--allow-root" in refusal
    assert "servers.lab.user" in refusal and "--user NAME" in refusal
    assert refuse_root_apps(_args("--allow-root"), config, {}, 0) is None
    assert refuse_root_apps(_args(), config, {"HUBTWIST_ALLOW_ROOT": "true"}, 0) is None
    assert refuse_root_apps(_args(), config, {}, 1000) is None
