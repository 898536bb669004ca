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


# -- what the account needs after the drop (a Python under /root, mode 0700) --------------------

def _access_from(denied):
    """access(path, mode) for a fake account: C{denied} maps a path to the modes it lacks."""
    asked = []

    def access(path, mode):
        asked.append((path, mode))
        return not mode & denied.get(path, 0)

    return access, asked


def test_first_blocked_names_the_directory_on_the_way_or_the_path_itself():
    from hubtwist.privileges import Blocked, Need, first_blocked

    python = Need("/root/.pyenv/bin/python3", os.X_OK, "the Python interpreter")
    stdlib = Need("/usr/lib/python3.11", os.R_OK | os.X_OK, "the Python standard library")
    access, asked = _access_from({"/root": os.R_OK | os.X_OK})
    assert first_blocked([stdlib, python], access) == Blocked("/root", os.X_OK, python)
    assert asked[:3] == [("/", os.X_OK), ("/usr", os.X_OK), ("/usr/lib", os.X_OK)]
    access, _ = _access_from({"/usr/lib/python3.11": os.R_OK})
    assert first_blocked([stdlib], access) == Blocked("/usr/lib/python3.11", os.R_OK | os.X_OK,
                                                      stdlib)
    access, _ = _access_from({})
    assert first_blocked([python, stdlib], access) is None


def test_first_blocked_asks_each_question_once():
    from hubtwist.privileges import Need, first_blocked

    access, asked = _access_from({})
    needs = [Need(f"/opt/py/lib/{name}", os.R_OK | os.X_OK, "modules") for name in "abc"]
    assert first_blocked(needs, access) is None
    assert asked.count(("/opt", os.X_OK)) == 1 and len(asked) == len(set(asked)) == 7


def test_the_refusal_is_one_sentence_naming_user_path_and_ways_out(tmp_path):
    from hubtwist.privileges import Blocked, Need, unreachable_sentence

    private = tmp_path / "root"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    python = Need(str(private / "bin" / "python3"), os.X_OK, "the Python interpreter")
    account = Account("jovyan", 1000, 100, "/home/jovyan", (100,))
    sentence = unreachable_sentence(account, Blocked(str(private), os.X_OK, python))
    owner = pwd.getpwuid(os.getuid()).pw_name
    assert sentence.startswith(
        f"hubtwist would run as jovyan (uid 1000, gid 100), but that user cannot enter "
        f"{private} (mode 0700, owner {owner}), on the way to the Python interpreter "
        f"{private}/bin/python3; ")
    for way_out in ("install Python and hubtwist where that user can read them",
                    "single-file hubtwist binary", "--user", "--allow-root without --user"):
        assert way_out in sentence
    assert "\n" not in sentence and "." not in sentence.replace(str(private), "")[:-1]
    unreadable = unreachable_sentence(account, Blocked(python.path, os.X_OK, python))
    assert f"cannot run the Python interpreter {python.path}; " in unreadable  # no stat: no mode


def test_the_frozen_binary_s_refusal_says_where_to_put_it(monkeypatch):
    from hubtwist import privileges
    from hubtwist.privileges import Blocked, Need, unreachable_sentence

    monkeypatch.setattr(privileges, "is_frozen", lambda: True)
    binary = Need("/root/hubtwist", os.R_OK | os.X_OK, "the hubtwist binary")
    sentence = unreachable_sentence(Account("jovyan", 1000, 100, None, (100,)),
                                    Blocked("/root", os.X_OK, binary))
    assert "on the way to the hubtwist binary /root/hubtwist; put the hubtwist binary where " \
           "that user can read it, choose an account" in sentence
    assert "install Python" not in sentence


def test_runtime_needs_the_interpreter_the_stdlib_and_where_modules_came_from(tmp_path,
                                                                              monkeypatch):
    import sys
    import sysconfig
    import types

    from hubtwist.privileges import Need, runtime_needs

    entry = tmp_path / "site"
    (entry / "pkg" / "sub").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [str(entry), *sys.path])
    modules = {
        "pkg.sub.mod": types.SimpleNamespace(__file__=str(entry / "pkg" / "sub" / "mod.py")),
        "zipped": types.SimpleNamespace(__file__=str(tmp_path / "lib.zip" / "zipped.py")),
        "builtin": types.SimpleNamespace(),
        "namespace": types.SimpleNamespace(__file__=None),
    }
    needs = runtime_needs(modules)
    executable = os.path.abspath(sys.executable)
    assert needs[0] == Need(executable, os.X_OK, "the Python interpreter")
    assert Need(os.path.realpath(executable), os.X_OK, "the Python interpreter") in needs
    assert Need(sysconfig.get_path("stdlib"), os.R_OK | os.X_OK,
                "the Python standard library") in needs
    directories = [need.path for need in needs if need.what.startswith("the modules")]
    assert directories == [str(entry), str(entry / "pkg" / "sub")]  # not the zip's "directory"


def test_runtime_needs_of_the_frozen_binary_leave_the_handed_over_bundle_out(monkeypatch):
    import sys

    from hubtwist import privileges
    from hubtwist.privileges import Need, runtime_needs

    monkeypatch.setattr(privileges, "is_frozen", lambda: True)
    monkeypatch.setattr(sys, "executable", "/root/hubtwist", raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", "/tmp/_MEIabc123", raising=False)
    assert runtime_needs({}) == [
        Need("/root/hubtwist", os.R_OK | os.X_OK, "the hubtwist binary"),
        Need("/tmp", os.X_OK, "the directory the binary unpacks into")]
    monkeypatch.setattr(sys, "_MEIPASS", "/opt/hubtwist/_internal")  # one-directory build
    assert runtime_needs({})[1] == Need("/opt/hubtwist/_internal", os.R_OK | os.X_OK,
                                        "the binary's files")


def test_the_check_is_skipped_for_root_and_probes_as_the_account(tmp_path):
    import shutil
    import tempfile

    from hubtwist.privileges import Need, RuntimeUnreachable, check_runtime

    missing = Need("/nonexistent/python", os.X_OK, "the Python interpreter")
    check_runtime(Account("root", 0, 0, "/root", (0,)), [missing])
    if os.geteuid() != 0:
        return  # the probe changes the real ids: root only (CI runs as root)
    base = tempfile.mkdtemp(dir="/tmp")  # tmp_path's parents are closed to other users
    try:
        os.chmod(base, 0o755)
        os.mkdir(os.path.join(base, "private"), 0o700)
        for directory in ("private", "."):
            python = os.path.join(base, directory, "python")
            open(python, "w").close()
            os.chmod(python, 0o755)
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("no user nobody")
        account = Account("nobody", nobody.pw_uid, nobody.pw_gid, None, (nobody.pw_gid,))
        ids = (os.getresuid(), os.getresgid(), os.getgroups())
        hidden = Need(os.path.join(base, "private", "python"), os.X_OK, "the Python interpreter")
        with pytest.raises(RuntimeUnreachable,
                           match=f"cannot enter {base}/private \\(mode 0700, owner root\\), on"):
            check_runtime(account, [hidden])
        assert (os.getresuid(), os.getresgid(), os.getgroups()) == ids  # all given back
        # reachable, and a path that does not exist is not the account's problem
        check_runtime(account, [Need(os.path.join(base, "python"), os.X_OK, "python"), missing])
        assert (os.getresuid(), os.getresgid(), os.getgroups()) == ids
    finally:
        shutil.rmtree(base)
