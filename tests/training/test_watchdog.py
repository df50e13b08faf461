"""The process group's timeout (train.collective_timeout_minutes) and the main process's
watchdog line, without processes (tests/training/test_processes.py runs them for real)."""

from __future__ import annotations

import re
import time
from datetime import timedelta

from glidectl.training.processes import collective_timeout, timeout_handlers
from glidectl.training.watchdog import Watchdog


def test_the_timeout_is_the_configs_or_the_backends_own():
    assert collective_timeout(2.5, "gloo") == timedelta(seconds=150)
    assert collective_timeout(0, "gloo") == timedelta(minutes=30)
    assert collective_timeout(0, "nccl") == timedelta(minutes=10)
    assert timeout_handlers(0) == []


def test_ten_minutes_reach_the_process_group():
    """accelerate passes on only what differs from its own default (10 min, NCCL's): a
    10-minute timeout on gloo stayed gloo's 30 minutes (measured with torchrun)."""
    for minutes in (0.5, 10, 45):
        (handler,) = timeout_handlers(minutes)
        given = handler.to_kwargs()["timeout"]
        assert abs(given - timedelta(minutes=minutes)) < timedelta(milliseconds=1)


def _watched(watchdog: Watchdog, seconds: float) -> list[str]:
    said: list[str] = []
    with watchdog.watching(said.append):
        time.sleep(seconds)
    return said


def test_a_step_that_lasts_is_said_once_with_the_timeout_and_its_key():
    watchdog = Watchdog(timedelta(seconds=1.2))  # says at 0.6 s
    watchdog.step(7)
    said = _watched(watchdog, 1.6)
    assert len(said) == 1, said
    assert re.match(r"Still at step 7 after [\d.]+ s: another process of this run may be stuck",
                    said[0]), said
    assert said[0].endswith("the run stops when it has not answered for 1.2 s "
                            "(train.collective_timeout_minutes)."), said


def test_the_main_processs_own_work_is_not_said_and_a_wait_after_it_is():
    watchdog = Watchdog(timedelta(seconds=1.2))
    watchdog.step(3)
    watchdog.busy("step 3's preview")
    assert _watched(watchdog, 1.2) == []
    with watchdog.waiting("step 3's preview"):
        said = _watched(watchdog, 1.2)
    assert len(said) == 1 and said[0].startswith(
        "Still waiting for the other processes after step 3's preview after "), said
    said = _watched(watchdog, 1.2)  # back at the step, its time counted afresh
    assert len(said) == 1 and said[0].startswith("Still at step 3 after "), said


def test_steps_far_slower_than_a_minute_raise_the_bar():
    """A step is said once it lasts over three times the longest so far (the first left
    out), so a slow model is not said to be stuck at every step."""
    watchdog = Watchdog(timedelta(seconds=1.2))
    for step, seconds in enumerate((0.5, 0.4, 0.0), start=1):
        watchdog.step(step)
        time.sleep(seconds)
    assert 0.4 <= watchdog.longest < 0.6  # the first step's 0.5 s left out
    assert _watched(watchdog, 0.9) == []  # 0.9 s: over 0.6 s, under 3 x 0.4 s
