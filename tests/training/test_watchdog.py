"""The process group's timeout (train.collective_timeout_minutes), the heartbeats and the
watchdog's lines, without processes (tests/training/test_processes.py runs them for real)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from datetime import timedelta
from types import SimpleNamespace

import pytest

from glidectl.atomic import host_name
from glidectl.errors import GlidectlError
from glidectl.training import processes
from glidectl.training.heartbeats import Beat, Heartbeats, beat_path, read_beat
from glidectl.training.processes import Processes, collective_timeout, timeout_handlers
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


def _beat(folder, rank: int, doing: str, step: int | None, since_s: float, age_s: float,
          pid: int = 4242) -> None:
    """Process ``rank``'s heartbeat as it writes it: ``doing`` for ``since_s`` seconds,
    written ``age_s`` seconds ago."""
    now = time.time()
    beat = Beat(rank, "node-b", pid, doing, step, now - since_s, now - age_s)
    beat_path(folder, rank).write_text(json.dumps(asdict(beat)), encoding="utf-8")


def _beating(folder, rank: int = 0, world: int = 2, **kw) -> Watchdog:
    watchdog = Watchdog(timedelta(seconds=0.6), rank=rank, world=world, **kw)  # says at 0.3 s
    watchdog.beats = Heartbeats(folder, rank)
    return watchdog


def test_a_heartbeat_is_read_as_written_and_never_from_a_missing_or_broken_file(tmp_path):
    beats = Heartbeats(tmp_path, 3)
    beats.write("at step 5", 5, time.monotonic() - 2)
    beat = read_beat(tmp_path, 3)
    assert (beat.rank, beat.host, beat.pid, beat.doing, beat.step) == (
        3, host_name(), os.getpid(), "at step 5", 5)
    assert abs(time.time() - beat.at) < 1 and abs(beat.at - beat.since - 2) < 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["3.json"]  # no temp file left
    assert read_beat(tmp_path, 4) is None
    beat_path(tmp_path, 4).write_text('{"rank": 4, "host": "x"', encoding="utf-8")
    assert read_beat(tmp_path, 4) is None
    beats.remove()
    assert read_beat(tmp_path, 3) is None
    # no shared filesystem: the run's folder is not on this machine, and is not made here
    Heartbeats(tmp_path / "run" / ".heartbeats", 1).write("at step 5", 5, time.monotonic())
    assert not (tmp_path / "run").exists()


def test_the_heartbeats_folder_goes_though_a_last_heartbeat_lands_as_it_is_removed(
        tmp_path, monkeypatch):
    """Another process's watchdog may write its last heartbeat while the main process removes
    the folder at the run's end (the heartbeat lands after the listing, so the folder is not
    empty when it is to go); it is removed again a heartbeat later."""
    from glidectl.training import heartbeats

    folder = tmp_path / ".heartbeats"
    heartbeats.clear(folder)
    Heartbeats(folder, 0).write("at step 2", 2, time.monotonic())
    rmtree, late = heartbeats.shutil.rmtree, []

    def rmtree_as_a_beat_lands(path, ignore_errors=False):
        rmtree(path, ignore_errors=ignore_errors)
        if not late:  # the other process's write, between the listing and the rmdir
            late.append(time.monotonic())
            folder.mkdir()
            Heartbeats(folder, 1).write("waiting for the main process", 2, time.monotonic())

    monkeypatch.setattr(heartbeats.shutil, "rmtree", rmtree_as_a_beat_lands)
    heartbeats.remove(folder)
    assert not folder.exists() and late


def test_the_heartbeat_is_written_about_once_a_second_and_goes_at_the_end(tmp_path):
    watchdog = _beating(tmp_path, rank=1)
    watchdog.step(1)
    seen = set()
    with watchdog.watching(None):
        end = time.monotonic() + 2.6
        while time.monotonic() < end:
            if (beat := read_beat(tmp_path, 1)) is not None:
                seen.add(beat.at)
            time.sleep(0.01)
    assert 2 <= len(seen) <= 3, seen
    assert read_beat(tmp_path, 1) is None and not list(tmp_path.iterdir())


def test_the_main_process_names_the_processes_that_lag(tmp_path):
    """Process 1 not heard from for 5 s and process 2 a step behind are named; process 3,
    at the main process's step and heard from now, is not."""
    watchdog = _beating(tmp_path, world=4)
    _beat(tmp_path, 1, "at step 7", 7, since_s=5.5, age_s=5, pid=101)
    _beat(tmp_path, 2, "at step 6", 6, since_s=3, age_s=0, pid=102)
    _beat(tmp_path, 3, "at step 7", 7, since_s=0, age_s=0, pid=103)
    watchdog.step(7)
    said = _watched(watchdog, 0.7)
    assert len(said) == 1, said
    assert re.match(
        r"Still at step 7 after [\d.]+ s: process 1 \(host node-b, pid 101\) was last heard "
        r"from [5-7]\.\d s ago, at step 7; process 2 \(host node-b, pid 102\) has been at step "
        r"6 for [3-5]\.\d s: one of them may be stuck \(stopped, waiting on a disk, its machine "
        r"cut off\); if so, the run stops when it has not answered for 0.6 s "
        r"\(train.collective_timeout_minutes\).$", said[0]), said


