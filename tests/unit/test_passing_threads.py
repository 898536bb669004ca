"""
The name lookups' threads (hubtwist.proxy.twisted_private._PassingThreads): every call is
answered, at most C{most} run at once, the threads end when nothing waits, and a thread
that cannot be started fails its call instead of leaving it unanswered. Plain threads and
events, no reactor; every wait is bounded.
"""

from __future__ import annotations

import threading
import time

from hubtwist.proxy import twisted_private
from hubtwist.proxy.twisted_private import _PassingThreads


def test_every_call_is_answered_with_at_most_most_at_once_and_the_threads_end():
    pool = _PassingThreads(most=2)
    release = threading.Event()
    lock = threading.Lock()
    running = [0]
    most_seen = [0]
    answers: list = []
    done = threading.Event()

    def lookup(number: int) -> int:
        with lock:
            running[0] += 1
            most_seen[0] = max(most_seen[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        if number == 3:
            raise OSError("no such host")
        return number * 10

    def answered(ok: bool, result) -> None:
        answers.append((ok, result if ok else result.value.args[0]))
        if len(answers) == 6:
            done.set()

    before = threading.active_count()
    for number in range(6):
        pool.callInThreadWithCallback(answered, lookup, number)
    deadline = time.monotonic() + 10
    while running[0] < 2 and time.monotonic() < deadline:  # both slots taken
        time.sleep(0.01)
    assert running[0] == 2
    assert threading.active_count() - before == 2  # the other four wait, no thread each
    release.set()
    assert done.wait(10)
    assert sorted(answer for answer in answers if answer[0]) == [
        (True, 0), (True, 10), (True, 20), (True, 40), (True, 50)]
    assert (False, "no such host") in answers
    assert most_seen[0] == 2
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() == before  # nothing idles afterwards


def test_a_thread_that_cannot_start_fails_its_call(monkeypatch):
    class NoThreads:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(twisted_private.threading, "Thread", NoThreads)
    pool = _PassingThreads(most=2)
    answers = []
    pool.callInThreadWithCallback(lambda ok, result: answers.append((ok, result)),
                                  lambda: "never")
    assert len(answers) == 1 and answers[0][0] is False
    assert answers[0][1].check(RuntimeError)
    assert pool._running == 0  # the slot is free again
