"""The resumable data cursor: exact continuation with workers, ranks and shards, and skipped
samples never reach the decoder."""

from __future__ import annotations

import pytest
import torch
from data_helpers import encode, photo

from glidectl.data import build_dataset
from glidectl.errors import GlidectlError
from glidectl.training.data_stream import DataStream

BAD = {1: {"jpg": b""}, 7: {"jpg": b"not an image"}}


def _stream(cfg, tok, *, workers=0, rank=0, world=1, batch=2):
    ds = build_dataset(cfg, tokenizer=tok, image_size=32, text_ctx=16, rank=rank,
                       world_size=world, seed=7)
    return DataStream(ds, batch_size=batch, rank=rank, world=world, seed=7, workers=workers)


def _same(a, b):
    assert a["key"] == b["key"]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["tokens"], b["tokens"])


@pytest.fixture
def shard_cfg(write_shards, data_cfg):
    folder = write_shards(4, 5, extra=lambda s, i: BAD.get(s * 5 + i, {}))[0].parent
    return data_cfg(source=str(folder), shuffle_buffer=6, flip=True, uncond_p=0.3,
                    crop_scale=[0.5, 1.0])


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_shard_stream_continues_exactly(shard_cfg, byte_tok, workers):
    straight = _stream(shard_cfg, byte_tok, workers=workers)
    batches = [straight.next() for _ in range(20)]
    assert straight.epoch >= 2  # 18 valid samples: 9 batches per epoch
    first = _stream(shard_cfg, byte_tok, workers=workers)
    for _ in range(5):
        first.next()
    resumed = _stream(shard_cfg, byte_tok, workers=workers)
    resumed.load_state_dict(first.state_dict())
    for expected in batches[5:]:
        _same(expected, resumed.next())


def test_skipped_samples_are_never_decoded(shard_cfg, byte_tok):
    first = _stream(shard_cfg, byte_tok)
    for _ in range(6):
        first.next()
    state = first.state_dict()
    skipped = state["ranks"][0][4]
    resumed = _stream(shard_cfg, byte_tok)
    resumed.load_state_dict(state)
    resumed.next()
    stats = resumed.dataset.stats()
    # only the samples after the cursor reached the decoder: one batch and any rejects
    assert stats["accepted"] == 2
    assert stats["accepted"] + sum(stats["rejected"].values()) == resumed.cursors[0] - skipped
    assert skipped >= 12


def test_two_ranks_two_workers_resume_from_the_main_process_state(tmp_path, data_cfg,
                                                                   byte_tok):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(24):
        (folder / f"{i:02d}.jpg").write_bytes(encode(photo(40, 36, i)))
        (folder / f"{i:02d}.txt").write_text(f"picture {i}")
    cfg = data_cfg(source=str(folder), flip=True)
    ranks = [_stream(cfg, byte_tok, workers=2, rank=r, world=2) for r in range(2)]
    epoch = [k for _ in range(6) for r in ranks for k in r.next()["key"]]
    assert len(epoch) == len(set(epoch)) == 24  # one epoch, nothing twice
    straight = [_stream(cfg, byte_tok, workers=2, rank=r, world=2) for r in range(2)]
    runs = [[s.next() for _ in range(9)] for s in straight]

    first = [_stream(cfg, byte_tok, workers=2, rank=r, world=2) for r in range(2)]
    for s in first:
        for _ in range(4):
            s.next()
    rows = torch.cat([torch.tensor([s._row()]) for s in first])
    first[0].gather_ranks(lambda t: rows)
    saved = first[0].state_dict()  # what the main process writes
    assert len(saved["ranks"]) == 2
    for r in range(2):
        resumed = _stream(cfg, byte_tok, workers=2, rank=r, world=2)
        resumed.load_state_dict(saved)
        for expected in runs[r][4:]:
            _same(expected, resumed.next())


def test_ranks_that_cross_epochs_at_different_steps_each_resume_exactly(tmp_path, data_cfg,
                                                                        byte_tok):
    """Two unreadable images make the processes' shares hold different numbers of batches:
    they end epochs at different steps and drift apart. Each resumes from its own cursor;
    the checkpoint's ``epoch`` is the one every process has reached, not the main
    process's."""
    from glidectl.training.guards import NonFiniteGuard
    from glidectl.training.state import TrainState

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        (folder / f"{i:02d}.jpg").write_bytes(b"" if i in (3, 8) else encode(photo(40, 36, i)))
        (folder / f"{i:02d}.txt").write_text(f"picture {i}")
    cfg = data_cfg(source=str(folder), flip=True)
    straight = [_stream(cfg, byte_tok, rank=r, world=2) for r in range(2)]
    runs = [[s.next() for _ in range(24)] for s in straight]
    assert straight[0].epoch - straight[1].epoch >= 2  # the main process drifts ahead

    first = [_stream(cfg, byte_tok, rank=r, world=2) for r in range(2)]
    for _ in range(5):
        for s in first:
            s.next()
    where = [(s.epoch, s.position) for s in first]
    assert where[0][0] > where[1][0]
    rows = torch.cat([torch.tensor([s._row()]) for s in first])
    first[0].gather_ranks(lambda t: rows)
    saved = TrainState(first[0], NonFiniteGuard(3)).state_dict()["data"]  # train.json's
    assert (saved["epoch"], saved["position"]) == where[1]
    for r in range(2):
        resumed = _stream(cfg, byte_tok, rank=r, world=2)
        resumed.load_state_dict(saved)
        assert (resumed.epoch, resumed.position) == where[r]
        for expected in runs[r][5:]:  # on over more epoch ends
            _same(expected, resumed.next())


def test_a_cursor_for_other_worker_counts_is_a_one_line_error(shard_cfg, byte_tok):
    first = _stream(shard_cfg, byte_tok, workers=2)
    first.next()
    resumed = _stream(shard_cfg, byte_tok, workers=0)
    with pytest.raises(GlidectlError, match=r"2 DataLoader worker.* saved with \(2\), so"):
        resumed.load_state_dict(first.state_dict())


class _Counting(torch.utils.data.IterableDataset):
    """A plain iterable dataset (no set_resume): resumed by drawing and dropping samples."""

    def __iter__(self):
        for i in range(7):
            yield {"i": torch.tensor(i)}


def test_plain_iterable_datasets_resume_by_drawing_samples():
    straight = DataStream(_Counting(), batch_size=2)
    expected = [straight.next()["i"].tolist() for _ in range(5)]
    assert expected == [[0, 1], [2, 3], [4, 5], [0, 1], [2, 3]]
    first = DataStream(_Counting(), batch_size=2)
    first.next(), first.next()
    resumed = DataStream(_Counting(), batch_size=2)
    resumed.load_state_dict(first.state_dict())
    assert [resumed.next()["i"].tolist() for _ in range(3)] == expected[2:]


def test_close_stops_the_workers_and_keeps_the_cursor(shard_cfg, byte_tok):
    straight = _stream(shard_cfg, byte_tok, workers=2)
    batches = [straight.next() for _ in range(12)]
    stream = _stream(shard_cfg, byte_tok, workers=2)
    got = [stream.next() for _ in range(3)]
    stream.close()
    got += [stream.next() for _ in range(4)]
    stream.close()
    stream.close()  # closing twice is harmless
    got += [stream.next() for _ in range(5)]
    for expected, batch in zip(batches, got, strict=True):
        _same(expected, batch)
