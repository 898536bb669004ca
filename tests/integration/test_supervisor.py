"""The supervisor against real child processes (tests/apps/httpapp.py), on loopback."""

from __future__ import annotations

import os
import signal
import stat

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import gatherResults

from hubtwist.config import ServerConfig
from hubtwist.supervise import ServerUnavailable, State, Supervisor, shared_guardian
from hubtwist.supervise.readiness import probe_once
from tests.helpers import HTTPAPP, alive, poll, reactor, sleep, within


@pytest.fixture
def make_supervisor():
    made = []

    def make(*app_args, name="app", uniform=lambda a, b: 1.0, **options):
        command = options.pop("command", (*HTTPAPP, "--port", "{port}", *app_args))
        config = ServerConfig(command=tuple(command), **options)
        supervisor = Supervisor(name, config, reactor=reactor(), guardian=shared_guardian(reactor()),
                                uniform=uniform)
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:
        pytest_twisted.blockon(supervisor.stop().addTimeout(30, reactor()))


def notes(supervisor, starting: str) -> list:
    return [line for line in supervisor.logs if line.stream == "hubtwist" and line.text.startswith(starting)]


@pytest_twisted.ensureDeferred
async def test_lazy_start_ready_and_stop(make_supervisor):
    supervisor = make_supervisor()
    assert supervisor.state is State.STOPPED and supervisor.pid is None
    address = await within(supervisor.ensure_running(), 30)
    assert supervisor.state is State.RUNNING
    pid = supervisor.pid
    response = await treq.get(f"http://{address.describe()}/pid")
    assert int(await response.text()) == pid
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.getpgid(pid) == pid, "the app leads its own process group"
    await within(supervisor.stop(), 30)
    assert supervisor.state is State.STOPPED
    assert not alive(pid)
    # stop() fires only after the app's exit was seen (not merely after it became a zombie).
    assert notes(supervisor, "killed by signal SIGTERM (stopped)")


@pytest_twisted.ensureDeferred
async def test_concurrent_callers_share_one_start(make_supervisor):
    supervisor = make_supervisor("--startup-delay", "0.3")
    addresses = await within(gatherResults([supervisor.ensure_running() for _ in range(50)]), 30)
    assert len(set(addresses)) == 1
    assert len(notes(supervisor, "started pid")) == 1


@pytest_twisted.ensureDeferred
async def test_output_lines_are_logged_with_their_stream(make_supervisor):
    supervisor = make_supervisor("--print", "hello there")
    await within(supervisor.ensure_running(), 30)
    lines = await poll(lambda: {(l.stream, l.text) for l in supervisor.logs} >= {
        ("stdout", "hello there"), ("stderr", "hello there")}, 5, message="output lines")
    assert lines


@pytest_twisted.ensureDeferred
async def test_templates_fill_command_and_environment(make_supervisor):
    supervisor = make_supervisor(
        command=("sh", "-c", 'echo "env port=$APP_PORT base=$APP_BASE"; exec "$0" "$@"',
                 *HTTPAPP, "--port", "{port}"),
        environment={"APP_PORT": "{port}", "APP_BASE": "{base_url}"})
    address = await within(supervisor.ensure_running(), 30)
    await poll(lambda: any(l.text == f"env port={address.port} base=/" for l in supervisor.logs), 5,
               message="the templated environment in the app's output")


@pytest_twisted.ensureDeferred
async def test_crash_is_restarted_with_growing_delay(make_supervisor):
    supervisor = make_supervisor("--exit-after", "0.2", backoff_initial=0.2, start_retries=10,
                                 min_uptime=30)
    await within(supervisor.ensure_running(), 30)
    await poll(lambda: len(notes(supervisor, "started pid")) >= 4, 30, message="three restarts")
    lines = [l for l in supervisor.logs if l.stream == "hubtwist"]
    gaps = []
    for index, line in enumerate(lines):
        if line.text.startswith("exited with status 1"):
            following = next(l for l in lines[index:] if l.text.startswith("started pid"))
            gaps.append(following.time - line.time)
    assert len(gaps) >= 3
    assert 0.15 < gaps[0] < gaps[1] < gaps[2], gaps
    assert gaps[1] == pytest.approx(2 * gaps[0], rel=0.5)
    assert supervisor.restarts >= 3


@pytest_twisted.ensureDeferred
async def test_crash_loop_goes_fatal_then_may_be_retried_after_the_window(make_supervisor):
    supervisor = make_supervisor("--exit-code", "1", backoff_initial=0.05, backoff_max=0.6,
                                 start_retries=3)
    with pytest.raises(ServerUnavailable) as caught:
        await within(supervisor.ensure_running(), 30)
    assert supervisor.state is State.FATAL
    assert caught.value.retry_after == pytest.approx(0.6)
    assert any("exited with status 1" in line.text for line in caught.value.logs)
    spawned = len(notes(supervisor, "started pid"))
    assert spawned == 3
    # FATAL means no more spawns, and an immediate request is refused with a retry time.
    with pytest.raises(ServerUnavailable, match="may be tried again"):
        await supervisor.ensure_running()
    await sleep(0.3)
    assert len(notes(supervisor, "started pid")) == spawned
    await sleep(0.4)
    with pytest.raises(ServerUnavailable):
        await within(supervisor.ensure_running(), 30)
    assert len(notes(supervisor, "started pid")) == 2 * spawned


