"""Unit specs for the training engine's parts that need no network."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from glidectl.errors import GlidectlError
from glidectl.training.adapters import PartsAdapter
from glidectl.training.checkpointing import CheckpointManager, resolve_checkpoint
from glidectl.training.ema import EMA
from glidectl.training.guards import NonFiniteGuard
from glidectl.training.lr_schedule import lr_factor
from glidectl.training.metrics import MetricsFile, read_metrics, truncate_after
from glidectl.training.run_dir import check_writable, next_run_name


def test_ema_update_is_fp32_lerp_every_step():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([p], decay=0.9)
    p.data.fill_(1.0)
    ema.update()
    ema.update()
    assert ema.shadow[0].dtype == torch.float32
    assert torch.allclose(ema.shadow[0], torch.full((3,), 1 - 0.9**2))


def test_ema_warmup_grows_decay():
    p = torch.nn.Parameter(torch.zeros(1))
    ema = EMA([p], decay=0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.num_updates = 10_000
    assert ema.current_decay() == 0.999


def test_ema_swap_leaves_training_weights_untouched():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    ema = EMA([p], decay=0.5)
    p.data.copy_(torch.tensor([3.0, 4.0]))
    ema.update()
    with ema.swapped():
        assert torch.equal(p.data, torch.tensor([2.0, 3.0]))
    assert torch.equal(p.data, torch.tensor([3.0, 4.0]))


def test_ema_state_roundtrip():
    p = torch.nn.Parameter(torch.randn(4))
    ema = EMA([p], decay=0.9)
    p.data.add_(1)
    ema.update()
    other = EMA([torch.nn.Parameter(torch.zeros(4))], decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow[0], ema.shadow[0]) and other.num_updates == 1


@pytest.mark.parametrize("name", ["constant", "cosine", "linear"])
def test_lr_schedules_warm_up_linearly(name):
    f = lr_factor(name, warmup_steps=4, total_steps=14)
    assert [f(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    end = f(14)
    assert end == pytest.approx(1.0 if name == "constant" else 0.0, abs=1e-9)
    if name == "cosine":
        assert f(9) == pytest.approx(0.5)
    if name == "linear":
        assert f(9) == pytest.approx(0.5)


def _write(tmp: Path, step: int) -> None:
    (tmp / "model.safetensors").write_text(str(step))


def test_checkpoints_retention_and_latest_pointer(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        mgr.save(step, lambda d, s=step: _write(d, s))
    assert mgr.steps() == [20, 30]
    assert (tmp_path / "latest").read_text().strip() == "step-000030"
    assert mgr.latest() == tmp_path / "step-000030"
    assert not list(tmp_path.glob(".tmp-*"))


def test_interrupted_checkpoint_never_replaces_a_complete_one(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save(10, lambda d: _write(d, 10))
    tmp = mgr.begin(20)  # a crash (kill -9) while writing: the temp dir stays behind
    _write(tmp, 20)
    assert mgr.latest() == tmp_path / "step-000010"
    assert mgr.steps() == [10]
    mgr.save(30, lambda d: _write(d, 30))  # the next save clears the stale temp dir
    assert not (tmp_path / ".tmp-step-000020").exists()


def test_a_checkpoint_is_on_disk_before_latest_names_it(tmp_path, monkeypatch):
    """A power cut after ``latest`` moved (and pruning removed the older step) must not find
    the new step's files still in the page cache: each is fsynced before the rename."""
    import os

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(f"replace {src} {dst}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)

    def write(d: Path) -> None:
        _write(d, 10)
        (d / "state").mkdir()
        (d / "state" / "train.json").write_text("{}")

    CheckpointManager(tmp_path, keep_last=1).save(10, write)
    tmp = tmp_path / ".tmp-step-000010"
    moved = events.index(f"replace {tmp} {tmp_path / 'step-000010'}")
    before = events[:moved]
    for name in ("model.safetensors", "state/train.json", "state", ""):
        assert f"fsync {(tmp / name) if name else tmp}" in before, name


def test_a_kill_at_any_point_of_a_commit_resumes_the_newest_whole_checkpoint(
        tmp_path, monkeypatch):
    """``latest`` is pointed at the new step before its folder is renamed into place: a kill
    before the rename resumes the step before (the pointer names no folder yet), a kill just
    after it the new step, never leaving the newer whole checkpoint to be set aside."""
    import os

    class Killed(BaseException):
        pass

    real_replace = os.replace
    for kill_at in ("pointer", "rename"):
        ckpts = tmp_path / kill_at
        mgr = CheckpointManager(ckpts, keep_last=1)
        mgr.save(3, lambda d: (d / "state").mkdir())
        calls: list[str] = []

        def replace(src, dst, kill_at=kill_at, calls=calls) -> None:
            real_replace(src, dst)
            calls.append(Path(dst).name)
            if calls[-1] == {"pointer": "latest", "rename": "step-000006"}[kill_at]:
                raise Killed  # a kill -9 right after this rename: nothing after it runs

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(Killed):
            mgr.save(6, lambda d: (d / "state").mkdir())
        monkeypatch.setattr(os, "replace", real_replace)
        want = {"pointer": 3, "rename": 6}[kill_at]
        assert resolve_checkpoint("latest", ckpts) == ckpts / f"step-{want:06d}", kill_at
        assert mgr.latest() == ckpts / f"step-{want:06d}"


def test_a_kill_while_pruning_leaves_no_half_deleted_step(tmp_path, monkeypatch):
    """Deleting a multi-GB step folder takes a while; killed in the middle, no ``step-N``
    with some of its files gone stays to be taken for a checkpoint."""
    import os

    class Killed(BaseException):
        pass

    def write(d: Path) -> None:
        _write(d, 0)
        (d / "state").mkdir()
        (d / "state" / "train.json").write_text("{}")

    mgr = CheckpointManager(tmp_path, keep_last=1)
    mgr.save(1, write)
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs) -> None:
        real_unlink(path, *args, **kwargs)
        raise Killed  # a kill -9 after the first file of the pruned step is gone

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(Killed):
        mgr.save(2, write)
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert mgr.steps() == [2]
    mgr.save(3, write)  # the next prune removes what is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000003"]


