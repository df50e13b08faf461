"""Small datasets (a DreamBooth-style handful of images): as many workers as each hold a batch,
batches that run on across epochs when an epoch is shorter than one, exact resumes of both,
and datasets that trained before keep their very batches."""

from __future__ import annotations

import json

import pytest
import torch
from data_helpers import encode, photo

from glidectl.data import build_dataset
from glidectl.data.batching import spans_epochs, workers_for
from glidectl.errors import GlidectlError
from glidectl.training import data_stream
from glidectl.training.data_stream import DataStream


def _folder(root, n, start=0):
    root.mkdir(exist_ok=True)
    for i in range(start, start + n):
        (root / f"{i:02d}.png").write_bytes(encode(photo(40, 36, i), "PNG"))
        (root / f"{i:02d}.txt").write_text(f"picture {i}")
    return root


def _dataset(root, data_cfg, tok):
    cfg = data_cfg(source=str(root), flip=True, crop_scale=[0.5, 1.0], uncond_p=0.3)
    return build_dataset(cfg, tokenizer=tok, image_size=16, text_ctx=8, seed=3)


def _stream(root, data_cfg, tok, *, batch, workers=0):
    return DataStream(_dataset(root, data_cfg, tok), batch_size=batch, seed=3, workers=workers)


def _saved(stream):
    """The state as a checkpoint keeps it (JSON)."""
    return json.loads(json.dumps(stream.state_dict()))


def _same(a, b):
    assert a["key"] == b["key"]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["tokens"], b["tokens"])


def _epochs_read_alone(root, data_cfg, tok, n):
    """Each of the first ``n`` epochs as the dataset reads it on its own, in one process."""
    ds = _dataset(root, data_cfg, tok)
    epochs = []
    for epoch in range(n):
        ds.set_epoch(epoch)
        epochs.append(list(ds))
    return epochs