@pytest_twisted.ensureDeferred
async def test_stop_kills_the_whole_process_group(make_supervisor, tmp_path):
    grandchild_file = tmp_path / "grandchild.pid"
    supervisor = make_supervisor("--grandchild", str(grandchild_file))
    await within(supervisor.ensure_running(), 30)
    app, grandchild = supervisor.pid, int(grandchild_file.read_text())
    assert alive(grandchild) and os.getpgid(grandchild) == app
    await within(supervisor.stop(), 30)
    assert not alive(app) and not alive(grandchild)


@pytest_twisted.ensureDeferred
async def test_grandchildren_die_when_the_app_exits(make_supervisor, tmp_path):
    grandchild_file = tmp_path / "grandchild.pid"
    supervisor = make_supervisor("--grandchild", str(grandchild_file), "--exit-after", "0.5",
                                 restart="never")
    await within(supervisor.ensure_running(), 30)
    grandchild = int(grandchild_file.read_text())
    await poll(lambda: supervisor.state is State.EXITED, 10, message="the app to exit")
    await poll(lambda: not alive(grandchild), 10, message="the grandchild to be killed")


@pytest_twisted.ensureDeferred
async def test_sigterm_is_escalated_to_sigkill(make_supervisor):
    supervisor = make_supervisor("--ignore-term", stop_timeout=0.5)
    await within(supervisor.ensure_running(), 30)
    pid = supervisor.pid
    started = reactor().seconds()
    await within(supervisor.stop(), 10)
    assert not alive(pid)
    assert 0.4 < reactor().seconds() - started < 5
    assert notes(supervisor, "still running 0.5 s after SIGTERM; sending SIGKILL")


@pytest_twisted.ensureDeferred
async def test_stop_signal_is_configurable(make_supervisor):
    supervisor = make_supervisor("--ignore-term", stop_signal="INT", stop_timeout=20)
    await within(supervisor.ensure_running(), 30)
    await within(supervisor.stop(), 30)
    # SIGTERM is ignored, so only SIGINT can have ended it before the SIGKILL escalation.
    assert not notes(supervisor, "still running")
    assert notes(supervisor, "killed by signal SIGINT") or notes(supervisor, "exited with status")


@pytest_twisted.ensureDeferred
async def test_unix_socket_in_a_private_directory(make_supervisor):
    supervisor = make_supervisor(command=(*HTTPAPP, "--unix-socket", "{unix_socket}"), unix_socket=True)
    address = await within(supervisor.ensure_running(), 30)
    assert address.kind == "unix"
    directory = os.path.dirname(address.path)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert await probe_once(reactor(), address, "/", 5)


@pytest_twisted.ensureDeferred
async def test_stop_removes_the_private_socket_directory(make_supervisor):
    supervisor = make_supervisor(command=(*HTTPAPP, "--unix-socket", "{unix_socket}"), unix_socket=True)
    first = await within(supervisor.ensure_running(), 30)
    assert stat.S_ISSOCK(os.stat(first.path).st_mode)
    await within(supervisor.stop(), 30)
    assert not os.path.exists(os.path.dirname(first.path)), "the socket directory stays in /tmp"
    # a later start gets a new private directory, and a stop removes that one too
    second = await within(supervisor.ensure_running(), 30)
    assert await probe_once(reactor(), second, "/", 5)
    await within(supervisor.stop(), 30)
    assert not os.path.exists(os.path.dirname(second.path))


@pytest_twisted.ensureDeferred
async def test_a_restart_binds_the_socket_again_in_the_same_directory(make_supervisor):
    supervisor = make_supervisor(command=(*HTTPAPP, "--unix-socket", "{unix_socket}"),
                                 unix_socket=True, backoff_initial=0.05)
    address = await within(supervisor.ensure_running(), 30)
    old_pid = supervisor.pid
    os.kill(old_pid, signal.SIGKILL)  # the dead app's socket file stays behind
    await poll(lambda: supervisor.state is State.RUNNING and supervisor.pid not in (None, old_pid),
               30, message="the restarted app")
    # the stale socket was removed before the new app bound the same path (else: EADDRINUSE)
    assert supervisor.address == address
    assert await probe_once(reactor(), address, "/", 5)
    assert os.listdir(os.path.dirname(address.path)) == ["app.sock"]
    await within(supervisor.stop(), 30)
    assert not os.path.exists(os.path.dirname(address.path))


