"""Image folders: recursion, extensions, sidecar captions, metadata.jsonl, bad files."""

from __future__ import annotations

import json
import os

import pytest
import torch
from data_helpers import (
    EXPECTED_REJECTIONS,
    encode,
    finishes,
    odd_images,
    photo,
    publish_from_child,
    without_root_powers,
)

from glidectl.data import build_dataset
from glidectl.data.folder import FolderSource
from glidectl.data.stats import DataError
from glidectl.errors import GlidectlError


def make_folder(root, n=3):
    (root / "a").mkdir(parents=True)
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a" / "cat.jpg").write_bytes(encode(photo(40, 40, 1)))
    (root / "a" / "cat.txt").write_text("a cat in folder a\n")
    (root / "b" / "cat.JPG").write_bytes(encode(photo(40, 40, 2)))
    (root / "b" / "cat.txt").write_text("\nfirst line\n\n second line \n")
    (root / "b" / "deep" / "dog.PNG").write_bytes(encode(photo(40, 40, 3), "PNG"))
    (root / "b" / "deep" / "bird.webp").write_bytes(encode(photo(40, 40, 4), "WEBP"))
    (root / "b" / "deep" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "dog.PNG", "text": "a dog from jsonl", "score": 5}) + "\n"
        + "not json\n"
        + json.dumps({"file_name": "bird.webp", "text": "a bird"}) + "\n"
    )
    (root / "notes.md").write_text("ignored")
    (root / ".hidden.jpg").write_bytes(b"")
    return root


def keys_and_captions(ds):
    return {s["key"]: s["caption"] for s in ds}


def test_folder_scan_is_recursive_and_case_insensitive(tmp_path):
    src = FolderSource.scan(make_folder(tmp_path / "f"))
    assert src.files == ["a/cat.jpg", "b/cat.JPG", "b/deep/bird.webp", "b/deep/dog.PNG"]
    assert src.bad_metadata == 1


def test_same_stem_in_different_folders_are_distinct_samples(tmp_path, data_cfg, byte_tok):
    cfg = data_cfg(source=str(make_folder(tmp_path / "f")))
    ds = build_dataset(cfg, tokenizer=byte_tok, image_size=32, text_ctx=64)
    got = keys_and_captions(ds)
    assert got["a/cat.jpg"] == "a cat in folder a"
    assert got["b/cat.JPG"] in ("first line", "second line")
    assert got["b/deep/dog.PNG"] == "a dog from jsonl"
    assert got["b/deep/bird.webp"] == "a bird"


def test_sidecar_caption_line_is_chosen_per_fetch(tmp_path, data_cfg, byte_tok):
    cfg = data_cfg(source=str(make_folder(tmp_path / "f")))
    ds = build_dataset(cfg, tokenizer=byte_tok, image_size=32, text_ctx=64)
    seen = set()
    for _ in range(12):
        seen.add(keys_and_captions(ds)["b/cat.JPG"])
    assert seen == {"first line", "second line"}


def test_kohya_caption_files_are_read_and_txt_comes_first(tmp_path, data_cfg, byte_tok):
    root = tmp_path / "f"
    root.mkdir()
    for name in ("a", "b"):
        (root / f"{name}.png").write_bytes(encode(photo(40, 40), "PNG"))
        (root / f"{name}.caption").write_text(f"kohya caption {name}\n")
    (root / "b.txt").write_text("the txt caption")
    ds = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=32,
                       text_ctx=64)
    assert keys_and_captions(ds) == {"a.png": "kohya caption a", "b.png": "the txt caption"}


def test_a_metadata_list_of_captions_gives_one_per_fetch(tmp_path, data_cfg, byte_tok):
    """diffusers' scripts take a metadata.jsonl "text" list, picking one caption per fetch
    (as glidectl's Parquet and hf sources do); the folder rejected such images as
    missing_caption."""
    root = tmp_path / "f"
    root.mkdir()
    (root / "x.jpg").write_bytes(encode(photo(40, 40)))
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "x.jpg",
                                                     "text": ["a red car", "a car"]}))
    ds = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=32,
                       text_ctx=64)
    assert {keys_and_captions(ds)["x.jpg"] for _ in range(12)} == {"a red car", "a car"}


@pytest.mark.parametrize("name, body", [
    ("metadata.jsonl", "".join(json.dumps({"file_name": f"{i}.png", "prompt": f"cap {i}"}) + "\n"
                               for i in range(2))),
    ("metadata.csv", "file_name,prompt\n0.png,cap 0\n1.png,cap 1\n"),
    ("metadata.parquet", None),  # Hugging Face's imagefolder reads it too (it was ignored)
], ids=["jsonl", "csv", "parquet"])
def test_data_caption_column_names_the_metadata_caption(tmp_path, data_cfg, byte_tok, name,
                                                        body):
    """Captions under another column (diffusers' --caption_column) were missing_caption with
    no hint, and data.caption_column was ignored for folders: the error names the column,
    setting it reads it, and a column no row holds is refused as tables refuse it."""
    root = tmp_path / "f"
    root.mkdir()
    for i in range(2):
        (root / f"{i}.png").write_bytes(encode(photo(40, 40, i), "PNG"))
    if body is None:
        pq = pytest.importorskip("pyarrow.parquet")
        import pyarrow as pa

        pq.write_table(pa.table({"file_name": ["0.png", "1.png"], "prompt": ["cap 0", "cap 1"]}),
                       root / name)
    else:
        (root / name).write_text(body)
    with pytest.raises(DataError, match="2 metadata rows have no 'text' or 'caption' but a "
                       "string column 'prompt': set data.caption_column = \"prompt\" to read "
                       "their captions from it."):
        list(build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=32,
                           text_ctx=64))
    ds = build_dataset(data_cfg(source=str(root), caption_column="prompt"), tokenizer=byte_tok,
                       image_size=32, text_ctx=64)
    assert keys_and_captions(ds) == {"0.png": "cap 0", "1.png": "cap 1"}
    with pytest.raises(GlidectlError, match="data.caption_column is 'promt', but .* has no "
                       r"such column \(columns: file_name, prompt\)"):
        build_dataset(data_cfg(source=str(root), caption_column="promt"), tokenizer=byte_tok,
                      image_size=32, text_ctx=64)


