"""kohya's regularisation images (data.reg_source, is_reg subsets): read per epoch as often as
the training images with repeats (kohya's matching), flagged for train.prior_loss_weight, and
counted alike by epochs, ranks, validation.holdout, resume and ``dataset inspect``."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from data_helpers import encode, photo, replays_after_resume
from typer.testing import CliRunner

from glidectl.cli.app import build_app, main
from glidectl.data import build_dataset
from glidectl.data.kohya import reg_draws
from glidectl.data.source_api import source_notes
from glidectl.training import validation as val
from glidectl.training.data_stream import DataStream

TRAIN = ["3_sks dog/a.png", "3_sks dog/b.png"]  # 6 reads per epoch
REG = ["1_dog/r0.png", "1_dog/r1.png", "1_dog/r2.png", "1_dog/r3.png"]  # 4 reads of their own
# 4 < 6: a second pass adds one read to the first two
EPOCH = {"3_sks dog/a.png": 3, "3_sks dog/b.png": 3, "reg:1_dog/r0.png": 2,
         "reg:1_dog/r1.png": 2, "reg:1_dog/r2.png": 1, "reg:1_dog/r3.png": 1}


def images(root, names):
    for i, rel in enumerate(names):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(encode(photo(40, 36, i), "PNG"))
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("reg")
    return images(base / "train", TRAIN), images(base / "regs", REG)


@pytest.fixture
def cfg(folders, data_cfg):
    train, regs = folders
    return data_cfg(source=str(train), reg_source=str(regs))


def dataset(cfg, tok, **kw):
    return build_dataset(cfg, tokenizer=tok, image_size=32, text_ctx=32, seed=3, **kw)


def kohya_loop(train_reads, repeats):
    """kohya's own loop (sd-scripts library/train_util.py, DreamBoothDataset.__init__)."""
    counts, n, first = [0] * len(repeats), 0, True
    while n < train_reads:
        for i, r in enumerate(repeats):
            if first:
                counts[i], n = r, n + r
            else:
                counts[i], n = counts[i] + 1, n + 1
            if n >= train_reads:
                break
        first = False
    return counts


@pytest.mark.parametrize("train_reads, repeats", [
    (6, [1, 1, 1, 1]), (3, [2, 2, 2]), (5, [3, 1, 2]), (10, [1] * 3), (0, [1, 2]), (7, [2]),
    (1000, [3, 1]), (4, [1, 1, 1, 1]),
])
def test_reg_draws_follow_kohyas_matching(train_reads, repeats):
    assert reg_draws(train_reads, repeats) == kohya_loop(train_reads, repeats)


def test_reg_images_are_read_as_often_as_the_training_images_and_flagged(cfg, byte_tok):
    ds = dataset(cfg, byte_tok)
    epoch = list(ds)
    assert Counter(s["key"] for s in epoch) == EPOCH
    assert all(s["is_reg"] is s["key"].startswith("reg:") for s in epoch)
    assert {s["caption"] for s in epoch if s["is_reg"]} == {"dog"}  # the folder's class
    assert ds.num_samples == len(epoch) == 12
    assert DataStream(ds, batch_size=2).steps_per_epoch(grad_accum=1) == 6  # train.epochs


def test_more_reg_images_than_training_reads_are_cut_with_a_note(tmp_path, folders, data_cfg,
                                                                 byte_tok):
    regs = images(tmp_path / "regs", [r.replace("1_", "2_") for r in REG])  # 8 reads > 6
    ds = dataset(data_cfg(source=str(folders[0]), reg_source=str(regs)), byte_tok)
    seen = Counter(s["key"] for s in ds)
    assert [seen[f"reg:2_dog/r{i}.png"] for i in range(4)] == [2, 2, 2, 0]
    note = source_notes(ds.source)[-1]  # after the training folder's layout note
    assert note.startswith(f"data.reg_source {str(regs)!r}: 1 of 4 regularisation images are "
                           "not read: their 8 reads with repeats are more than the 6 training")


def test_two_ranks_share_the_reg_draws_without_overlap(cfg, byte_tok):
    taken = [Counter(s["key"] for s in dataset(cfg, byte_tok, rank=r, world_size=2))
             for r in range(2)]
    assert sum(taken[0].values()) == sum(taken[1].values()) == 6
    assert taken[0] + taken[1] == EPOCH


def test_holdout_takes_training_images_and_the_epoch_counts_the_rest(cfg, byte_tok):
    keys = {s["key"] for s in val.first_samples(dataset(cfg, byte_tok, train=False), 1)}
    assert keys == {"3_sks dog/a.png"}  # training images come first, reg images last
    train = val.WithoutKeys(dataset(cfg, byte_tok), keys)
    seen = Counter(s["key"] for s in train)
    assert seen == {k: n for k, n in EPOCH.items() if k not in keys}
    assert train.num_samples == sum(seen.values()) == 9