@pytest.mark.parametrize("code, saved", [("EINVAL", True), ("EIO", False)])
def test_fsync_a_filesystem_lacks_is_no_failure_but_an_io_error_is(tmp_path, monkeypatch,
                                                                    code, saved):
    """Some FUSE and network mounts refuse fsync (EINVAL): the checkpoint is still saved; an
    I/O error while flushing means the data did not reach the disk: no checkpoint."""
    import errno
    import os

    def fsync(fd: int) -> None:
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(os, "fsync", fsync)
    mgr = CheckpointManager(tmp_path)
    if saved:
        mgr.save(1, lambda d: _write(d, 1))
        assert mgr.steps() == [1]
        return
    with pytest.raises(OSError):
        mgr.save(1, lambda d: _write(d, 1))
    assert mgr.steps() == []  # the engine says so as a WriteError naming the folder


def test_resolve_checkpoint_accepts_run_and_step_dirs(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    mgr = CheckpointManager(ckpts)
    mgr.save(5, lambda d: (d / "state").mkdir())
    assert resolve_checkpoint("latest", ckpts) == ckpts / "step-000005"
    assert resolve_checkpoint(str(tmp_path / "run"), None) == ckpts / "step-000005"
    assert resolve_checkpoint(str(ckpts / "step-000005"), None) == ckpts / "step-000005"
    with pytest.raises(GlidectlError):
        resolve_checkpoint(str(tmp_path / "nope"), None)


def test_output_dir_not_writable_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GlidectlError, match="not writable|is a file"):
        check_writable(blocker / "runs")


def test_output_dir_without_space_is_a_user_error(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10, 10, 1024))
    with pytest.raises(GlidectlError, match="MiB free"):
        check_writable(tmp_path / "runs")


def test_the_free_space_refusal_never_shows_as_much_free_as_needed(tmp_path, monkeypatch):
    """15.9 MiB free against the 16 MiB a run needs read "has only 16 MiB free but a run
    needs at least 16 MiB": the free space is rounded down, the need up."""
    import shutil
    from collections import namedtuple

    from glidectl.training.run_dir import MIN_FREE_BYTES

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1, 1, MIN_FREE_BYTES - 2**17))
    with pytest.raises(GlidectlError, match="only 15 MiB free but a run needs at least 16 MiB"):
        check_writable(tmp_path / "runs")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1, 1, 2**20))
    with pytest.raises(GlidectlError, match="only 1 MiB free but a checkpoint needs about 2 MiB"):
        check_writable(tmp_path / "runs2", 2**20 + 1)


