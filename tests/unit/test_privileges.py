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