def test_metadata_fields_reach_the_preset(tmp_path, data_cfg, byte_tok):
    root = tmp_path / "f"
    root.mkdir()
    (root / "x.jpg").write_bytes(encode(photo(40, 40)))
    (root / "metadata.jsonl").write_text(
        json.dumps({"file_name": "x.jpg", "short_caption": "short", "long_caption": "long"}))
    cfg = data_cfg(source=str(root), preset="synthetic")
    ds = build_dataset(cfg, tokenizer=byte_tok, image_size=32, text_ctx=64)
    assert [s["caption"] for s in ds] == ["short"]


def test_metadata_rows_naming_no_image_are_said(tmp_path):
    """file_name written relative to the dataset, not to the metadata file (a common slip
    with Hugging Face's imagefolder): the images were only "missing_caption"."""
    root = tmp_path / "f"
    (root / "images").mkdir(parents=True)
    for i in range(2):
        (root / "images" / f"{i}.png").write_bytes(encode(photo(40, 40, i), "PNG"))
    (root / "images" / "metadata.jsonl").write_text("".join(
        json.dumps({"file_name": f"images/{i}.png", "text": f"cap {i}"}) + "\n"
        for i in range(2)))
    notes = FolderSource.scan(root).notes()
    assert f"{str(root)!r}: 2 metadata rows name no image file there (first: " \
           "'images/images/0.png', read relative to its metadata file's folder, as Hugging " \
           "Face's imagefolder reads file_name); fix file_name, or their images get no " \
           "caption from it." in notes


def test_metadata_rows_naming_files_by_absolute_path_are_said(tmp_path):
    """A script that wrote each image's absolute path as file_name: every image was
    "missing_caption" without a word, the rows left out as their files exist."""
    root = tmp_path / "f"
    root.mkdir()
    (root / "a.png").write_bytes(encode(photo(40, 40), "PNG"))
    (tmp_path / "b.png").write_bytes(encode(photo(40, 40, 1), "PNG"))
    (root / "metadata.jsonl").write_text(
        json.dumps({"file_name": str(root / "a.png"), "text": "a"}) + "\n"
        + json.dumps({"file_name": "../b.png", "text": "b"}) + "\n")
    notes = FolderSource.scan(root).notes()
    assert any(f"{str(root)!r}: 2 metadata rows name no image file there (first: "
               "'../b.png', read relative" in note for note in notes), notes


def test_a_folder_of_hugging_face_splits_is_said_to_train_every_split(tmp_path):
    """train/, test/ and validation/ (imagefolder's layout) given as a folder: the test and
    validation images were trained on without a word."""
    root = tmp_path / "ds"
    for split in ("train", "test", "validation"):
        (root / split).mkdir(parents=True)
        (root / split / "a.png").write_bytes(encode(photo(40, 40), "PNG"))
        (root / split / "a.txt").write_text("a photo")
    notes = FolderSource.scan(root).notes()
    assert f"{str(root)!r} is laid out in splits (train/, test/ and validation/), as Hugging " \
           "Face's imagefolder writes them, and every split is trained on; point data.source " \
           f"at {str(root / 'train')!r} (or hf:{root}, which reads the train split), and " \
           "validation.source at another split." in notes
    (root / "b.png").write_bytes(encode(photo(40, 40), "PNG"))  # images at its top: no
    assert not any("splits" in n for n in FolderSource.scan(root).notes())


def write_odd_folder(root):
    root.mkdir()
    for name, data in odd_images().items():
        ext = "jpg" if name in ("cmyk", "truncated", "zero", "garbage") else "png"
        if name == "bmp":
            ext = "bmp"
        (root / f"{name}.{ext}").write_bytes(data)
        (root / f"{name}.txt").write_text(f"picture {name}")
    (root / "ok.jpg").write_bytes(encode(photo(40, 40)))
    (root / "ok.txt").write_bytes(b"\xff\xfe not utf8 \xe9")
    (root / "blank.jpg").write_bytes(encode(photo(40, 40)))
    (root / "blank.txt").write_text("  \n \n")
    (root / "nocap.jpg").write_bytes(encode(photo(40, 40)))
    return root