@pytest.mark.parametrize("stopped_s, watched_s, said_at", [
    (1.5, 4.2, r"(3\.[5-9]|4\.\d)"),
    (2.3, 5.0, r"4\.\d"),
])
def test_a_process_stopped_into_the_wait_is_still_named(tmp_path, stopped_s, watched_s,
                                                         said_at):
    """Process 1 stopped 1.5 s into the main process's wait: at the 3 s the line is due its
    heartbeat is 1.5 s old, too fresh to tell from a live one, and the line said "another
    process may be stuck" (a CI run on a busy machine); it waits until the heartbeat shows
    the stop, and names it, within half the time again. Stopped 2.3 s in (its step ended
    with a checkpoint), at that last look, 4.5 s in, its heartbeat was 2.2 s old, under half
    the wait, and the line named no one (1 in 10 runs of the two-process test on this VM);
    two heartbeats missed name it."""
    watchdog = Watchdog(timedelta(seconds=6), rank=0, world=2)  # due at 3 s, last at 4.5 s
    watchdog.beats = Heartbeats(tmp_path, 0)
    watchdog.step(7)
    _beat(tmp_path, 1, "at step 7", 7, since_s=0, age_s=-stopped_s, pid=101)  # its last
    said = _watched(watchdog, watched_s)
    assert len(said) == 1, said
    assert re.match(rf"Still at step 7 after {said_at} s: process 1 \(host node-b, pid 101\) "
                    r"was last heard from 2(\.\d)? s ago, at step 7: it may be stuck", said[0]
                    ), said


def test_the_main_processs_line_stays_as_it_was_when_no_heartbeat_shows_a_lag(tmp_path):
    watchdog = _beating(tmp_path, world=3)  # process 1 wrote none (no shared filesystem)
    _beat(tmp_path, 2, "at step 7", 7, since_s=0, age_s=0)
    watchdog.step(7)
    with watchdog.waiting("step 7's preview"):
        said = _watched(watchdog, 0.7)
    assert len(said) == 1 and re.match(
        r"Still waiting for the other processes after step 7's preview after [\d.]+ s: "
        r"another process of this run may be stuck", said[0]), said


def test_the_others_say_once_what_the_main_process_is_busy_with(tmp_path):
    """Not their steps (the main process says those), but a wait for the main process's
    own work, with what its heartbeat says."""
    watchdog = _beating(tmp_path, rank=1, main_wait=timedelta(hours=24))
    watchdog.step(450)
    assert _watched(watchdog, 0.7) == []
    _beat(tmp_path, 0, "busy with step 450's checkpoint", 450, since_s=12 * 60, age_s=0)
    with watchdog.waiting("step 450's checkpoint"):
        said = _watched(watchdog, 0.9)
    assert len(said) == 1, said
    assert re.match(r"Still waiting for the main process to finish step 450's checkpoint after "
                    r"[\d.]+ s: the main process \(host node-b, pid 4242\) has been busy with "
                    r"step 450's checkpoint for 12 min; this process waits for it for up to "
                    r"24 h.$", said[0]), said


def test_the_others_say_when_the_main_process_is_not_heard_from(tmp_path):
    watchdog = _beating(tmp_path, rank=2, world=3, main_wait=timedelta(hours=24))
    with watchdog.waiting("step 8's preview"):
        said = _watched(watchdog, 0.7)  # no heartbeat of the main process
        _beat(tmp_path, 0, "busy with step 8's preview", 8, since_s=31, age_s=30)
    assert len(said) == 1 and said[0].endswith(
        ": the main process may be slow or stuck (stopped, waiting on a disk, its machine cut "
        "off); this process waits for it for up to 24 h."), said
    with watchdog.waiting("step 8's preview"):
        said = _watched(watchdog, 0.7)
    assert len(said) == 1 and re.search(
        r": the main process \(host node-b, pid 4242\) was last heard from 3[01] s ago, busy with "
        r"step 8's preview: it may be stuck \(stopped, waiting on a disk, its machine cut off\); "
        r"this process waits", said[0]), said


