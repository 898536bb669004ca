"""
A root hubtwist in a container without --user or --allow-root becomes the notebook user
($NB_UID): the real CLI, as it ships, where that user cannot reach the Python it runs on (a
Python under /root, mode 0700: refused with one sentence, status 2) and where it can (here
through a POSIX ACL: it drops, serves through the token gate, its app runs as that user).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile

import pytest

from tests.helpers import HTTPAPP, alive, descendants, free_port, try_get, wait_for

HUBTWIST = [sys.executable, "-m", "hubtwist"]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="root only (CI runs as root)")


@contextlib.contextmanager
def throwaway_user():
    """A new account whose home (under a fresh world-readable directory) does not exist
    yet: C{(name, uid, gid, home, base)}; removed afterwards."""
    name = f"htr{os.getpid() % 100000}"
    base = tempfile.mkdtemp(prefix="hubtwist-root-", dir="/tmp")
    os.chmod(base, 0o755)
    home = os.path.join(base, "home", name)
    subprocess.run(["useradd", "--no-create-home", "--home-dir", home, "--shell", "/bin/sh",
                    "--user-group", name], check=True, capture_output=True, timeout=30)
    try:
        entry = pwd.getpwnam(name)
        yield name, entry.pw_uid, entry.pw_gid, home, base
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def can_enter(uid: int, gid: int, path: str) -> bool:
    """Whether the user may search C{path} (asked as that user, ACLs included)."""
    probe = shutil.which("test", path="/usr/bin:/bin")
    return subprocess.run([probe, "-x", path], user=uid, group=gid, extra_groups=[],
                          timeout=10).returncode == 0


@contextlib.contextmanager
def acl_entries(name: str, entries):
    """C{setfacl -m u:NAME:PERMS PATH} for each C{(path, perms)}, taken back afterwards
    (the whole ACL removed again where there was none)."""
    if shutil.which("setfacl") is None:
        pytest.skip("setfacl is missing (apt-get install acl; tests/setup installs it)")
    before = {path: os.stat(path).st_mode for path, _ in entries}
    plain = {path for path, _ in entries if not subprocess.run(
        ["getfacl", "--skip-base", "--absolute-names", path], capture_output=True,
        timeout=10).stdout.strip()}
    done = []
    try:
        for path, perms in entries:
            subprocess.run(["setfacl", "-m", f"u:{name}:{perms}", path], check=True,
                           capture_output=True, timeout=10)
            done.append(path)
        yield
    finally:
        for path in done:
            subprocess.run(["setfacl", "-b" if path in plain else "-x",
                            *([] if path in plain else [f"u:{name}"]), path],
                           capture_output=True, timeout=10)
        assert {path: os.stat(path).st_mode for path in done} == \
            {path: before[path] for path in done}


def ancestors(path: str) -> list[str]:
    parts = os.path.normpath(path).split(os.sep)
    return [os.sep.join(parts[:depth]) or os.sep for depth in range(1, len(parts))]


def root_default_env(uid: int, gid: int) -> dict:
    """No --user, no --allow-root: a container (systemd's $container) with docker-stacks'
    NB_UID/NB_GID decides whom hubtwist becomes."""
    env = {key: value for key, value in os.environ.items() if key != "HUBTWIST_ALLOW_ROOT"}
    env.update(container="docker", NB_UID=str(uid), NB_GID=str(gid))
    return env


def status_ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of C{pid}."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


@root_only
def test_a_user_who_cannot_reach_python_is_refused_with_one_sentence():
    interpreter = os.path.abspath(sys.executable)
    with throwaway_user() as (name, uid, gid, home, base), contextlib.ExitStack() as stack:
        if can_enter(uid, gid, interpreter):
            # a Python everyone may use (not under /root): deny the user that one file
            stack.enter_context(acl_entries(name, [(os.path.realpath(interpreter), "---")]))
        port = free_port()
        result = subprocess.run(
            [*HUBTWIST, "--listen", f"tcp:{port}:interface=127.0.0.1", "--", *HTTPAPP,
             "--port", "{port}"], env=root_default_env(uid, gid), cwd=base,
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(
            f"hubtwist: hubtwist would run as {name} (uid {uid}, gid {gid}), but that user "
            "cannot "), result.stderr
        blocked = next(path for path in [*ancestors(interpreter), interpreter]
                       if not can_enter(uid, gid, path))
        assert f" {blocked} (mode " in result.stderr
        for way_out in ("install Python and hubtwist where that user can read them",
                        "single-file hubtwist binary", "--user", "--allow-root"):
            assert way_out in result.stderr
        assert not os.path.exists(home), "refused before anything was changed"


@root_only
def test_a_user_who_can_reach_python_runs_hubtwist_and_its_app(tmp_path):
    import hubtwist
    import twisted

    needed = [sys.executable, os.path.realpath(sys.executable), sysconfig.get_path("stdlib"),
              hubtwist.__file__, twisted.__file__, HTTPAPP[1]]
    with throwaway_user() as (name, uid, gid, home, base), contextlib.ExitStack() as stack:
        # let the user through each directory it cannot enter on the way (/root here),
        # shallowest first (those below may only look closed): search only, as
        # `setfacl -m u:NAME:x /root` would
        on_the_way = sorted({directory for path in needed for directory in ancestors(path)},
                            key=lambda directory: (directory != os.sep, directory.count(os.sep)))
        for directory in on_the_way:
            if not can_enter(uid, gid, directory):
                stack.enter_context(acl_entries(name, [(directory, "x")]))
        # started in a directory the user cannot use: it works in its home instead
        private = os.path.join(base, "private")
        os.mkdir(private, 0o700)
        port, token = free_port(), "test-token-for-the-gate"
        process = subprocess.Popen(
            [*HUBTWIST, "--token", token, "--listen", f"tcp:{port}:interface=127.0.0.1",
             "--autostart", "--", *HTTPAPP, "--port", "{port}"], env=root_default_env(uid, gid),
            cwd=private, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stack.callback(_stop, process)
        answer = wait_for(lambda: process.poll() is not None or try_get(
            f"http://127.0.0.1:{port}/", timeout=5), 60, "hubtwist to listen")
        assert process.poll() is None, process.communicate(timeout=10)[0]
        assert answer[0] in (401, 403), answer  # the token gate
        status, body = _get_with_token(f"http://127.0.0.1:{port}/pid", token)
        assert status == 200, (status, body)
        app_pid = int(body)
        assert status_ids(app_pid) == (uid, gid)
        assert status_ids(process.pid) == (uid, gid)
        assert os.readlink(f"/proc/{app_pid}/cwd") == home
        tree = descendants(process.pid)
        assert all(status_ids(pid) == (uid, gid) for pid in tree if alive(pid))
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert (f"Running as {name} (uid {uid}, gid {gid}) (a container's default user: "
                f"--user or --allow-root to choose otherwise); created {home}; working "
                f"directory {home} (the one it was started in is not accessible to it)"
                in output), output
        # hubtwist's own lines (the test app may log a client that went away)
        assert not any("Traceback" in line for line in output.splitlines()
                       if "[app]" not in line), output
        wait_for(lambda: not any(alive(pid) for pid in tree), 10, "every process gone")


def _get_with_token(url: str, token: str):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _browser_get(url: str):
    """GET like a browser: redirects followed, cookies kept."""
    import http.cookiejar
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=10)


# -- nothing imported after the drop --------------------------------------------------------------

# Runs the real CLI with one addition: after drop_privileges returns, every import reports
# itself on stderr (an audit hook only observes; the import still happens).
OBSERVER = """
import sys

import hubtwist.privileges as privileges

drop = privileges.drop_privileges


def observed(*args, **kwargs):
    dropped = drop(*args, **kwargs)
    sys.addaudithook(lambda event, arguments: event == "import" and sys.stderr.write(
        f"LATE IMPORT {arguments[0]}\\n"))
    return dropped


privileges.drop_privileges = observed
from hubtwist.cli import main

main()
"""


def test_nothing_is_imported_after_the_drop(tmp_path):
    """Serving, the token gate, an app crash and restart, and stopping: all with what was
    imported before root was dropped (after it, Python's files may be out of reach)."""
    observer = tmp_path / "observer.py"
    observer.write_text(OBSERVER)
    port, token = free_port(), "test-token-for-the-gate"
    # --user as oneself: the drop path (root becomes root; others stay who they are)
    process = subprocess.Popen(
        [sys.executable, str(observer), "--user", str(os.geteuid()), "--allow-root", "--token",
         token, "--listen", f"tcp:{port}:interface=127.0.0.1", "--autostart", "--", *HTTPAPP,
         "--port", "{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=tmp_path)
    try:
        wait_for(lambda: process.poll() is not None or try_get(f"http://127.0.0.1:{port}/pid"),
                 60, "hubtwist to listen")
        assert try_get(f"http://127.0.0.1:{port}/pid")[0] in (401, 403)
        first = _get_with_token(f"http://127.0.0.1:{port}/pid", token)
        assert first[0] == 200, first
        assert _browser_get(f"http://127.0.0.1:{port}/?token={token}")[0] == 200  # a cookie
        with contextlib.suppress(OSError, http.client.HTTPException):
            _get_with_token(f"http://127.0.0.1:{port}/die", token)  # dies mid-response
        wait_for(lambda: (lambda answer: answer[0] == 200 and answer[1] != first[1])(
            _get_with_token(f"http://127.0.0.1:{port}/pid", token)), 30, "the app's restart")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        _stop(process)
    assert process.returncode == 0, output
    own = [line for line in output.splitlines() if "[app]" not in line]  # not the app's
    assert any("hubtwist: Running as" in line for line in own), output
    assert not any("Traceback" in line for line in own), output
    assert [line for line in own if line.startswith("LATE IMPORT")] == []