def test_odd_files_are_converted_or_rejected_and_counted(tmp_path, data_cfg, byte_tok):
    cfg = data_cfg(source=str(write_odd_folder(tmp_path / "odd")))
    ds = build_dataset(cfg, tokenizer=byte_tok, image_size=32, text_ctx=64)
    samples = list(ds)
    assert {s["key"].split(".")[0] for s in samples} == {
        "cmyk", "palette", "la", "i16", "gray", "bmp"}
    for s in samples:
        assert s["image"].shape == (3, 32, 32) and s["image"].abs().max() <= 1
    stats = ds.stats()
    expected = {reason: 1 for reason in EXPECTED_REJECTIONS.values()}
    expected.update(caption_not_utf8=1, empty_caption=1, missing_caption=1)
    assert stats["rejected"] == expected
    assert stats["accepted"] == 6
    assert set(stats["converted"]) >= {"CMYK", "P", "LA", "L"}
    assert stats["examples"]["truncated_image"] == ["truncated.jpg"]


def test_rejection_counts_are_summed_across_two_dataloader_workers(tmp_path, data_cfg,
                                                                  byte_tok):
    cfg = data_cfg(source=str(write_odd_folder(tmp_path / "odd")))
    ds = build_dataset(cfg, tokenizer=byte_tok, image_size=32, text_ctx=64)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    keys = [k for batch in loader for k in batch["key"]]
    assert len(keys) == 6 == len(set(keys))
    stats = ds.stats()
    assert sum(stats["rejected"].values()) == 8 and stats["accepted"] == 6
    list(loader)  # a second epoch accumulates
    assert ds.stats()["accepted"] == 12


def test_nothing_valid_stops_fast_with_one_line(tmp_path, data_cfg, byte_tok):
    root = tmp_path / "bad"
    root.mkdir()
    for i in range(30):
        (root / f"{i}.jpg").write_bytes(b"garbage" if i % 2 else b"")
        (root / f"{i}.txt").write_text("caption")
    cfg = data_cfg(source=str(root), max_rejects=10)
    ds = build_dataset(cfg, tokenizer=byte_tok, image_size=32, text_ctx=64)
    with pytest.raises(DataError) as info:
        next(iter(ds))
    assert sum(ds.stats()["rejected"].values()) == 10  # it stopped after 10 of the 30 files
    message = str(info.value)
    assert "\n" not in message and str(root) in message
    assert "empty_file" in message and "unreadable_image" in message


def test_an_epoch_short_of_one_batch_says_what_it_held(tmp_path, data_cfg, byte_tok):
    """Seven images, six without a caption: "not one batch of 2" alone left users counting
    seven images."""
    from glidectl.training.data_stream import DataStream

    root = tmp_path / "few"
    root.mkdir()
    for i in range(7):
        (root / f"{i}.png").write_bytes(encode(photo(40, 40, i), "PNG"))
    (root / "0.txt").write_text("the only caption")
    ds = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=16, text_ctx=8)
    with pytest.raises(GlidectlError) as info:
        DataStream(ds, batch_size=2).next()
    assert str(info.value).startswith("The training data gave not one batch of 2 (1 valid "
                                      "sample, 6 rejected (missing_caption: 6)); check data.source")


def test_an_epoch_split_over_workers_too_thin_for_a_batch_says_to_lower_workers(
        tmp_path, data_cfg, byte_tok):
    """Ten images, five without a caption, and batch 4 train with one process, but two
    workers batch only their own valid ones: "lower train.batch_size" alone hid that fewer
    workers would do. (Ten good images would read with two workers of five: each holds a
    batch.)"""
    from glidectl.training.data_stream import DataStream

    root = tmp_path / "ten"
    root.mkdir()
    for i in range(10):
        (root / f"{i}.png").write_bytes(encode(photo(40, 40, i), "PNG"))
        if i % 2:
            (root / f"{i}.txt").write_text(f"caption {i}")
    ds = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=16, text_ctx=8)
    assert DataStream(ds, batch_size=4).next()["tokens"].shape[0] == 4  # one process: fine
    ds = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=16, text_ctx=8)
    with pytest.raises(GlidectlError) as info:
        DataStream(ds, batch_size=4, workers=2).next()
    assert str(info.value) == (
        "The training data gave not one batch of 4 (5 valid samples, 5 rejected "
        "(missing_caption: 5)): with data.workers = 2 each worker makes batches of only its "
        "own share of them; lower data.workers (0: one process reads them all), check "
        "data.source (see `glidectl dataset inspect`) or lower train.batch_size.")


def test_an_epoch_of_no_valid_sample_over_workers_does_not_blame_the_workers(
        tmp_path, data_cfg, byte_tok):
    """Every caption skipped (`data.skip_words`) with two workers said "with data.workers =
    2 each worker makes batches of only its own share of them; lower data.workers", which
    cannot help: nothing was valid. It is the error one process gives."""
    from glidectl.training.data_stream import DataStream

    root = tmp_path / "skipped"
    root.mkdir()
    for i in range(6):
        (root / f"{i}.png").write_bytes(encode(photo(40, 40, i), "PNG"))
        (root / f"{i}.txt").write_text(f"a caption {i}")
    said = []
    for workers in (0, 2):
        ds = build_dataset(data_cfg(source=str(root), skip_words=["caption"]),
                           tokenizer=byte_tok, image_size=16, text_ctx=8)
        with pytest.raises(GlidectlError) as info:
            DataStream(ds, batch_size=2, workers=workers).next()
        said.append(str(info.value))
    assert said[0] == said[1] and said[1].startswith(
        f"No valid samples in data source {str(root)!r}: 6 rejected (skip_word: 6)")


