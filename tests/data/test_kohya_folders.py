"""kohya's DreamBooth layout (``N_words`` folders): N repeats per epoch, folder-name captions
for uncaptioned images, 0_ folders left out, and everything downstream (epoch length,
held-out split, ranks, resume) counting repeats."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice

import pytest
from data_helpers import encode, photo, replays_after_resume
from typer.testing import CliRunner

from glidectl.cli.app import build_app, main
from glidectl.config import GlideConfig
from glidectl.data import build_dataset
from glidectl.data.folder import FolderSource
from glidectl.data.records import IMAGE_EXTENSIONS
from glidectl.data.source_api import source_notes
from glidectl.data.stats import RejectionCounter, no_valid_data_error
from glidectl.training import validation as val
from glidectl.training.data_stream import DataStream
from glidectl.training.guards import NonFiniteGuard
from glidectl.training.metrics import add_counts, data_counts, dataset_counts, skipped_note
from glidectl.training.state import TrainState

# image → its own caption (None: none, so it takes the folder's words)
LAYOUT = {
    "3_sks dog/a.png": "a photo of sks dog\nsks dog on grass",
    "3_sks dog/b.png": None,
    "3_sks dog/c.png": None,
    "3_sks dog/deep/z.png": None,  # below the N_words folder: not read, as kohya
    "1_dog/d.png": "a dog",
    "1_dog/e.png": None,  # captioned by the metadata.jsonl at the top
    "1_dog/f.png": None,
    "0_reg/g.png": None,  # count 0: left out
}
EPOCH = {"3_sks dog/a.png": 3, "3_sks dog/b.png": 3, "3_sks dog/c.png": 3,
         "1_dog/d.png": 1, "1_dog/e.png": 1, "1_dog/f.png": 1}


def write_layout(root, layout=LAYOUT):
    for i, (rel, caption) in enumerate(layout.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(photo(40, 36, i), "PNG"))
        if caption is not None:
            path.with_suffix(".txt").write_text(caption)
    return root


@pytest.fixture(scope="module")
def kohya_root(tmp_path_factory):
    root = write_layout(tmp_path_factory.mktemp("kohya") / "train")
    (root / "metadata.jsonl").write_text(
        json.dumps({"file_name": "1_dog/e.png", "text": "a dog from metadata"}) + "\n")
    return root


@pytest.fixture
def cfg(kohya_root, data_cfg):
    return data_cfg(source=str(kohya_root), flip=True, crop_scale=[0.5, 1.0])


def dataset(cfg, tok, **kw):
    return build_dataset(cfg, tokenizer=tok, image_size=32, text_ctx=32, seed=3, **kw)


def test_each_image_is_read_its_folders_count_per_epoch(cfg, byte_tok):
    ds = dataset(cfg, byte_tok)
    epoch = list(ds)
    assert Counter(s["key"] for s in epoch) == EPOCH
    assert ds.num_samples == len(epoch) == 12
    stream = DataStream(ds, batch_size=2)
    assert stream.steps_per_epoch(grad_accum=1) == 6
    assert ds.stats()["accepted"] == 12
    # each repeat is its own draw: crop and flip, as two epochs would be
    repeats = [s for s in epoch if s["key"] == "3_sks dog/a.png"]
    assert len({s["image"].numpy().tobytes() for s in repeats}) == 3


def test_uncaptioned_images_take_the_folders_words_and_captioned_ones_keep_theirs(
        cfg, byte_tok):
    captions = {s["key"]: s["caption"] for s in dataset(cfg, byte_tok, train=False)}
    assert captions == {"3_sks dog/a.png": "a photo of sks dog", "3_sks dog/b.png": "sks dog",
                        "3_sks dog/c.png": "sks dog", "1_dog/d.png": "a dog",
                        "1_dog/e.png": "a dog from metadata", "1_dog/f.png": "dog"}
    # kohya's read_caption trains a caption file's first line (a random one was picked for
    # each repeat, so 1 read in 2 trained the second line: tags, or a note)
    lines = {s["caption"] for _ in range(4) for s in dataset(cfg, byte_tok)
             if s["key"] == "3_sks dog/a.png"}
    assert lines == {"a photo of sks dog"}


def test_a_blank_first_caption_line_trains_the_empty_caption_as_kohya_does(tmp_path,
                                                                           data_cfg, byte_tok):
    root = write_layout(tmp_path / "t", {"2_dog/a.png": "\nsecond line", "2_dog/b.png": ""})
    captions = {s["key"]: s["caption"] for s in dataset(data_cfg(source=str(root)), byte_tok,
                                                        train=False)}
    assert captions == {"2_dog/a.png": ""}  # b.png's empty file: refused, as before


def test_evaluation_reads_each_image_once_and_a_note_says_what_happened(cfg, byte_tok,
                                                                       kohya_root):
    ds = dataset(cfg, byte_tok, train=False)
    assert sorted(s["key"] for s in ds) == sorted(EPOCH)
    assert ds.num_samples == 6
    src = FolderSource.scan(kohya_root)
    assert [(f.name, f.repeats, f.images, f.named, f.deeper) for f in src.kohya.values()] == [
        ("0_reg", 0, 1, 0, 0), ("1_dog", 1, 3, 1, 0), ("3_sks dog", 3, 3, 2, 1)]
    read, deep, left = src.notes()
    assert "is read in kohya's layout" in read and "'3_sks dog' ×3" in read
    assert "3 images without a caption of their own are captioned with the folder's" in read
    assert "data.kohya_folders = false" in read
    assert deep.startswith("1 image in sub-folders of '3_sks dog' under ")
    assert "is not read: kohya's trainers read only the images directly in each" in deep
    assert left.startswith("1 image in '0_reg' under ") and "is left out" in left


def test_kohya_folders_false_reads_every_image_once_as_any_folder(cfg, byte_tok):
    cfg.kohya_folders = False
    ds = dataset(cfg, byte_tok)
    got = {s["key"]: s["caption"] for s in ds}
    assert got == {"3_sks dog/a.png": got["3_sks dog/a.png"], "1_dog/d.png": "a dog",
                   "1_dog/e.png": "a dog from metadata"}
    assert ds.stats()["rejected"] == {"missing_caption": 5}  # 0_reg's and deep/z.png too
    assert ds.num_samples == 8 and ds.source.notes() == []


def test_held_out_images_leave_training_with_all_their_repeats(cfg, byte_tok):
    glide = GlideConfig()
    glide.data, glide.validation.holdout = cfg, 5
    held = val.load_samples(glide, dict(tokenizer=byte_tok, image_size=32, text_ctx=32))
    keys = [s["key"] for s in held]
    assert len(set(keys)) == 5  # five images, never one image twice
    train = val.WithoutKeys(dataset(cfg, byte_tok), set(keys))
    seen = Counter(s["key"] for s in train)
    assert not set(seen) & set(keys)
    assert seen == {k: n for k, n in EPOCH.items() if k not in keys}
    assert train.num_samples == sum(seen.values())


def test_two_ranks_share_the_repeated_epoch_without_overlap(cfg, byte_tok):
    ranks = [dataset(cfg, byte_tok, rank=r, world_size=2) for r in range(2)]
    taken = [[s["key"] for s in ds] for ds in ranks]
    assert [len(t) for t in taken] == [6, 6]  # every (image, repeat) read by one rank once
    assert Counter(taken[0]) + Counter(taken[1]) == EPOCH
    assert taken[0] != taken[1]


def test_resume_inside_a_repeated_epoch_is_bitwise(cfg, byte_tok):
    _, resumed = replays_after_resume(
        lambda: DataStream(dataset(cfg, byte_tok), batch_size=2, seed=3))
    assert resumed.epoch == 1


def test_a_rejected_image_counts_once_an_epoch_and_its_repeats_apart(tmp_path, data_cfg,
                                                                     byte_tok):
    root = write_layout(tmp_path / "t", dict.fromkeys(["4_cat/ok.png", "4_cat/bad.png",
                                                       "4_cat/worse.png", "1_dog/bad.png"]))
    for name in ("4_cat/bad", "4_cat/worse", "1_dog/bad"):
        (root / f"{name}.png").write_bytes(b"not a png")
    ds = dataset(data_cfg(source=str(root)), byte_tok)
    assert len(list(ds)) == 4
    stats = ds.stats()
    assert stats["rejected"] == {"unreadable_image": 3}  # three images, not nine reads
    assert stats["repeated"] == {"unreadable_image": 6}  # 4_cat's two images, 3 more reads
    assert sorted(stats["examples"]["unreadable_image"]) == [
        "1_dog/bad.png", "4_cat/bad.png", "4_cat/worse.png"]
    ranks = [dataset(data_cfg(source=str(root)), byte_tok, rank=r, world_size=2)
             for r in range(2)]
    counts = [(list(ds), ds.stats())[1] for ds in ranks]  # the repeats spread over ranks
    assert sum(c["rejected"]["unreadable_image"] for c in counts) == 3
    assert sum(c["repeated"].get("unreadable_image", 0) for c in counts) == 6
    totals = add_counts(*map(dataset_counts, ranks))
    line = skipped_note([data_counts(totals)])
    assert line == ("; data: 3 samples skipped (unreadable_image 3), 9 of 13 reads with their "
                    "repeats; glidectl dataset inspect lists them")  # kohya's or OneTrainer's
    one = {**data_counts(totals), "data_skipped": 1, "data_skipped_unreadable_image": 1}
    assert skipped_note([one]).startswith("; data: 1 sample skipped (unreadable_image 1), ")
    saved = TrainState(DataStream(ranks[0], batch_size=2), NonFiniteGuard(3))
    saved.data_total = totals
    resumed = TrainState(DataStream(ranks[0], batch_size=2), NonFiniteGuard(3))
    resumed.load_state_dict(saved.state_dict())
    assert resumed.data_base == totals  # a resume goes on from both counts


@pytest.mark.parametrize("layout, kohya", [
    ({"3_cat/a.png": None, "misc/b.png": "b"}, False),  # not only N_words folders
    ({"3_cat/a.png": None, "top.png": "top"}, False),  # images beside them
    ({"3_cat/a.png": None}, True),
])
def test_only_a_folder_of_nothing_but_n_words_folders_is_kohyas_layout(tmp_path, layout,
                                                                       kohya):
    src = FolderSource.scan(write_layout(tmp_path / "t", layout))
    assert bool(src.kohya) is kohya
    assert src.num_samples == len(layout)
    notes = src.notes()
    if "top.png" in layout:
        assert notes == [f"{str(tmp_path / 't')!r} has kohya-style folders ('3_cat') but it "
                         "also holds images at its top, so it is read as an ordinary folder "
                         "(each image once, no captions from folder names); move those images "
                         "into an "
                         "'N_words' folder to read it in kohya's layout."]
    if "misc/b.png" in layout:  # a logs/ beside a 5_zwx person/ turned the layout off unsaid
        assert notes == [f"{str(tmp_path / 't')!r} has kohya-style folders ('3_cat') but "
                         "also 'misc', not named 'N_words' (kohya's trainers skip such), so "
                         "it is read as an ordinary folder (each image once, no captions from "
                         "folder names); move it out to read it in kohya's layout."]
    assert notes


def test_a_count_without_words_reads_the_folder_and_trains_on_the_empty_caption(
        tmp_path, data_cfg, byte_tok):
    """kohya reads ``2_`` as 2 repeats with class tokens "": an image without a caption of
    its own trains on the empty caption."""
    root = write_layout(tmp_path / "t", {"2_/a.png": None, "2_/b.png": "a cat",
                                         "1_dog/c.png": None})
    ds = dataset(data_cfg(source=str(root)), byte_tok)
    got = sorted((s["key"], s["caption"]) for s in ds)
    assert got == [("1_dog/c.png", "dog"), ("2_/a.png", ""), ("2_/a.png", ""),
                   ("2_/b.png", "a cat"), ("2_/b.png", "a cat")]
    assert ds.stats()["rejected"] == {}
    wordless = source_notes(ds.source)[1]
    assert wordless.startswith("1 image without a caption of its own in '2_' under ")
    assert "trains on the empty caption, as in kohya's trainers" in wordless
    assert wordless.endswith("name it like '10_sks dog' to caption it.")


@pytest.mark.parametrize("name", ["1001_x", "9" * 200 + "_x"])
def test_a_count_past_1000_reads_the_folder_as_an_ordinary_one(tmp_path, name):
    """``2023_trip`` is a year, not 2023 repeats: such a folder is read as any folder (as
    before kohya's layout was read), and a note says why."""
    root = write_layout(tmp_path / "t", {f"{name}/a.png": None, "1_b/b.png": None})
    source = FolderSource.scan(root)
    assert source.num_samples == 2 and not source.kohya
    assert source.repeats(f"{name}/a.png") == 1
    [note] = source_notes(source)
    assert f"{name!r} counts past 1000, more likely a year or a name than repeats" in note
    assert "read as an ordinary folder" in note


def test_year_named_folders_are_inspected_as_an_ordinary_folder(tmp_path, capsys):
    root = write_layout(tmp_path / "t", {"2023_trip/a.png": "a beach",
                                         "2024_zoo/b.png": "a giraffe"})
    main_exit = None
    try:
        main(["dataset", "inspect", str(root), "--json", "--tokenizer", "byte"])
    except SystemExit as done:
        main_exit = done.code
    assert main_exit in (None, 0)
    report = json.loads(capsys.readouterr().out)
    assert report["total_samples"] == 2 and report["samples_per_epoch"] is None
    assert "'2023_trip', '2024_zoo'" in " ".join(report["notes"])


def test_a_project_folder_with_kohya_layouts_below_it_says_which_to_point_at(tmp_path):
    """kohya_ss's project: img/10_sks dog, reg/1_dog; the project itself is no layout."""
    root = write_layout(tmp_path / "proj", {"img/3_sks dog/a.png": "sks dog",
                                            "reg/1_dog/b.png": None, "log/2023_trip/c.png": None})
    source = FolderSource.scan(root)
    assert not source.kohya and source.repeats("img/3_sks dog/a.png") == 1
    assert source_notes(source) == [
        f"{str(root)!r} is read as an ordinary folder (each image once, no captions from folder "
        "names), but 'img', 'reg' below it hold only 'N_words' folders, kohya's layout; point "
        f"data.source at the training one ({str(root / 'img')!r}) and data.reg_source at the "
        "regularisation one to read it as kohya's trainers do."]
    assert source_notes(FolderSource.scan(root, kohya=False)) == []


def test_images_only_below_the_n_words_folders_are_one_error_naming_them(tmp_path, capsys):
    root = write_layout(tmp_path / "t", {"5_cat/sub/a.png": None})
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", str(root), "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == (f"Error: Image folder {str(root)!r} holds no images "
                   f"({' '.join(IMAGE_EXTENSIONS)}); point data.source at a folder with images. "
                   f"1 image in sub-folders of '5_cat' under {str(root)!r} is not read: kohya's "
                   "trainers read only the images directly in each 'N_words' folder; move "
                   "them up, or into an 'N_words' folder of their own.\n")


def test_inspect_shows_repeats_images_and_folder_captions_per_folder(kohya_root):
    run = CliRunner().invoke(build_app(), ["dataset", "inspect", str(kohya_root), "--json",
                                           "--tokenizer", "byte"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.output)
    assert report["total_samples"] == 6 and report["samples_per_epoch"] == 12
    assert report["scanned"] == report["valid"] == 6  # each image scanned once
    assert report["kohya_folders"][2] == {"folder": "3_sks dog", "repeats": 3, "images": 3,
                                          "per_epoch": 9, "class_captions": 2, "reg": False}
    table = CliRunner().invoke(build_app(), ["dataset", "inspect", str(kohya_root),
                                             "--tokenizer", "byte"]).output
    assert "samples per epoch" in table and "kohya folders" in table


def test_a_worker_given_only_later_repeats_of_bad_images_names_their_reason():
    worker = RejectionCounter()
    for _ in range(3):
        worker.reject("too_small", "4_cat/tiny.png", again=True)
    message = str(no_valid_data_error("train", worker))
    assert "3 rejected (too_small: 3)" in message and "yielded no samples" not in message


def test_rejection_examples_name_a_repeated_key_once():
    """A worker's three example slots are not spent on one image's repeats."""
    worker = RejectionCounter()
    for key in ("4_cat/bad.png", "4_cat/bad.png", "4_cat/bad.png", "4_cat/worse.png"):
        worker.reject("unreadable_image", key)
    assert worker.examples == {"unreadable_image": ["4_cat/bad.png", "4_cat/worse.png"]}
    other = RejectionCounter()
    other.reject("unreadable_image", "4_cat/worse.png")
    merged = RejectionCounter.merged([worker, other])
    assert merged.examples["unreadable_image"] == ["4_cat/bad.png", "4_cat/worse.png"]


def test_resampled_streams_draw_images_as_often_as_their_repeats_say(cfg, byte_tok):
    cfg.resampled = True
    keys = [s["key"] for s in islice(dataset(cfg, byte_tok), 240)]
    share = sum(k.startswith("3_sks dog/") for k in keys) / len(keys)
    assert 0.65 < share < 0.85  # 9 of every 12 reads; 0.5 if repeats were ignored


def test_a_folder_named_as_the_caption_file_is_no_folder_caption(tmp_path):
    """dataset inspect counted an image whose caption path is a folder ('b.txt/') as
    captioned by its folder's words, while reading it rejects the image as unreadable."""
    root = tmp_path / "train"
    (root / "2_sks dog" / "b.txt").mkdir(parents=True)
    for name in ("a", "b"):
        photo(32, 32).save(root / "2_sks dog" / f"{name}.png")
    run = CliRunner().invoke(build_app(), ["dataset", "inspect", str(root), "--json",
                                           "--tokenizer", "byte"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.output)
    assert report["kohya_folders"][0]["class_captions"] == 1  # a.png only
    assert report["rejected"] == {"unreadable_caption": 1}