def test_the_setup_is_each_processs_own_work_and_a_wait_for_the_main_process_is_said(tmp_path):
    """The others waited in silence for up to 24 h while the main process set the run up (a
    hung network filesystem, a slow download): now they say it once, with the main
    process's heartbeat; the main process's own setup is not said, and after the setup a
    wait returns to before the first step, as it did."""
    main = _beating(tmp_path)
    other = _beating(tmp_path, rank=1, main_wait=timedelta(hours=24))
    with main.waiting("the run folder's creation"), other.waiting("the run folder's creation"):
        pass
    said_by_main: list[str] = []
    with main.watching(said_by_main.append), other.waiting("the setup"):
        said = _watched(other, 0.9)
    assert said_by_main == []
    assert len(said) == 1 and re.fullmatch(
        r"Still waiting for the main process to finish the setup after [\d.]+ s: the main "
        rf"process \(host {re.escape(host_name())}, pid {os.getpid()}\) has been busy with the "
        r"setup for [\d.]+ s; this process waits for it for up to 24 h.", said[0]), said
    main.set_up()
    with main.waiting("the trackers' start"):
        pass
    said = _watched(main, 0.7)
    assert len(said) == 1 and said[0].startswith("Still before the first step after "), said


def test_a_failed_setup_stops_the_thread_and_takes_the_heartbeats_with_it(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(processes, "main_work_group", lambda accelerator, timeout: None)
    accelerator = SimpleNamespace(is_main_process=True, num_processes=2, process_index=0,
                                  is_local_main_process=True)
    folder = tmp_path / ".heartbeats"
    for fails in (True, False):
        procs = Processes(accelerator, timedelta(seconds=0.6))
        with contextlib.suppress(GlidectlError), procs.setting_up(print):
            procs.beat_in(folder)
            time.sleep(0.4)
            assert read_beat(folder, 0).doing == "busy with the setup"
            if fails:
                raise GlidectlError("No room for the checkpoints.")
        assert "glidectl-watchdog" not in [t.name for t in threading.enumerate()]
        assert folder.exists() is not fails  # a set-up run's loop writes on there
        assert read_beat(folder, 0) is None


_STOPPED_CHILD = """
import json, sys, time
from datetime import timedelta
from glidectl.training.watchdog import Watchdog
watchdog = Watchdog(timedelta(seconds=6))  # says after 3 s
said = []
watchdog.step(0)
with watchdog.watching(said.append):
    watchdog.step(1)
    print("ready", flush=True)
    time.sleep(6)  # 4 s of it stopped
    watchdog.step(2)
print(json.dumps({"said": said, "longest": watchdog.longest, "stopped": watchdog.stopped}))
"""


def _stopped_for_4_s(code: str) -> dict:
    """What the child running ``code`` prints (JSON) when it is stopped (SIGSTOP) 0.5 s
    after it says "ready" and resumed 4 s later, then sent a line."""
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    time.sleep(0.5)
    child.send_signal(signal.SIGSTOP)
    time.sleep(4)
    child.send_signal(signal.SIGCONT)
    out, _ = child.communicate("go\n", timeout=30)
    return json.loads(out)


def test_time_the_process_was_stopped_is_not_a_wait():
    """A main process stopped for 4 s (Ctrl-Z, SIGSTOP) and resumed said at once
    that it was "Still at step 1", and its next slow step had to last three times the
    stop: the time it did not run now counts toward no mark and no step."""
    got = _stopped_for_4_s(_STOPPED_CHILD)
    assert got["said"] == [], got
    assert 3 < got["stopped"] < 5 and got["longest"] < 3, got


_STOPPED_IN_A_SHORT_STEP = """
import json, sys, time
from datetime import timedelta
from glidectl.training.watchdog import Watchdog
watchdog = Watchdog(timedelta(seconds=6))
watchdog.step(0)
with watchdog.watching(None):
    watchdog.step(1)
    print("ready", flush=True)
    sys.stdin.readline()  # 4 s of it stopped; the step ends as soon as it runs again
    watchdog.step(2)
    time.sleep(0.5)
print(json.dumps({"longest": watchdog.longest, "stopped": watchdog.stopped}))
"""


def test_a_step_that_ends_as_the_process_runs_again_is_not_as_long_as_the_stop():
    """The main thread ended a step stopped within it before the thread woke to count the
    stop, so the stop became the longest step (in 8 of 8 runs of 0.05 s and 0.5 s steps)
    and a step had to last three times it to be said."""
    got = _stopped_for_4_s(_STOPPED_IN_A_SHORT_STEP)
    assert got["longest"] < 1.5 and 3 < got["stopped"] < 5, got


def test_a_slow_heartbeat_write_is_not_taken_for_a_stop():
    """The thread's own heartbeat write on a slow or hung disk is the process running, not a
    stop, and a step that lasts through it is said."""

    class SlowBeats:
        folder, written = None, 0.0

        def write(self, *_) -> None:
            time.sleep(2.5)
            self.written = time.monotonic()

        def remove(self) -> None:
            pass

    watchdog = Watchdog(timedelta(seconds=2))  # says after 1 s
    watchdog.beats = SlowBeats()
    watchdog.step(1)
    said = _watched(watchdog, 3.5)
    assert watchdog.stopped == 0 and len(said) == 1, (watchdog.stopped, said)
