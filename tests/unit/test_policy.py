"""Restart policy arithmetic."""

from hubtwist.supervise import policy


def fixed(low, high):
    return 1.0  # no jitter


def test_delay_doubles_and_is_capped():
    delays = [policy.restart_delay(n, 0.5, 4.0, fixed) for n in range(1, 7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_stays_within_twenty_percent_and_below_the_cap():
    assert policy.restart_delay(2, 1.0, 30, lambda a, b: a) == 1.6
    assert policy.restart_delay(2, 1.0, 30, lambda a, b: b) == 2.4
    assert policy.restart_delay(10, 1.0, 30, lambda a, b: b) == 30


def test_what_counts_as_failure():
    assert not policy.is_failure(0, None)
    assert policy.is_failure(1, None)
    assert policy.is_failure(None, 9)


def test_restart_modes():
    assert policy.should_restart("always", False)
    assert policy.should_restart("on-failure", True)
    assert not policy.should_restart("on-failure", False)
    assert not policy.should_restart("never", True)


def test_fatal_and_healthy_runs():
    assert not policy.is_fatal(4, 5) and policy.is_fatal(5, 5)
    assert policy.run_was_healthy(10.0, 10.0) and not policy.run_was_healthy(9.9, 10.0)