def test_resume_inside_an_epoch_with_reg_images_is_bitwise(cfg, byte_tok):
    straight, _ = replays_after_resume(
        lambda: DataStream(dataset(cfg, byte_tok), batch_size=2, seed=3))
    assert straight.epoch == 1


REG_CONFIG = """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "train"
  num_repeats = 2
  class_tokens = "sks dog"

  [[datasets.subsets]]
  image_dir = "regs"
  is_reg = true
  class_tokens = "dog"

[[datasets]]
  [[datasets.subsets]]
  image_dir = "train"
  num_repeats = 1
  class_tokens = "sks dog"

  [[datasets.subsets]]
  image_dir = "regs"
  is_reg = true
  class_tokens = "dog"
"""


@pytest.fixture(scope="module")
def reg_toml(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg_config")
    images(root / "train", ["a.png", "b.png"])
    images(root / "regs", ["r0.png", "r1.png", "r2.png"])
    (root / "dataset.toml").write_text(REG_CONFIG)
    return root / "dataset.toml"


def test_is_reg_subsets_are_matched_per_dataset(reg_toml, data_cfg, byte_tok):
    ds = dataset(data_cfg(source=str(reg_toml)), byte_tok)
    epoch = list(ds)
    # dataset 1: 4 training reads, 3 reg images → 2, 1, 1; dataset 2: 2 reads → 1, 1, 0
    assert Counter(s["key"] for s in epoch) == {
        "1/a.png": 2, "1/b.png": 2, "2/r0.png": 2, "2/r1.png": 1, "2/r2.png": 1,
        "3/a.png": 1, "3/b.png": 1, "4/r0.png": 1, "4/r1.png": 1}
    assert {s["key"][0] for s in epoch if s["is_reg"]} == {"2", "4"}
    assert ds.num_samples == len(epoch) == 12
    assert any(n.startswith(f"{str(reg_toml)!r}: dataset 2: 1 of 3 regularisation images are "
                            "not read") for n in source_notes(ds.source))
    assert not any("is_reg" in n for n in source_notes(ds.source))  # no longer "unapplied"


def test_inspect_shows_reg_images_and_their_draws(reg_toml, folders):
    run = CliRunner().invoke(build_app(), ["dataset", "inspect", str(reg_toml), "--json",
                                           "--tokenizer", "byte"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.output)
    assert report["samples_per_epoch"] == 12
    assert [(r["images"], r["per_epoch"], r["reg"]) for r in report["kohya_folders"]] == [
        (2, 4, False), (3, 4, True), (2, 2, False), (3, 2, True)]
    train, regs = folders
    run = CliRunner().invoke(build_app(), ["dataset", "inspect", str(train), "--tokenizer",
                                           "byte", "--set", f"data.reg_source={regs}"])
    assert run.exit_code == 0, run.output
    head = next(line for line in run.output.splitlines() if "┃ folder" in line)
    row = next(line for line in run.output.splitlines() if "1_dog" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells == ["1_dog", "1", "4", "6", "4", "yes"]  # repeats, images, per epoch, …
    assert [c.strip() for c in head.split("┃")[1:-1]][-1] == "reg"


@pytest.mark.parametrize("make, words", [
    (lambda root: root / "nowhere", "is not a folder; give kohya's reg_data_dir"),
    (lambda root: (root / "empty" / "1_dog").mkdir(parents=True) or root / "empty",
     "holds no images"),
    (lambda root: images(root / "flat", ["r0.png"]), "does not hold only 'N_class' folders"),
])
def test_a_bad_reg_folder_is_one_sentence_and_exit_2(tmp_path, folders, make, words, capsys):
    reg = make(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", str(folders[0]), "--tokenizer", "byte",
              "--set", f"data.reg_source={reg}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: data.reg_source {str(reg)!r}") and words in err
    assert err.count("\n") == 1


def test_an_is_reg_subset_without_images_is_one_sentence_and_exit_2(tmp_path, capsys):
    images(tmp_path / "train", ["a.png"])
    (tmp_path / "regs").mkdir()
    toml = tmp_path / "dataset.toml"
    toml.write_text("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'train'\n"
                    "  [[datasets.subsets]]\n  image_dir = 'regs'\n  is_reg = true\n")
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", str(toml), "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "dataset 1, subset 2: the is_reg subset's image_dir 'regs' holds no images" in err
    assert err.count("\n") == 1