def test_workers_fit_the_rule_only_below_a_batch_each():
    """What keeps every dataset that trained before on its batches: the asked count stands
    whenever each worker holds a batch, and no epoch that holds a batch spans."""
    for batch in (1, 2, 3, 4, 8):
        for asked in range(6):
            for n in range(1, 6 * batch + 2):
                used = workers_for(asked, n, batch)
                assert (used == asked) == (asked <= 1 or n >= asked * batch)
                assert asked <= 1 or 1 <= used and (used == 1 or n // used >= batch)
            assert workers_for(asked, None, batch) == asked  # unknown length: as asked
        assert spans_epochs(batch - 1, batch) == (batch > 1) and not spans_epochs(batch, batch)
        assert not spans_epochs(None, batch)


def test_one_sample_is_said_in_the_singular():
    from glidectl.data.batching import _held

    assert _held(1, 32, 1) == "1 sample is fewer than a batch of 32"  # was "1 sample are"
    assert _held(3, 4, 2) == "3 samples per process are fewer than a batch of 4"


def test_a_dataset_larger_than_a_batch_keeps_its_batches(tmp_path, data_cfg, byte_tok):
    """Seven images, batch 3: each epoch gives two batches and leaves one image out, exactly
    as each epoch read alone."""
    root = _folder(tmp_path / "seven", 7)
    stream = _stream(root, data_cfg, byte_tok, batch=3)
    got = [stream.next() for _ in range(6)]
    for e, epoch in enumerate(_epochs_read_alone(root, data_cfg, byte_tok, 3)):
        for b in range(2):
            _same({"key": [s["key"] for s in epoch[3 * b:3 * b + 3]],
                   "image": torch.stack([s["image"] for s in epoch[3 * b:3 * b + 3]]),
                   "tokens": torch.stack([s["tokens"] for s in epoch[3 * b:3 * b + 3]])},
                  got[2 * e + b])


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_shorter_than_a_batch_runs_on_into_the_next(tmp_path, data_cfg, byte_tok,
                                                              workers):
    """Three images, batch 4 (was "not one batch of 4"): the epochs, each a fresh shuffle of
    all three with its own augmentations, follow one another and are cut into batches."""
    root = _folder(tmp_path / "three", 3)
    stream = _stream(root, data_cfg, byte_tok, batch=4, workers=workers)
    assert stream.span and stream.workers == min(workers, 1)
    assert "3 samples are fewer than a batch of 4" in " ".join(stream.notes())
    got = [stream.next() for _ in range(6)]
    epochs = _epochs_read_alone(root, data_cfg, byte_tok, 8)
    for epoch in epochs:
        assert sorted(s["key"] for s in epoch) == ["00.png", "01.png", "02.png"]
    assert len({tuple(s["key"] for s in epoch) for epoch in epochs}) > 1  # reshuffled
    flat = [s for epoch in epochs for s in epoch]
    for b, batch in enumerate(got):
        rows = flat[4 * b:4 * b + 4]
        _same({"key": [s["key"] for s in rows], "image": torch.stack([s["image"] for s in rows]),
               "tokens": torch.stack([s["tokens"] for s in rows])}, batch)
    assert stream.epoch == 7 and stream.cursors == [3]  # 24 samples: 8 epochs of 3


@pytest.mark.parametrize("workers", [0, 4])
def test_resume_inside_a_batch_that_spans_epochs_is_exact(tmp_path, data_cfg, byte_tok,
                                                           workers):
    root = _folder(tmp_path / "three", 3)
    straight = _stream(root, data_cfg, byte_tok, batch=4, workers=workers)
    batches = [straight.next() for _ in range(7)]
    first = _stream(root, data_cfg, byte_tok, batch=4, workers=workers)
    for _ in range(2):
        first.next()
    state = _saved(first)
    assert state["ranks"][0][0] == 2 and state["ranks"][0][4] == 2  # epoch 2, one image left
    first.close()
    resumed = _stream(root, data_cfg, byte_tok, batch=4, workers=workers)
    resumed.load_state_dict(state)
    for expected in batches[2:]:
        _same(expected, resumed.next())


def test_workers_that_would_hold_less_than_a_batch_are_left_out(tmp_path, data_cfg,
                                                                 byte_tok):
    """Ten images, batch 4, data.workers = 4 (was "not one batch of 4 … lower data.workers"):
    two worker processes read five each, every epoch gives two batches, and a resume keeps
    the two."""
    root = _folder(tmp_path / "ten", 10)
    straight = _stream(root, data_cfg, byte_tok, batch=4, workers=4)
    assert straight.workers == 2 and not straight.span
    assert straight.notes() == [
        "data.workers = 4: using 2 DataLoader workers, as 10 samples make 2 batches of 4 and a "
        "worker batches only its own share (one holding less than a batch would leave it out)."]
    batches = [straight.next() for _ in range(5)]
    keys = [k for b in batches[:2] for k in b["key"]]
    assert len(set(keys)) == 8 and straight.epoch == 2  # two batches an epoch, nothing twice
    first = _stream(root, data_cfg, byte_tok, batch=4, workers=4)
    first.next()
    state = _saved(first)
    assert state["workers"] == {"asked": 4, "used": 2}
    first.close()
    resumed = _stream(root, data_cfg, byte_tok, batch=4, workers=4)
    resumed.load_state_dict(state)
    for expected in batches[1:]:
        _same(expected, resumed.next())


def test_a_run_resumes_with_the_workers_it_started_with(tmp_path, data_cfg, byte_tok):
    """Images added since the checkpoint would make room for four workers; the saved cursor
    is for two, and the run goes on with two."""
    root = _folder(tmp_path / "ten", 10)
    first = _stream(root, data_cfg, byte_tok, batch=4, workers=4)
    first.next()
    state = _saved(first)
    first.close()
    _folder(root, 10, start=10)
    resumed = _stream(root, data_cfg, byte_tok, batch=4, workers=4)
    assert resumed.workers == 4
    resumed.load_state_dict(state)
    assert resumed.workers == 2 and resumed.next()["tokens"].shape[0] == 4
    for used in (99, -1):  # not a count of the workers asked: the record is not followed
        resumed = _stream(root, data_cfg, byte_tok, batch=4, workers=4)
        with pytest.raises(GlidectlError, match="for 2 DataLoader worker"):
            resumed.load_state_dict({**state, "workers": {"asked": 4, "used": used}})
    del state["workers"]  # a checkpoint from before: its cursor must match data.workers
    with pytest.raises(GlidectlError, match="for 2 DataLoader worker"):
        _stream(root, data_cfg, byte_tok, batch=4, workers=4).load_state_dict(state)


def test_a_resume_on_data_cut_below_a_batch_a_worker_does_not_say_lower_data_workers(
        tmp_path, data_cfg, byte_tok, monkeypatch):
    """Images removed since the checkpoint leave the saved two workers one image each: the
    error said to lower data.workers, which the resume then refused, and counted the
    samples of every epoch the process had read as the epoch's."""
    root = _folder(tmp_path / "ten", 10)
    first = _stream(root, data_cfg, byte_tok, batch=4, workers=2)
    first.next()
    state = _saved(first)
    first.close()
    for path in sorted(root.iterdir())[4:]:
        path.unlink()
    monkeypatch.setattr(data_stream, "EMPTY_EPOCHS", 2)  # empty epochs before it stops
    resumed = _stream(root, data_cfg, byte_tok, batch=4, workers=2)
    resumed.load_state_dict(state)
    with pytest.raises(GlidectlError) as info:
        resumed.next()
    assert str(info.value) == (
        "The training data gave not one batch of 4 (2 valid samples): with the 2 workers the "
        "run's checkpoint was saved with each worker makes batches of only its own share of "
        "them; check data.source (see `glidectl dataset inspect`) or lower train.batch_size.")


def test_an_older_checkpoint_resumes_with_data_workers_as_before(tmp_path, data_cfg,
                                                                  byte_tok):
    """Fourteen images and four workers trained before (two of them, with three images,
    made no batch); a checkpoint without the worker record goes on with the four."""
    root = _folder(tmp_path / "fourteen", 14)
    assert _stream(root, data_cfg, byte_tok, batch=4, workers=4).workers == 3  # a new run
    old = _stream(root, data_cfg, byte_tok, batch=4, workers=4)
    old.load_state_dict({"epoch": 0, "position": 0, "ranks": [[]]})  # an old run's start
    assert old.workers == 4
    straight = [old.next() for _ in range(3)]
    assert old.epoch == 1  # workers 0 and 1 made one batch each
    old.close()
    state = _saved(_replay(root, data_cfg, byte_tok, 1))
    del state["workers"]
    resumed = _stream(root, data_cfg, byte_tok, batch=4, workers=4)
    resumed.load_state_dict(state)
    assert resumed.workers == 4
    for expected in straight[1:]:
        _same(expected, resumed.next())


def _replay(root, data_cfg, tok, n):
    """A stream of an old four-worker run after ``n`` batches."""
    stream = _stream(root, data_cfg, tok, batch=4, workers=4)
    stream.load_state_dict({"epoch": 0, "position": 0, "ranks": [[]]})
    for _ in range(n):
        stream.next()
    stream.close()
    return stream


def test_epochs_of_a_spanning_run_count_its_samples(tmp_path, data_cfg, byte_tok):
    """train.epochs = 4 of three images in batches of 4 is three steps (twelve samples), not
    four batches of one epoch each."""
    three = _stream(_folder(tmp_path / "three", 3), data_cfg, byte_tok, batch=4)
    assert three.total_steps(4, 1) == 3 and three.total_steps(1, 1) == 1
    seven = _stream(_folder(tmp_path / "seven", 7), data_cfg, byte_tok, batch=3)
    assert seven.total_steps(4, 1) == 4 * seven.steps_per_epoch(1) == 8


def test_epochs_with_grad_accum_count_the_epochs_micro_batches(tmp_path, data_cfg, byte_tok):
    """Accumulation runs on across an epoch's end, so the steps are all the epochs'
    micro-batches over grad_accum, rounded up: 7 batches an epoch, 2 epochs, 4 a step is 4
    steps (it was 2: 1.14 epochs); 2 batches an epoch, 3 epochs, 4 a step is 2 (it was 3:
    six epochs)."""
    seven = _stream(_folder(tmp_path / "seven", 14), data_cfg, byte_tok, batch=2)
    assert seven.total_steps(2, 4) == 4 and seven.total_steps(2, 1) == 14
    two = _stream(_folder(tmp_path / "two", 4), data_cfg, byte_tok, batch=2)
    assert two.total_steps(3, 4) == 2