def test_nothing_valid_with_workers_is_still_one_line(tmp_path, data_cfg, byte_tok):
    root = tmp_path / "bad"
    root.mkdir()
    for i in range(8):
        (root / f"{i}.jpg").write_bytes(b"")
        (root / f"{i}.txt").write_text("caption")
    from glidectl.training.data_stream import DataStream

    cfg = data_cfg(source=str(root), max_rejects=3)
    ds = build_dataset(cfg, tokenizer=byte_tok, image_size=32, text_ctx=64)
    stream = DataStream(ds, batch_size=2, workers=2)
    with pytest.raises(GlidectlError) as info:  # each worker reads its share; then it is said
        stream.next()
    assert ds.stats()["rejected"]["empty_file"] == 8
    assert "\n" not in str(info.value) and "empty_file" in str(info.value)
    assert str(info.value).startswith("No valid samples in data source")


def test_a_worker_whose_shards_are_all_rejected_leaves_the_others_training(
        write_shards, data_cfg, byte_tok):
    """data.max_rejects was judged per worker: one whose share of the shards began with
    (here: was) a shard without captions stopped the run with "No valid samples in data
    source" while the other worker read valid ones (`dataset inspect` found them)."""
    shards = write_shards(4, 6, extra=lambda s, i: {"txt": None} if s % 2 else {})
    cfg = data_cfg(source=str(shards[0].parent), max_rejects=3)
    ds = build_dataset(cfg, tokenizer=byte_tok, image_size=32, text_ctx=64)
    loader = iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2))
    batches = list(loader)
    loader._shutdown_workers()
    assert sum(len(b["tokens"]) for b in batches) == 12  # shards 0 and 2, all of them
    assert ds.stats()["rejected"] == {"missing_caption": 12}


def test_images_all_below_min_image_size_name_the_key_to_lower(tmp_path, data_cfg, byte_tok):
    from PIL import Image

    root = tmp_path / "small"
    root.mkdir()
    for i, size in enumerate([(12, 12), (14, 10), (13, 15), (11, 12)]):
        Image.new("RGB", size, "red").save(root / f"{i}.png")
        (root / f"{i}.txt").write_text("a red square")
    ds = build_dataset(data_cfg(source=str(root), max_rejects=4, min_image_size=16),
                       tokenizer=byte_tok,
                       image_size=12, text_ctx=64)
    with pytest.raises(GlidectlError) as info:
        list(torch.utils.data.DataLoader(ds, batch_size=2))
    message = str(info.value)
    assert "\n" not in message and "too_small" in message
    # the value named admits the smallest picture read (was "=12 for 12 px pictures" always,
    # which rejects the 10 px ones)
    assert ("; images below data.min_image_size are rejected: the smallest found is 10 px "
            "on its short side, so --set data.min_image_size=10 keeps them; run `glidectl "
            "dataset inspect") in message, message
    # DataLoader workers' counters travel as JSON and are summed: the smallest side too
    from glidectl.data.stats import RejectionCounter

    workers = [RejectionCounter(), RejectionCounter()]
    workers[0].reject("too_small", "a.png", short_side=11)
    workers[1].reject("too_small", "b.png", again=True, short_side=7)
    total = RejectionCounter.merged(RejectionCounter.from_dict(w.to_dict()) for w in workers)
    assert total.too_small_side == 7


def test_linked_folders_are_read_once_and_link_loops_end(tmp_path, data_cfg, byte_tok):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "fox.jpg").write_bytes(encode(photo(40, 40, 7)))
    (elsewhere / "fox.txt").write_text("a fox from a linked folder")
    root = make_folder(tmp_path / "f")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "again").symlink_to(elsewhere, target_is_directory=True)  # the same real folder
    (root / "b" / "loop").symlink_to(root, target_is_directory=True)
    src = FolderSource.scan(root)
    assert src.files == ["a/cat.jpg", "again/fox.jpg", "b/cat.JPG", "b/deep/bird.webp",
                         "b/deep/dog.PNG"]
    ds = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=32,
                       text_ctx=64)
    assert keys_and_captions(ds)["again/fox.jpg"] == "a fox from a linked folder"


def test_empty_folder_is_a_user_error(tmp_path, data_cfg, byte_tok):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GlidectlError, match="holds no images"):
        build_dataset(data_cfg(source=str(tmp_path / "empty")), tokenizer=byte_tok,
                      image_size=32, text_ctx=64)


@pytest.mark.parametrize("prefix", ["", "folder:"])
def test_a_training_run_folder_is_no_dataset(prefix, tmp_path, data_cfg, byte_tok):
    """A run's previews (captioned here) were read as its training images."""
    from glidectl.config import GlideConfig, save_config

    run = tmp_path / "runs" / "cubes"
    (run / "previews").mkdir(parents=True)
    (run / "previews" / "step-000010.png").write_bytes(encode(photo(40, 40, 1), "PNG"))
    (run / "previews" / "step-000010.txt").write_text("a preview grid")
    cfg = GlideConfig()
    cfg.data.source = "data/cubes"
    save_config(cfg, run / "config.toml")
    with pytest.raises(GlidectlError, match=r"^Data source '.*cubes' is a glidectl training "
                       r"run's folder, not a dataset; pass the images it trained on \(its "
                       r"config.toml's data.source: 'data/cubes'\) or another dataset.$"):
        build_dataset(data_cfg(source=f"{prefix}{run}"), tokenizer=byte_tok, image_size=32,
                      text_ctx=64)