def test_a_full_disk_leaves_no_write_probe_in_the_run_folder(tmp_path, monkeypatch):
    """On a full disk the probe file was made but not written, and stayed: each start left
    one more `.write-test-<hex>` in the run folder."""
    import errno
    from pathlib import Path

    def full_disk(self, data):
        self.touch()
        raise OSError(errno.ENOSPC, "No space left on device")

    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(GlidectlError, match=r"is not writable \(No space left on device\)"):
        check_writable(run)
    assert list(run.iterdir()) == []


def test_a_tilde_in_output_dir_is_the_home_folder(tmp_path, monkeypatch):
    """train.output_dir = "~/runs" made a folder named '~' in the current folder (data.source
    and model.init read '~' as the home folder)."""
    from glidectl.config import GlideConfig
    from glidectl.training.run_dir import pick_run, trained_run_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    cfg = GlideConfig()
    cfg.train.output_dir, cfg.train.name = "~/runs", "a"
    run = pick_run(cfg, None)
    assert run.root == tmp_path / "home" / "runs" / "a"
    assert trained_run_config(cfg, run.root, str(run.root)) == (cfg, None)


def test_resume_latest_finds_the_newest_run_whose_latest_pointer_was_removed(tmp_path):
    """``--resume latest`` (no train.name) looked for ``checkpoints/latest`` files only: with
    the newest run's pointer removed by hand it resumed an older run without a word (or,
    with one run, said there was "no run with checkpoints")."""
    import os
    import shutil

    from glidectl.config import GlideConfig
    from glidectl.training.run_dir import pick_run

    cfg = GlideConfig()
    cfg.train.output_dir, cfg.train.name = str(tmp_path), ""
    for n, written in ((1, 1000), (2, 2000)):
        step = tmp_path / f"run-00{n}" / "checkpoints" / "step-000004"
        step.mkdir(parents=True)
        (step.parent / "latest").write_text("step-000004\n")
        for path in (step, step.parent / "latest"):
            os.utime(path, (written, written))
    (tmp_path / "run-002" / "checkpoints" / "latest").unlink()
    assert pick_run(cfg, "latest").root == tmp_path / "run-002"
    shutil.rmtree(tmp_path / "run-001")
    assert pick_run(cfg, "latest").root == tmp_path / "run-002"


def test_run_names_are_numbered(tmp_path):
    assert next_run_name(tmp_path) == "run-001"
    (tmp_path / "run-001").mkdir()
    assert next_run_name(tmp_path) == "run-002"


def test_nonfinite_guard_skips_then_stops():
    guard = NonFiniteGuard(limit=3)
    assert guard.check(1.0, 0)
    assert not guard.check(math.nan, 1)
    assert not guard.check(math.inf, 2)
    assert guard.check(0.5, 3)  # a finite loss resets the run of bad steps
    assert not guard.check(math.nan, 4) and not guard.check(math.nan, 5)
    with pytest.raises(GlidectlError, match="3 steps in a row"):
        guard.check(math.nan, 6)
    assert guard.total == 5


def test_metrics_jsonl_append_and_truncate(tmp_path):
    m = MetricsFile(tmp_path / "metrics.jsonl")
    for step in range(1, 5):
        m.write({"step": step, "loss": float("nan") if step == 2 else 0.1})
    m.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    truncate_after(tmp_path / "metrics.jsonl", 2)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