@pytest_twisted.ensureDeferred
async def test_a_configured_socket_path_is_removed_on_stop_but_never_a_file(make_supervisor, tmp_path):
    path = tmp_path / "app.sock"
    supervisor = make_supervisor(command=(*HTTPAPP, "--unix-socket", "{unix_socket}"),
                                 unix_socket=str(path), start_retries=1)
    await within(supervisor.ensure_running(), 30)
    await within(supervisor.stop(), 30)
    assert not path.exists()
    path.write_text("precious")  # a typo in unix_socket must not delete a file
    with pytest.raises(ServerUnavailable) as caught:
        await within(supervisor.ensure_running(), 30)
    assert any("exists and is not a unix socket" in line.text for line in caught.value.logs)
    await within(supervisor.stop(), 30)
    assert path.read_text() == "precious"


@pytest_twisted.ensureDeferred
async def test_readiness_timeout_fails_the_start(make_supervisor):
    supervisor = make_supervisor("--startup-delay", "30", timeout=0.5, start_retries=1, stop_timeout=1)
    with pytest.raises(ServerUnavailable, match="failed 1 times in a row"):
        await within(supervisor.ensure_running(), 30)
    assert supervisor.state is State.FATAL
    assert notes(supervisor, "not ready: no answer at 127.0.0.1:")


@pytest_twisted.ensureDeferred
async def test_a_missing_command_is_reported_clearly(make_supervisor):
    supervisor = make_supervisor(command=("no-such-program-hubtwist", "{port}"), start_retries=1)
    with pytest.raises(ServerUnavailable) as caught:
        await within(supervisor.ensure_running(), 10)
    assert any("the command 'no-such-program-hubtwist' was not found" in line.text
               for line in caught.value.logs)


@pytest_twisted.ensureDeferred
async def test_clean_exit_is_not_restarted_on_failure_but_a_later_request_starts_it(make_supervisor):
    # It exits 1.5 s after it starts: after its readiness check even on a loaded machine (an
    # exit before ready is a failure, restarted), before min_uptime (not a failure: status 0).
    supervisor = make_supervisor("--exit-after", "1.5", "--exit-status", "0", restart="on-failure")
    await within(supervisor.ensure_running(), 30)
    await poll(lambda: supervisor.state is State.EXITED, 10, message="EXITED")
    await sleep(0.3)
    assert len(notes(supervisor, "started pid")) == 1
    assert notes(supervisor, "exited with status 0")
    await within(supervisor.ensure_running(), 30)
    assert len(notes(supervisor, "started pid")) == 2


@pytest_twisted.ensureDeferred
async def test_restart_always_restarts_a_clean_exit(make_supervisor):
    supervisor = make_supervisor("--exit-after", "0.3", "--exit-status", "0", restart="always",
                                 backoff_initial=0.05)
    await within(supervisor.ensure_running(), 30)
    await poll(lambda: len(notes(supervisor, "started pid")) >= 2, 10, message="a restart")


@pytest_twisted.ensureDeferred
async def test_exiting_before_ready_counts_as_a_failure_even_with_status_0(make_supervisor):
    supervisor = make_supervisor(command=("sh", "-c", "exit 0"), start_retries=2,
                                 backoff_initial=0.05)
    with pytest.raises(ServerUnavailable, match="failed 2 times in a row"):
        await within(supervisor.ensure_running(), 10)


@pytest_twisted.ensureDeferred
async def test_restart_never_leaves_it_exited_until_the_next_request(make_supervisor):
    supervisor = make_supervisor("--exit-after", "0.3", restart="never")
    await within(supervisor.ensure_running(), 30)
    await poll(lambda: supervisor.state is State.EXITED, 10, message="EXITED")
    await sleep(0.3)
    assert len(notes(supervisor, "started pid")) == 1
    await within(supervisor.ensure_running(), 30)
    assert supervisor.state is State.RUNNING
    assert len(notes(supervisor, "started pid")) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root; CI runs as root")
@pytest_twisted.ensureDeferred
async def test_runs_the_app_as_another_user_when_root(make_supervisor):
    supervisor = make_supervisor(
        command=("sh", "-c", 'echo "home=$HOME user=$USER"; exec sleep 300'), user="nobody",
        timeout=5, start_retries=1)
    supervisor.ensure_running().addErrback(lambda _: None)
    await poll(lambda: any(l.text.startswith("home=") for l in supervisor.logs), 10, message="env")
    with open(f"/proc/{supervisor.pid}/status") as status:
        uid_line = next(line for line in status if line.startswith("Uid:"))
    import pwd

    assert int(uid_line.split()[1]) == pwd.getpwnam("nobody").pw_uid
    line = next(l.text for l in supervisor.logs if l.text.startswith("home="))
    assert line == f"home={pwd.getpwnam('nobody').pw_dir} user=nobody"