@pytest.mark.parametrize("part, what", [
    ("checkpoints", "the checkpoints folder of"),
    ("checkpoints/step-000010", "part of a checkpoint of"),
    ("checkpoints/step-000010/state", "part of a checkpoint of"),
    ("checkpoints/latest", "part of a checkpoint of"),
])
def test_a_training_runs_checkpoints_are_no_dataset(part, what, tmp_path, data_cfg, byte_tok,
                                                    monkeypatch):
    """A run's checkpoints/ given as data said it "holds no images" (a step folder, too),
    and its `latest` file that it was no kind of source, not what they are."""
    from glidectl.config import GlideConfig, save_config

    run = tmp_path / "runs" / "cubes"
    (run / "checkpoints" / "step-000010" / "state").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("step-000010")
    cfg = GlideConfig()
    cfg.data.source = "data/cubes"
    save_config(cfg, run / "config.toml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GlidectlError) as said:
        build_dataset(data_cfg(source=f"runs/cubes/{part}"), tokenizer=byte_tok,
                      image_size=32, text_ctx=64)
    assert str(said.value) == (
        f"Data source 'runs/cubes/{part}' is {what} the glidectl training run 'runs/cubes', "
        "not a dataset; pass the images it trained on (its config.toml's data.source: "
        "'data/cubes') or another dataset.")


def test_a_checkpoints_folder_of_no_run_is_read_as_images(tmp_path, data_cfg, byte_tok):
    """Only a run's checkpoints/ (a config.toml beside it) is refused as one."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode(photo(40, 40, 1), "PNG"))
    (folder / "a.txt").write_text("a photo")
    ds = build_dataset(data_cfg(source=str(folder)), tokenizer=byte_tok, image_size=32,
                       text_ctx=64)
    assert next(iter(ds))["caption"] == "a photo"


def test_shared_stats_reach_spawned_processes_and_survive_copies():
    import copy
    import multiprocessing

    from glidectl.data.stats import SharedStats

    shared = SharedStats()
    proc = multiprocessing.get_context("spawn").Process(
        target=publish_from_child, args=(shared, 3))
    proc.start()
    proc.join(60)
    total = shared.total()
    assert total.accepted == 1 and total.rejected == {"truncated_image": 1}
    assert copy.deepcopy(shared).total().examples == {"truncated_image": ["child.jpg"]}


def test_bad_metadata_rows_name_the_first_file_and_line(tmp_path):
    root = tmp_path / "meta"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(encode(photo(40, 40)))
    (root / "sub" / "metadata.csv").write_text("file_name;text\na.png;a semicolon CSV\n")
    (root / "metadata.jsonl").write_text('{"filename": "sub/a.png", "text": "x"}\n')
    [note] = FolderSource.scan(root).notes()
    assert note.startswith(f"{str(root)!r}: 2 metadata rows or files could not be read (first: "
                           "'metadata.jsonl' line 1, no file_name); their images")


def test_csv_row_with_an_unquoted_comma_is_a_bad_row_not_a_cut_caption(tmp_path):
    """`a.png,a dog, sitting` read the caption 'a dog' without a word (the rest went to
    DictReader's None key, which made data.caption_column's error a TypeError)."""
    root = tmp_path / "csv"
    root.mkdir()
    for name in ("a.png", "b.png"):
        (root / name).write_bytes(encode(photo(40, 40), "PNG"))
    (root / "metadata.csv").write_text(
        'file_name,text\na.png,a dog, sitting\nb.png,"a cat, lying"\n')
    src = FolderSource.scan(root)
    assert "a.png" not in src.metadata and src.metadata["b.png"]["text"] == "a cat, lying"
    [note] = src.notes()
    assert "('metadata.csv' line 2, more fields than its header names (quote a caption " \
           "holding a comma))" in note
    with pytest.raises(GlidectlError, match="has no such column \\(columns: file_name, text\\)"):
        FolderSource.scan(root, caption_column="prompt")


def test_gif_tiff_jfif_are_read_other_image_kinds_and_bad_metadata_are_noted(tmp_path, data_cfg,
                                                                             byte_tok):
    from typer.testing import CliRunner

    from glidectl.cli.app import build_app

    root = tmp_path / "mixed"
    root.mkdir()
    (root / "a.gif").write_bytes(encode(photo(40, 40, 1).convert("P"), "GIF"))
    (root / "b.tif").write_bytes(encode(photo(40, 40, 2), "TIFF"))
    (root / "c.jfif").write_bytes(encode(photo(40, 40, 3)))
    for name in ("b", "c"):
        (root / f"{name}.txt").write_text(f"picture {name}")
    (root / "d.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (root / "e.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (root / "f.svg").write_text("<svg/>")
    (root / "metadata.jsonl").write_text('{"file_name": "a.gif", "text": "a gif"}\nnot json\n')
    src = FolderSource.scan(root)
    assert src.files == ["a.gif", "b.tif", "c.jfif"]
    assert src.notes() == [
        f"{str(root)!r}: 3 image files of kinds glidectl does not read left out (.heic 2, "
        ".svg 1); convert them to PNG or JPEG.",
        f"{str(root)!r}: 1 metadata row or file could not be read ('metadata.jsonl' line 2, "
        "not JSON); their images get no caption from them: write one JSON object a line (or "
        "a CSV row) with file_name and text."]
    ds = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=16,
                       text_ctx=8, train=False)
    assert sorted(s["key"] for s in ds) == ["a.gif", "b.tif", "c.jfif"]  # all three decode

    out = CliRunner().invoke(build_app(), ["dataset", "inspect", str(root), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["notes"] == src.notes()
    shown = CliRunner().invoke(build_app(), ["dataset", "inspect", str(root)],
                               env={"COLUMNS": "400"})
    assert "Warning: " in shown.output and "(.heic 2, .svg 1)" in shown.output
    assert "Note:" not in shown.output  # train says the same text as a warning

    only = tmp_path / "phone"
    only.mkdir()
    (only / "x.heic").write_bytes(b"\x00")
    with pytest.raises(GlidectlError, match=r"holds no images \(.jpg .* .avif\); point data."
                                            r"source at a folder with images. .*\(.heic 1\)"):
        build_dataset(data_cfg(source=str(only)), tokenizer=byte_tok, image_size=16,
                      text_ctx=8)


@pytest.mark.parametrize("kind", ["folder", "wds", "parquet"])
def test_a_source_prefix_with_nothing_after_it_is_one_sentence(kind, data_cfg, byte_tok,
                                                               tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not read as the current folder
    (tmp_path / "x.png").write_bytes(encode(photo(), "PNG"))
    with pytest.raises(GlidectlError, match=f"^data.source '{kind}:' names no path; write "
                                            f"{kind}:"):
        build_dataset(data_cfg(source=f"{kind}:"), tokenizer=byte_tok, image_size=16,
                      text_ctx=8)


def test_a_folder_that_cannot_be_listed_is_named(tmp_path):
    """Root runs without the capabilities that let it list any folder."""
    import subprocess
    import sys

    root = tmp_path / "pics"
    (root / "locked").mkdir(parents=True)
    (root / "a.png").write_bytes(encode(photo(), "PNG"))
    (root / "locked" / "b.png").write_bytes(encode(photo(), "PNG"))
    (root / "locked").chmod(0)
    prefix = without_root_powers()
    try:
        out = subprocess.run([*prefix, sys.executable, "-c", (
            "import sys; from glidectl.data.folder import FolderSource\n"
            "src = FolderSource.scan(sys.argv[1]); print(src.files); print(src.notes())"),
            str(root)], capture_output=True, text=True, timeout=60)
    finally:
        (root / "locked").chmod(0o755)
    assert out.stdout.splitlines() == [
        "['a.png']", str([f"1 folder under {str(root)!r} could not be read and is left out "
                          f"({str(root / 'locked')!r}); check its permissions."])], out.stderr


def test_shared_counters_under_a_small_file_size_limit_are_one_sentence():
    import resource
    import subprocess
    import sys

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))

    code = ("from glidectl.data.stats import SharedStats\nfrom glidectl.errors import "
            "GlidectlError\ntry:\n    SharedStats()\nexcept GlidectlError as exc:\n    print(exc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, preexec_fn=small_files)
    assert out.stdout.startswith("Cannot make the 1032 KiB of shared memory the data counters "
                                 "use (File too large); raise the file size limit"), out.stderr


def test_a_caption_file_that_cannot_be_read_is_counted_as_unreadable_not_missing(tmp_path):
    """Root runs without the capabilities that let it read any file."""
    import subprocess
    import sys

    root = tmp_path / "pics"
    root.mkdir()
    for name in ("a", "b"):
        (root / f"{name}.png").write_bytes(encode(photo(), "PNG"))
        (root / f"{name}.txt").write_text(f"picture {name}")
    (root / "b.txt").chmod(0)
    prefix = without_root_powers()
    code = ("import json, sys\nfrom glidectl.config import DataConfig\n"
            "from glidectl.data.inspection import inspect_source\n"
            "r = inspect_source(DataConfig(source=sys.argv[1], min_image_size=8), "
            "tokenizer='byte', image_size=16)\nprint(json.dumps([r.valid, r.rejected]))")
    try:
        out = subprocess.run([*prefix, sys.executable, "-c", code, str(root)],
                             capture_output=True, text=True, timeout=60)
    finally:
        (root / "b.txt").chmod(0o644)
    assert json.loads(out.stdout) == [1, {"unreadable_caption": 1}], out.stderr


def test_a_folder_named_as_the_caption_file_is_counted_as_unreadable(tmp_path):
    """A folder '1.txt' beside '1.png' was read as no caption file, so the image trained
    uncaptioned (or took a later '.caption' file) without a word."""
    from glidectl.config import DataConfig
    from glidectl.data.inspection import inspect_source

    root = tmp_path / "pics"
    (root / "1.txt").mkdir(parents=True)
    (root / "1.caption").write_text("not the caption file a folder reads first")
    for name in ("1", "2"):
        (root / f"{name}.png").write_bytes(encode(photo(), "PNG"))
    (root / "2.txt").write_text("picture 2")
    report = inspect_source(DataConfig(source=str(root), min_image_size=8),
                            tokenizer="byte", image_size=16)
    assert (report.valid, report.rejected) == (1, {"unreadable_caption": 1})
    assert report.rejected_examples["unreadable_caption"] == ["1.png"]


def test_named_pipes_in_a_folder_are_counted_unopened_and_the_scan_goes_on(
        tmp_path, data_cfg, byte_tok):
    """A pipe 'pipe.png', or a pipe 'metadata.jsonl' / 'metadata.csv', hung `dataset inspect`
    and training for good: each was opened and waited for a writer."""
    from glidectl.data.inspection import inspect_source

    root = tmp_path / "pipes"
    (root / "sub").mkdir(parents=True)
    for name in ("a", "sub/b"):
        (root / f"{name}.png").write_bytes(encode(photo(40, 40), "PNG"))
        (root / f"{name}.txt").write_text(f"picture {name}")
    (root / "pipe.txt").write_text("a pipe")
    fifos = [root / "pipe.png", root / "metadata.jsonl", root / "sub" / "metadata.csv"]
    for fifo in fifos:
        os.mkfifo(fifo)
    report = finishes(lambda: inspect_source(data_cfg(source=str(root)), tokenizer=byte_tok,
                                             image_size=16), fifos=fifos)
    assert (report.scanned, report.valid, report.rejected) == (3, 2, {"unreadable_file": 1})
    assert report.rejected_examples == {"unreadable_file": ["pipe.png"]}
    assert report.notes == [
        f"{str(root)!r}: 2 metadata rows or files could not be read (first: 'metadata.jsonl', "
        "not a regular file (a pipe or a device)); their images get no caption from them: "
        "write one JSON object a line (or a CSV row) with file_name and text."]
    ds = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=16,
                       text_ctx=8)
    assert sorted(finishes(lambda: [s["key"] for s in ds], fifos=fifos)) == ["a.png", "sub/b.png"]
    assert ds.stats()["rejected"] == {"unreadable_file": 1}
    assert all(fifo.is_fifo() for fifo in fifos)


def test_data_max_pixels_is_the_limit_above_and_below_pillows(tmp_path, data_cfg, byte_tok,
                                                              monkeypatch):
    """data.max_pixels above Pillow's limit still rejected the images between the two as
    decompression_bomb. Pillow's limit is lowered to 1000 pixels so small images stand in
    for 100-megapixel ones."""
    from PIL import Image

    from glidectl.data.inspection import inspect_source

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    (tmp_path / "big.png").write_bytes(encode(photo(60, 40), "PNG"))  # 2400 px
    (tmp_path / "small.png").write_bytes(encode(photo(30, 30), "PNG"))  # 900 px
    for name in ("big", "small"):
        (tmp_path / f"{name}.txt").write_text(f"a {name} picture")
    counts = {}
    for limit in (2400, 2399, 900):
        report = inspect_source(data_cfg(source=str(tmp_path), max_pixels=limit),
                                tokenizer=byte_tok, image_size=16)
        counts[limit] = (report.valid, report.rejected)
    assert counts == {2400: (2, {}), 2399: (1, {"decompression_bomb": 1}),
                      900: (1, {"decompression_bomb": 1})}
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_shards_beside_the_images_are_named_with_how_to_read_them(write_shards, data_cfg,
                                                                   byte_tok):
    """A folder of images and .tar shards read the images and left the shards without a
    word."""
    shards = write_shards(2, 1, folder="mixed")
    root = shards[0].parent
    photo(32, 32).save(root / "a.png")
    (root / "a.txt").write_text("a photo")
    src = FolderSource.scan(root)
    assert src.files == ["a.png"]
    assert src.notes() == [
        f"{str(root)!r}: 2 webdataset shards left out ('shard-00000.tar', 'shard-00001.tar'): "
        "an image folder reads its images only; to read the shards, point data.source at "
        f"them (data.source = {str(root / '*.tar')!r})."]
    glob_source = data_cfg(source=str(root / "*.tar"))
    assert len(list(build_dataset(glob_source, tokenizer=byte_tok, image_size=16, text_ctx=8,
                                  train=False))) == 2  # the pattern named reads them


def test_captions_keep_separators_that_are_no_line_end(tmp_path, data_cfg, byte_tok):
    """U+2028, U+0085 and form feeds inside a caption are text, as in JSON and CSV: a
    metadata.jsonl row, a quoted CSV field and a .txt caption are read whole, their spaces
    then made plain (str.splitlines cut the JSON row in two and lost its image, and kept
    only a part of the .txt caption)."""
    odd = "a red\u2028circle\x85on a\x0cwhite background"
    for name, write in {
        "jsonl": lambda root: (root / "metadata.jsonl").write_text(
            json.dumps({"file_name": "x.png", "text": odd}, ensure_ascii=False) + "\n"),
        "csv": lambda root: (root / "metadata.csv").write_text(
            f'file_name,text\nx.png,"{odd}, twice"\n', newline=""),
        "txt": lambda root: (root / "x.txt").write_text(odd + "\n"),
    }.items():
        root = tmp_path / name
        root.mkdir()
        (root / "x.png").write_bytes(encode(photo(40, 40)))
        write(root)
        ds = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=32,
                           text_ctx=64)
        plain = "a red circle on a white background" + (", twice" if name == "csv" else "")
        assert keys_and_captions(ds) == {"x.png": plain}, name


def test_captions_named_with_the_image_extension_kept_are_named(tmp_path, data_cfg, byte_tok):
    """'a.jpg.txt' beside 'a.jpg' (as some captioning tools write them) is not read: every
    image was rejected as missing_caption with no word of where its caption was."""
    from glidectl.data.inspection import inspect_source

    root = tmp_path / "imgs"
    root.mkdir()
    for name in ("a.jpg", "b.c.png"):
        (root / name).write_bytes(encode(photo(40, 40), "PNG"))
        (root / f"{name}.txt").write_text("a caption")
    ds = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=16, text_ctx=8)
    with pytest.raises(DataError) as info:
        list(ds)
    said = ("2 images without a caption file have one named with the image's extension kept, "
            "as 'a.jpg.txt', which is not read: a caption file is the image's name with its "
            "extension replaced ('a.txt'); rename them.")
    assert "missing_caption: 2" in str(info.value) and str(info.value).endswith(said)
    report = inspect_source(data_cfg(source=str(root)), tokenizer=byte_tok)
    assert said in report.notes and report.refusal.endswith(said)


def test_a_large_image_folder_is_recognised_without_a_stat_of_each_image(tmp_path, monkeypatch):
    """Telling an image folder from a Parquet one looked up every file at its top (4 times
    a training start: 0.3 s each for 50,000 images); the names are enough."""
    from pathlib import Path

    from glidectl.data.builtin_sources import claims_parquet

    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(encode(photo(16, 16, i)))
    (tmp_path / "index.parquet").mkdir()  # a folder named as a table: still no table
    looked: list[str] = []
    is_file = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda p: looked.append(p.name) or is_file(p))
    assert not claims_parquet(str(tmp_path))
    assert looked == ["index.parquet"]


def test_hundreds_of_rejection_reasons_fit_a_process_s_slot_and_add_up():
    """A counter over the 8 KiB shared slot once its examples were dropped (hundreds of
    reasons, a plugin preset's) was written on: over the next process's slot, whose counts
    were lost, and unreadable itself. The rarest reasons are now summed as one."""
    from glidectl.data.stats import OTHER_REASONS, RejectionCounter, SharedStats

    stats = SharedStats()
    neighbour = RejectionCounter()
    neighbour.accepted = 5
    stats.publish(1, neighbour)
    many = RejectionCounter()
    many.rejected = {f"plugin_reason_number_{i}": i + 1 for i in range(800)}
    stats.publish(0, many)
    assert stats.load(1).accepted == 5
    got = stats.load(0).rejected
    assert sum(got.values()) == sum(range(1, 801)) and OTHER_REASONS in got
    assert got["plugin_reason_number_799"] == 800  # the commonest kept by name


def test_a_damaged_metadata_parquet_is_counted_as_bad_metadata(tmp_path):
    """A metadata.parquet that pyarrow cannot read is one bad metadata file, named as a
    metadata.jsonl that is not JSON is, not a traceback."""
    pytest.importorskip("pyarrow")
    from glidectl.data.folder import FolderSource

    (tmp_path / "a.png").write_bytes(encode(photo(40, 40), "PNG"))
    (tmp_path / "metadata.parquet").write_bytes(b"PAR1 not really")
    src = FolderSource.scan(tmp_path)
    assert src.bad_metadata == 1 and src.bad_metadata_first.startswith(
        "'metadata.parquet', not a readable Parquet file (")


def test_img2dataset_files_output_gives_each_image_its_json(tmp_path, data_cfg, byte_tok):
    """img2dataset's `files` output (00000/000000001.jpg beside its .txt and .json) under
    `preset = "laion"`: every image was rejected as missing_metadata, the .json beside it
    unread. Each image's .json is its metadata now (a metadata file's row comes first), and
    its caption where no caption file is."""
    root = tmp_path / "out"
    (root / "00000").mkdir(parents=True)
    for i, (similarity, nsfw) in enumerate(((0.35, "UNLIKELY"), (0.1, "UNLIKELY"),
                                            (0.4, "NSFW"), (0.33, "UNLIKELY"))):
        stem = root / "00000" / f"{i:09d}"
        stem.with_suffix(".jpg").write_bytes(encode(photo(40, 40, i)))
        meta = {"caption": f"json caption {i}", "similarity": similarity, "NSFW": nsfw,
                "original_width": 512, "original_height": 384, "url": f"http://x/{i}.jpg"}
        stem.with_suffix(".json").write_text(json.dumps(meta))
        if i < 3:
            stem.with_suffix(".txt").write_text(f"caption {i}")
    ds = build_dataset(data_cfg(source=str(root), preset="laion", similarity_range=[0.3, 1.0]),
                       tokenizer=byte_tok, image_size=32, text_ctx=64)
    assert keys_and_captions(ds) == {"00000/000000000.jpg": "caption 0",
                                     "00000/000000003.jpg": "json caption 3"}
    assert ds.stats()["rejected"] == {"similarity": 1, "nsfw": 1}