def test_metrics_truncate_streams_and_leaves_a_file_with_nothing_past_the_step(
        tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"  # a long run's log: read a line at a time, not whole
    m = MetricsFile(path)
    for step in range(1, 2001):
        m.write({"step": step, "loss": 0.1})
    m.close()
    before = path.stat()

    def whole(*args, **kwargs):
        raise AssertionError("metrics.jsonl read whole")

    monkeypatch.setattr(Path, "read_text", whole)
    truncate_after(path, 2000)  # a resume at the last logged step: nothing to drop
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    truncate_after(path, 1500)
    monkeypatch.undo()
    assert [r["step"] for r in read_metrics(path)] == list(range(1, 1501))



def test_metrics_truncate_parses_each_kept_line_once(tmp_path, monkeypatch):
    """A resume that drops the last records parsed every line of metrics.jsonl twice (a
    500 MB log: 31 s before the first step); the lines before the first that goes are
    copied as read."""
    import json

    path = tmp_path / "metrics.jsonl"
    m = MetricsFile(path)
    for step in range(1, 2001):
        m.write({"step": step, "loss": 0.1})
    m.close()
    parsed = []
    decode = json.JSONDecoder.decode
    monkeypatch.setattr(json.JSONDecoder, "decode",
                        lambda self, s, *a, **k: parsed.append(s) or decode(self, s, *a, **k))
    truncate_after(path, 1999)
    assert len(parsed) == 2001  # each line once, then the one dropped
    monkeypatch.undo()
    assert [r["step"] for r in read_metrics(path)] == list(range(1, 2000))

class _TinyTextUNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token_embedding = torch.nn.Embedding(4, 2)
        self.transformer = torch.nn.Linear(2, 2)
        self.input_blocks = torch.nn.ModuleDict({"attn": torch.nn.ModuleDict(
            {"encoder_kv": torch.nn.Linear(2, 2), "qkv": torch.nn.Linear(2, 2)})})


@pytest.mark.parametrize(
    "part,expected",
    [
        ("all", 7),
        ("unet", 4),
        ("text", 5),  # text encoder + encoder_kv
    ],
)
def test_parts_adapter_selects_trainable_parameters(part, expected):
    model = PartsAdapter(part).prepare(_TinyTextUNet())
    names = [n for n, _ in PartsAdapter(part).trainable(model)]
    assert len(names) == expected
    if part == "text":
        assert "input_blocks.attn.encoder_kv.weight" in names
        assert "input_blocks.attn.qkv.weight" not in names
    if part == "unet":
        assert not any(n.startswith(("token_embedding", "transformer")) for n in names)


def test_display_prints_plain_lines_when_not_a_tty():
    import io

    from glidectl.training.display import Display

    stream = io.StringIO()
    with Display(total_steps=10, stream=stream) as display:
        assert not display.live
        display.advance(1)
        display.log({"step": 2, "loss": 0.5, "lr": 1e-4, "images_per_s": 3.0, "data_wait": 0.01})
    assert stream.getvalue().startswith("step 2/10 loss 0.5000 lr 1.00e-04 3.0 img/s data 1% ETA")


def test_the_validation_line_shows_a_few_buckets_when_there_are_many():
    from glidectl.training.display import validation_line

    few = {"step": 4, "val_loss": 0.2, **{f"val_loss_t{k}": k / 10 for k in range(4)}}
    assert validation_line(few) == ("validation step 4: val_loss 0.2000 "
                                    "(t0 0.0000 t1 0.1000 t2 0.2000 t3 0.3000)")
    many = {"step": 4, "val_loss": 0.2, **{f"val_loss_t{k}": k / 100 for k in range(50)}}
    assert validation_line(many) == ("validation step 4: val_loss 0.2000 "
                                     "(t0 0.0000 t1 0.0100 … t48 0.4800 t49 0.4900 (50 buckets))")


def test_display_live_panel_shows_progress():
    import io

    from glidectl.training.display import Display

    stream = io.StringIO()
    with Display(total_steps=10, stream=stream, live=True) as display:
        display.log({"step": 5, "loss": 0.25, "lr": 1e-4, "images_per_s": 3.0, "data_wait": 0.0})
    out = stream.getvalue()
    assert "5/10" in out and "loss 0.2500" in out


@pytest.mark.parametrize("kind, resolution, fits", [
    ("upsample", 24, "a multiple of 16 of at least 16 px"),
    ("base", 8, "a multiple of 4 of at least 16 px"),
])
def test_a_resolution_the_scratch_network_cannot_take_names_data_resolution(
        kind, resolution, fits):
    """Was "Model option image_size=24 is not divisible by 2**4": neither the key the user
    set nor what would fit."""
    from glidectl.config import ModelConfig
    from glidectl.training.model_setup import build_model

    with pytest.raises(GlidectlError, match=f"data.resolution = {resolution} does not fit a "
                       f"scratch 'tiny' {kind} network .*; set data.resolution to {fits}"):
        build_model(ModelConfig(kind=kind, size="tiny"), resolution)


@pytest.mark.parametrize("kind, resolution, own", [("base", 32, 64), ("upsample", 96, 256)])
def test_a_resolution_the_official_layout_lacks_names_the_sizes_it_has(kind, resolution, own):
    """The 'official' preset's layout is OpenAI's per size: 32 px was refused with "set
    data.resolution to a multiple of 8 of at least 32 px" (and a channel_mult no config key
    sets), so the size it recommended was the one it refused."""
    from glidectl.config import ModelConfig
    from glidectl.training.model_setup import build_model

    with pytest.raises(GlidectlError) as info:
        build_model(ModelConfig(kind=kind, size="official"), resolution)
    assert str(info.value) == (
        f"data.resolution = {resolution} does not fit a scratch 'official' {kind} network, "
        f"whose layout OpenAI set for 64, 128, 256 px only; set data.resolution to one of "
        f"those, or 0 for its own {own} px (other model.size presets take other sizes).")


def test_a_resolution_loaded_weights_cannot_take_names_data_resolution(tmp_path):
    """A finetune at a data.resolution its network cannot halve far enough ended mid-step in
    a shape mismatch ("Expected size 8 but got size 9"), its run folder left behind."""
    from tiny_configs import tiny_base_weights

    from glidectl.config import ModelConfig
    from glidectl.training.model_setup import build_model

    weights = str(tiny_base_weights(tmp_path / "base16.safetensors"))  # 16 px, two halvings
    with pytest.raises(GlidectlError) as info:
        build_model(ModelConfig(init=weights), 18)
    assert str(info.value) == (
        f"data.resolution = 18 does not fit {weights}'s 16 px base network, which takes sides "
        "that are multiples of 4; set data.resolution to one (e.g. 16), or 0 for its own 16 "
        "px.")
    assert build_model(ModelConfig(init=weights), 24).model.options.image_size == 16


def test_a_lora_run_as_model_init_says_to_merge_it_first(tmp_path):
    from glidectl import runs
    from glidectl.config import ModelConfig
    from glidectl.training.model_setup import build_model

    adapter = tmp_path / "lora-run" / "checkpoints" / "step-000004" / runs.ADAPTER_DIR
    adapter.mkdir(parents=True)
    (adapter / runs.ADAPTER_CONFIG).write_text("{}")
    run = str(tmp_path / "lora-run")
    with pytest.raises(GlidectlError, match=rf"^model.init '{run}' is a LoRA run: .*merge it "
                                            rf"into its base first \(glidectl lora merge {run} "):
        build_model(ModelConfig(init=run))


@pytest.mark.parametrize(("rank", "world", "says"), [
    (0, 1, "not one batch of 4; check data.source"),
    (1, 2, "not one batch of 4 to process 1 of 2, which reads only its share"),
])
def test_no_batch_at_all_says_whose_share_it_was(rank, world, says):
    """Under several processes each reads a share of the files: "check data.source" alone
    sent users to a source that was fine."""
    from glidectl.training.data_stream import DataStream

    class One(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield {"x": torch.zeros(1)}

    stream = DataStream(One(), batch_size=4, rank=rank, world=world)
    with pytest.raises(GlidectlError, match=says):
        stream.next()


def test_a_later_epoch_without_a_batch_for_this_process_is_passed_over():
    """Under two processes each epoch's reshuffled share can hold too few usable samples
    (held out, rejected) for a batch; a later such epoch stopped the run with "not one
    batch", and its resume stopped at the same epoch again. It is passed over (a resumed
    stream too); a stream that reads no batch for EMPTY_EPOCHS epochs in a row still stops."""
    from glidectl.training.data_stream import EMPTY_EPOCHS, DataStream

    class Epochs(torch.utils.data.IterableDataset):
        def __init__(self, sizes):
            self.sizes, self.epoch = sizes, 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            for i in range(self.sizes(self.epoch)):
                yield {"x": torch.full((1,), float(self.epoch * 10 + i))}

    stream = DataStream(Epochs(lambda e: 1 if e == 1 else 2), batch_size=2)
    assert [float(stream.next()["x"][0]) for _ in range(2)] == [0.0, 20.0]  # epoch 1: none
    assert stream.epoch == 2
    resumed = DataStream(Epochs(lambda e: 1 if e == 1 else 2), batch_size=2)
    resumed.load_state_dict({"epoch": 1, "position": 0, "ranks": []})  # into the empty one
    assert float(resumed.next()["x"][0]) == 20.0
    dry = DataStream(Epochs(lambda e: 2 if e == 0 else 0), batch_size=2)
    dry.next()
    with pytest.raises(GlidectlError, match="not one batch of 2"):
        dry.next()
    assert dry.epoch == EMPTY_EPOCHS


def test_a_worker_that_dies_handing_over_a_batch_is_named_as_torch_names_it():
    """A loader worker killed mid-handover shows up first as a ConnectionResetError in the
    main process (the kill-9 test met it one run in ten); it is read as the worker's death."""
    from types import SimpleNamespace

    from glidectl.training.data_stream import _dead_worker
    from glidectl.training.guards import worker_lost

    class Items:
        _workers = [SimpleNamespace(pid=11, exitcode=None), SimpleNamespace(pid=12, exitcode=-9)]

    message = _dead_worker(Items())
    assert message == "DataLoader worker (pid 12) is killed by signal: Killed."
    assert worker_lost(RuntimeError(message)) == message.rstrip(".")
    Items._workers[1].exitcode = 3
    assert _dead_worker(Items()).endswith("exited unexpectedly with exit code 3.")
    Items._workers[1].exitcode = None
    assert _dead_worker(Items(), wait=0.1) is None  # alive: the original error stands


def test_the_loader_seeds_its_workers_from_the_run_s_seed_not_the_global_generator():
    """The loader drew its workers' base seed from torch's global generator: a resume made
    one draw more there than the straight run, which moved every dropout mask after it.
    Its own generator follows train.seed and the epoch, so a worker's random state still
    differs between seeds (a plugin's transform may draw from it)."""
    from glidectl.training.data_stream import DataStream

    class Seeds(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            yield {"x": torch.tensor([float(info.seed % 2**24) if info else -1.0])}

    def first(seed: int) -> float:
        return float(DataStream(Seeds(), batch_size=1, seed=seed, workers=1).next()["x"][0])

    before = torch.get_rng_state()
    one, again, two = first(1), first(1), first(2)
    assert torch.equal(torch.get_rng_state(), before)  # nothing drawn from the global one
    assert one == again and one != two and one >= 0


def test_resume_state_and_metrics_files_are_strict_json_and_keep_non_finite_floats(tmp_path):
    """train.json holds best_val_loss = inf in every run without validation: it was written
    as the bare token Infinity, which is not JSON; metrics.jsonl rewrote an older file's NaN
    tokens as they were on a resume."""
    import json

    from glidectl.training.metrics import read_metrics, truncate_after
    from glidectl.training.resume_state import read_state_file, write_state_file

    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    state = {"best_val_loss": math.inf, "x": [math.nan, -math.inf, 1.5], "step": 3}
    for name in ("train.json", "ema.safetensors"):
        write_state_file(tmp_path / name, state)
        back = read_state_file(tmp_path / name)
        assert back["best_val_loss"] == math.inf and back["x"][1:] == [-math.inf, 1.5]
        assert math.isnan(back["x"][0])
    json.loads((tmp_path / "train.json").read_text(), parse_constant=refuse)
    old = tmp_path / "metrics.jsonl"  # as an older glidectl could leave it
    old.write_text('{"step": 1, "loss": NaN, "lr": {"a": Infinity}}\n{"step": 2, "loss": 1.0}\n')
    truncate_after(old, 1)
    assert [json.loads(line, parse_constant=refuse) for line in old.read_text().splitlines()] \
        == [{"step": 1, "loss": "nan", "lr": {"a": None}}]
    assert read_metrics(old)[0]["loss"] == "nan"


def test_the_live_panel_prints_a_message_as_written():
    """Under the live panel (a terminal) a message went through rich markup: a run folder
    ``run [v2]`` was printed as ``run /checkpoints/…``, and ``take [/x]`` stopped the run
    with a MarkupError right after its checkpoint was written."""
    import io

    from glidectl.training.display import Display

    stream = io.StringIO()
    with Display(total_steps=10, stream=stream, live=True) as display:
        for text in ("checkpoint: runs/run [v2]/checkpoints/step-000001",
                     "preview: runs/take [/x]/previews/step-000001.png"):
            display.message(text)
    out = stream.getvalue()
    assert "runs/run [v2]/checkpoints/step-000001" in out
    assert "runs/take [/x]/previews/step-000001.png" in out
