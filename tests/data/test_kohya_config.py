"""kohya-ss sd-scripts' dataset config as data.source: subsets with their repeats, captions
and caption knobs (seeded per draw, so resume stays exact), unapplied keys named, bad files
one sentence."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import torch
from data_helpers import encode, photo, replays_after_resume
from typer.testing import CliRunner

from glidectl.cli.app import build_app, main
from glidectl.data import build_dataset
from glidectl.data.kohya_config import read_dataset_config
from glidectl.data.kohya_source import KohyaConfigSource
from glidectl.data.sample_rules import SampleRules
from glidectl.data.source_api import source_notes
from glidectl.data.sources import source_type
from glidectl.errors import GlidectlError
from glidectl.training.data_stream import DataStream, collate

CONFIG = """
[general]
caption_extension = ".txt"
shuffle_caption = true
keep_tokens = 1
resolution = 512
color_aug = true

[[datasets]]
batch_size = 4
num_repeats = 2

  [[datasets.subsets]]
  image_dir = "dog"
  class_tokens = "sks dog"
  num_repeats = 3

  [[datasets.subsets]]
  image_dir = "cat"
  caption_extension = ".caption"
  keep_tokens = 2

[[datasets]]
  [[datasets.subsets]]
  image_dir = "dog"
  class_tokens = "dog"
  shuffle_caption = false
"""
# image → its caption file (name, text); None: none
IMAGES = {
    "dog/a.png": ("a.txt", "sks dog, running, grass, sunny day, photo"),
    "dog/b.png": None,
    "cat/c.png": ("c.caption", "a cat, whiskers, sofa, orange"),
    "cat/d.png": ("d.txt", "read by no subset"),  # .txt, but this subset reads .caption
}


def write(root, config=CONFIG, images=IMAGES):
    root.mkdir(parents=True, exist_ok=True)
    for i, (rel, caption) in enumerate(images.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(photo(40, 36, i), "PNG"))
        if caption is not None:
            (path.parent / caption[0]).write_text(caption[1])
    (root / "dataset.toml").write_text(config)
    return root / "dataset.toml"


@pytest.fixture(scope="module")
def toml(tmp_path_factory):
    return write(tmp_path_factory.mktemp("kohya_config"))


@pytest.fixture
def cfg(toml, data_cfg):
    return data_cfg(source=str(toml))


def dataset(cfg, tok, **kw):
    return build_dataset(cfg, tokenizer=tok, image_size=32, text_ctx=64, seed=5, **kw)


def test_two_datasets_with_general_defaults_give_units_repeats_and_captions(cfg, byte_tok):
    ds = dataset(cfg, byte_tok)
    assert ds.source.kind == "kohya"
    epoch = Counter(s["key"] for s in ds)
    # dog ×3 (its own), cat ×2 (its dataset's), the second dataset's dog ×1 (kohya's default)
    assert epoch == {"1/a.png": 3, "1/b.png": 3, "2/c.png": 2, "2/d.png": 2, "3/a.png": 1,
                     "3/b.png": 1}
    assert ds.num_samples == 12 and ds.stats()["rejected"] == {}
    once = dataset(cfg, byte_tok, train=False)
    captions = {s["key"]: s["caption"] for s in once}
    assert captions == {
        "1/a.png": "sks dog, running, grass, sunny day, photo", "1/b.png": "sks dog",
        "2/c.png": "a cat, whiskers, sofa, orange", "3/a.png": captions["1/a.png"],
        "3/b.png": "dog",
        "2/d.png": ""}  # no .caption file, no class_tokens: the empty caption, as kohya
    assert once.stats()["rejected"] == {}


def test_shuffled_captions_keep_their_first_tags_and_repeat_per_seed_epoch_and_position(
        cfg, byte_tok):
    def captions(epoch):
        ds = dataset(cfg, byte_tok)
        ds.set_epoch(epoch)
        return [(s["key"], s["caption"]) for s in ds]

    first = captions(0)
    assert captions(0) == first  # the same seed, epoch and position: the same draw
    assert captions(1) != first
    dog = [c for k, c in first + captions(1) if k == "1/a.png"]
    assert all(c.startswith("sks dog, ") for c in dog)  # keep_tokens = 1
    assert all(sorted(c.split(", ")) == sorted(dog[0].split(", ")) for c in dog)
    assert len(set(dog)) > 1  # the other four tags shuffled per draw
    cat = {c for k, c in first + captions(1) if k == "2/c.png"}
    assert all(c.startswith("a cat, whiskers, ") for c in cat)  # keep_tokens = 2
    assert {c for k, c in first if k == "3/a.png"} == {dog[0].split(", ")[0] + ", running, "
                                                       "grass, sunny day, photo"}  # no shuffle


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_caption_and_tag_dropout_drop_at_their_rates(rate):
    rules = SampleRules(dropout=rate, tag_dropout=rate, keep_tokens=1)
    draws = [random.Random(f"augment:0:0:0:{i}") for i in range(400)]
    dropped = sum(rules.drops(rng) for rng in draws) / len(draws)
    assert abs(dropped - rate) < 0.07
    tags = [rules.caption("keep, a, b, c, d, e", rng, train=True).split(", ") for rng in draws]
    assert all(t[0] == "keep" for t in tags)
    kept = sum(len(t) - 1 for t in tags) / (5 * len(tags))
    assert abs(kept - (1 - rate)) < 0.05
    assert rules.caption("keep, a, b, c, d, e", draws[0], train=False) == "keep, a, b, c, d, e"


def test_caption_dropout_and_uncond_p_are_two_independent_draws(tmp_path, data_cfg, byte_tok):
    toml = write(tmp_path, CONFIG.replace('keep_tokens = 1\n', 'caption_dropout_rate = 0.5\n'))
    cfg = data_cfg(source=str(toml), resampled=True, uncond_p=0.2)
    empty = [s["caption"] == "" for s in islice(dataset(cfg, byte_tok), 300)
             if s["key"] != "2/d.png"]  # uncaptioned: always ""
    assert abs(sum(empty) / len(empty) - 0.6) < 0.08  # 1 - 0.5 * 0.8
    note = source_notes(dataset(cfg, byte_tok).source)[-1]
    assert "adds to data.uncond_p (0.2)" in note and "empty caption 60% of the time" in note
    assert not any(s["caption"] == "" for s in dataset(cfg, byte_tok, train=False)
                   if s["key"] != "2/d.png")  # uncaptioned: "" as in kohya


def test_kohya_caption_knobs_as_its_readme_describes():
    rng = random.Random(0)
    rules = SampleRules(keep_separator="|||", shuffle=True, secondary_separator=";;;")
    for _ in range(5):
        got = rules.caption("1girl, miku ||| stage, mic, sky;;;cloud ||| best quality", rng,
                            train=True).split(", ")
        assert got[:2] == ["1girl", "miku"] and got[-1] == "best quality"
        assert sorted(got[2:-1]) == ["mic", "sky,cloud", "stage"]
    assert rules.caption("a ||| b, c ||| d", rng, train=False) == "a, b, c, d"
    wild = SampleRules(any_line=True, prefix="photo of", suffix="{{4k}}")
    assert {wild.caption(wild.line("a {red|blue} car", rng), random.Random(i), False)
            for i in range(20)} == {"photo of a red car {4k}", "photo of a blue car {4k}"}
    assert SampleRules().line("first\nsecond", rng) == "first"  # kohya reads the first line
    # kohya's process_caption adds the prefix and suffix before it picks a line
    assert {wild.line("first\nsecond", random.Random(i)) for i in range(20)} == {
        "photo of first", "second {{4k}}"}


def test_a_brace_inside_a_wildcard_is_read_as_kohyas_pattern_reads_it():
    """kohya's ``process_caption`` replaces ``\\{([^}]+)\\}``: a choice runs from a "{" to the
    next "}", a "{" inside it being part of a choice; glidectl's pattern skipped such a
    group and replaced the inner one ("{a|b d}")."""
    wild = SampleRules(any_line=True)
    got = {wild.caption("{a|{b|c} d}", random.Random(i), False) for i in range(40)}
    assert got == {"a d}", "{b d}", "c d}"}
    # escaped braces ({{ and }}) stay literal, as in kohya
    assert wild.caption("{{x}} {y|y} {{z|w}}", random.Random(0), False) == "{x} y {z|w}"


def test_empty_tags_count_and_stay_as_kohya_and_mgds_split_them():
    """kohya's process_caption (without keep_tokens_separator) and mgds' ShuffleTags and
    DropTags split a caption at its separator and strip each tag, empty ones kept: they
    count towards keep_tokens / keep_tags_count and are shuffled and joined with the rest.
    glidectl dropped them, so with "sks, , dog, red" and keep_tokens = 2 it held "dog" in
    place where kohya holds "sks" and the empty tag, and shuffles "dog"."""
    rules = SampleRules(shuffle=True, keep_tokens=2)
    got = {rules.caption("sks, , dog, red,", random.Random(i), train=True) for i in range(40)}
    assert all(c.startswith("sks, , ") for c in got)
    assert {tuple(sorted(c.split(", ")[2:])) for c in got} == {("", "dog", "red")}
    assert len(got) > 1  # "dog" is shuffled too
    kept_apart = SampleRules(shuffle=True, keep_separator="|||")  # kohya drops empty ones here
    assert kept_apart.caption("a, , b ||| c,, d", random.Random(0), train=True) in {
        "a, b, c, d", "a, b, d, c"}
    # no shuffle, dropout or warm-up: the caption as written, in both tools
    assert SampleRules().caption("a, , b,", random.Random(0), train=True) == "a, , b,"


@pytest.mark.parametrize("options, caption", [
    # kohya's process_caption splits at keep_tokens_separator only when it shuffles, drops
    # tags or warms up (library/train_util.py); otherwise the caption keeps it as written
    ({}, "a, b ||| c, d ||| e"),
    ({"keep_tokens": 1}, "a, b ||| c, d ||| e"),
    ({"secondary_separator": ";;;"}, "a, b ||| c, d ||| e"),
    ({"tag_dropout": 1.0}, "a, b, e"),
    ({"shuffle": True, "keep_tokens": 3}, None),  # a, b first, e last, c and d in between
    ({"warmup_step": 10}, "a, b, c, d, e"),
])
def test_keep_tokens_separator_stays_in_the_caption_unless_kohya_splits_it(options, caption):
    rules = SampleRules(keep_separator="|||", **options)
    got = rules.caption("a, b ||| c, d ||| e", random.Random(0), train=True)
    assert got == caption if caption is not None else got in {"a, b, c, d, e",
                                                              "a, b, d, c, e"}
    assert SampleRules(keep_separator="|||", secondary_separator=";;;").caption(
        "a;;;x ||| b", random.Random(0), train=True) == "a,x ||| b"


def test_a_subset_that_neither_shuffles_nor_drops_trains_on_its_keep_tokens_separator(
        tmp_path, data_cfg, byte_tok):
    toml = write(tmp_path, """
[general]
keep_tokens_separator = "|||"
caption_extension = ".txt"
[[datasets]]
  [[datasets.subsets]]
  image_dir = "dog"
  [[datasets.subsets]]
  image_dir = "cat"
  shuffle_caption = true
""", {"dog/a.png": ("a.txt", "sks dog ||| grass, sky"),
      "cat/c.png": ("c.txt", "a cat ||| sofa, rug")})
    ds = dataset(data_cfg(source=str(toml)), byte_tok)
    captions = {s["key"]: s["caption"] for s in ds}
    assert captions["1/a.png"] == "sks dog ||| grass, sky"  # as kohya trains it
    assert captions["2/c.png"] in {"a cat, sofa, rug", "a cat, rug, sofa"}
    note = source_notes(ds.source)[-1]
    assert note == (f"{str(toml)!r}: dataset 1, subset 1: keep_tokens_separator '|||' stays "
                    "in its captions as written, as in kohya's trainers, since it neither "
                    "shuffles (shuffle_caption), drops tags (caption_tag_dropout_rate) nor "
                    "warms up (token_warmup_step); set one of them, or remove the separator "
                    "from the captions.")


def test_flip_aug_and_random_crop_of_a_subset_override_the_data_keys(tmp_path, data_cfg,
                                                                       byte_tok):
    config = CONFIG.replace('  num_repeats = 3\n', '  num_repeats = 3\n  random_crop = false\n'
                            '  flip_aug = false\n  color_aug = false\n')
    cfg = data_cfg(source=str(write(tmp_path, config)), flip=True, crop_scale=[0.5, 1.0])
    images: dict[str, set[bytes]] = {}
    for s in dataset(cfg, byte_tok):
        images.setdefault(s["key"], set()).add(s["image"].numpy().tobytes())
    assert len(images["1/a.png"]) == 1  # centre crop, never flipped: each repeat alike
    assert len(images["2/c.png"]) == 2  # data.flip and data.crop_scale: each repeat its own


def test_caption_dropout_every_n_epochs_drops_every_caption_of_kohyas_nth_epochs(
        tmp_path, data_cfg, byte_tok):
    """kohya counts epochs from 1 and drops all captions of the subset when epoch % n == 0:
    n = 2 drops data epochs 1 and 3 (kohya's 2 and 4), and only that subset's."""
    config = CONFIG.replace('  class_tokens = "sks dog"\n',
                            '  class_tokens = "sks dog"\n  caption_dropout_every_n_epochs = 2\n')
    cfg = data_cfg(source=str(write(tmp_path, config)))
    for epoch in range(4):
        ds = dataset(cfg, byte_tok)
        ds.set_epoch(epoch)
        empty = {s["key"] for s in ds if s["caption"] == ""}
        assert empty == ({"1/a.png", "1/b.png", "2/d.png"} if epoch % 2 else {"2/d.png"})


def test_caption_dropout_every_n_epochs_under_an_endless_stream_is_warned_about(tmp_path):
    """data.resampled stays in its first epoch, so n > 1 would drop no caption: one note."""
    config = CONFIG.replace('  class_tokens = "sks dog"\n',
                            '  class_tokens = "sks dog"\n  caption_dropout_every_n_epochs = 2\n')
    toml = write(tmp_path, config)
    assert not any("every_n_epochs" in n for n in KohyaConfigSource.open(toml).notes())
    notes = [n for n in KohyaConfigSource.open(toml, resampled=True).notes()
             if "every_n_epochs" in n]
    assert notes == [f"{str(toml)!r}: dataset 1, subset 1: caption_dropout_every_n_epochs "
                     "drops no caption with data.resampled = true, whose endless stream has "
                     "no epochs to count; set data.resampled = false to drop them every n-th "
                     "epoch as kohya does."]


def warmed(ds, batch, step, total_steps):
    """``batch`` with kohya's token warm-up applied at ``step``, as the training loop does."""
    ds.warm_up(batch, step, total_steps)
    return batch


def test_token_warmup_keeps_the_first_tags_after_keep_tokens_until_its_step(tmp_path,
                                                                            data_cfg, byte_tok):
    """kohya: before step W the tags after keep_tokens are cut to floor(step · (n − min) / W)
    + min, W = floor(token_warmup_step · max_train_steps) for a fraction; whole from W on."""
    config = CONFIG.replace("shuffle_caption = true\n",
                            "shuffle_caption = false\ntoken_warmup_step = 0.5\n")
    images = {**IMAGES, "dog/a.png": ("a.txt", "sks dog, running, grass, sunny  day, photo")}
    path = write(tmp_path, config, images)  # the data's spaces collapsed, cut or not
    assert list(read_dataset_config(path).ignored) == ["resolution", "batch_size"]
    ds = dataset(data_cfg(source=str(path)), byte_tok)
    samples = {s["key"]: s for s in ds}
    dog = ["sks dog", "running", "grass", "sunny day", "photo"]  # keep_tokens = 1: n = 4
    cat = ["a cat", "whiskers", "sofa", "orange"]  # its keep_tokens = 2: n = 2
    # 8 steps: W = 4; dog keeps floor(s · 3/4) + 1 of 4: 1, 1, 2, 3; cat floor(s / 4) + 1: 1
    expected = {"1/a.png": [dog[:2], dog[:2], dog[:3], dog[:4], dog, dog],
                "2/c.png": [cat[:3]] * 4 + [cat, cat]}
    for key, tags_by_step in expected.items():
        for step, tags in enumerate(tags_by_step):
            batch = warmed(ds, collate([dict(samples[key])]), step, 8)
            assert batch["caption"] == [", ".join(tags)], (key, step)
            tokens, mask = ds.pipeline.text.encode(", ".join(tags))
            assert torch.equal(batch["tokens"][0], tokens) and torch.equal(batch["mask"][0], mask)
            assert "warmup" not in batch


def test_token_warmup_cuts_before_shuffling(tmp_path, data_cfg, byte_tok):
    """kohya cuts the tags as written, then shuffles what is left; a whole number of steps
    is steps, and token_warmup_min counts the tags after keep_tokens."""
    config = CONFIG.replace("shuffle_caption = true\n", "shuffle_caption = true\n"
                            "token_warmup_step = 4\ntoken_warmup_min = 2\n")
    ds = dataset(data_cfg(source=str(write(tmp_path, config))), byte_tok)
    draws = [s for s in ds if s["key"] == "1/a.png"]
    tags = ["running", "grass", "sunny day", "photo"]
    for step, kept in ((0, 2), (1, 2), (2, 3), (3, 3), (4, 4), (100, 4)):  # ⌊s/2⌋ + 2
        captions = [warmed(ds, collate([dict(d)]), step, 10)["caption"][0] for d in draws]
        for caption in captions:
            head, *rest = caption.split(", ")
            assert head == "sks dog" and sorted(rest) == sorted(tags[:kept]), (step, caption)
    assert len(set(captions)) > 1  # shuffled per draw


def test_resume_inside_the_token_warmup_gives_the_captions_of_a_straight_run(cfg, byte_tok):
    cfg.uncond_p = 0.3
    config = Path(cfg.source).read_text().replace(
        "keep_tokens = 1\n", "keep_tokens = 1\ncaption_tag_dropout_rate = 0.2\n"
        "token_warmup_step = 5\ntoken_warmup_min = 0\n")
    source = Path(cfg.source).with_name("warmup.toml")
    source.write_text(config)
    cfg.source = str(source)

    def run(stream, steps):
        return [warmed(stream.dataset, stream.next(), step, 6) for step in steps]

    def stream():
        return DataStream(dataset(cfg, byte_tok), batch_size=2, seed=5)

    straight = run(stream(), range(6))
    first = stream()
    run(first, range(3))
    resumed = stream()
    resumed.load_state_dict(first.state_dict())
    for expected, got in zip(straight[3:], run(resumed, range(3, 6)), strict=True):
        assert got["caption"] == expected["caption"]
        assert torch.equal(got["tokens"], expected["tokens"])
    uncut = stream()
    whole = [uncut.next()["caption"] for _ in range(6)]
    assert [b["caption"] for b in straight[3:5]] != whole[3:5]  # resumed inside the warm-up
    assert [b["caption"] for b in straight[5:]] == whole[5:]  # and it ends at step 5


def test_color_aug_changes_about_a_third_of_a_subsets_draws(tmp_path, data_cfg, byte_tok):
    config = CONFIG.replace('  num_repeats = 3\n', '  num_repeats = 30\n  random_crop = false\n'
                            '  flip_aug = false\n')  # [general] has color_aug = true
    cfg = data_cfg(source=str(write(tmp_path, config)))
    plain = {s["key"]: s["image"] for s in dataset(cfg, byte_tok, train=False)}["1/a.png"]
    draws = [s["image"] for s in dataset(cfg, byte_tok) if s["key"] == "1/a.png"]
    changed = sum(not torch.equal(image, plain) for image in draws)
    assert len(draws) == 30 and 4 <= changed <= 17  # 0.33 of 30: 10


def test_resume_inside_an_epoch_draws_the_same_captions_and_images(cfg, byte_tok):
    cfg.flip, cfg.uncond_p = True, 0.3

    replays_after_resume(lambda: DataStream(dataset(cfg, byte_tok), batch_size=2, seed=5))


def test_unapplied_keys_are_named_in_one_warning_and_notes_say_what_was_left_out(toml):
    source = KohyaConfigSource.open(toml)
    ignored, other, missing = source_notes(source)
    assert ignored.endswith("glidectl does not apply these kohya keys (what it uses instead in "
                            "brackets): resolution (data.resolution); batch_size "
                            "(train.batch_size).")
    assert "dataset 1, subset 2: 1 image has neither a '.caption' file nor" in missing
    assert "1 image without a '.caption' file has a .txt or .caption file, which " \
        "caption_extension = '.caption' (kohya's default) does not read" in other


def test_every_key_kohyas_schema_accepts_is_accepted_those_not_applied_named(tmp_path):
    """kohya-ss sd-scripts' ConfigSanitizer (library/config_util.py): the keys it accepts
    where it accepts them; glidectl names those it does not apply."""
    toml = write(tmp_path, """
[general]
enable_bucket = true
min_bucket_reso = 256
max_bucket_reso = 1024
bucket_reso_steps = 64
bucket_no_upscale = true
face_crop_aug_range = [2.0, 4.0]
cache_info = true
resize_interpolation = "lanczos"
[general.custom_attributes]
style = "photo"
[[datasets]]
resolution = [512, 768]
batch_size = 2
network_multiplier = 0.5
validation_split = 0.1
validation_seed = 3
skip_image_resolution = 64
  [[datasets.subsets]]
  image_dir = "dog"
  alpha_mask = true
""", {"dog/a.png": ("a.caption", "a dog")})
    notes = read_dataset_config(toml).notes()
    assert len(notes) == 1 and all(key in notes[0] for key in (
        "enable_bucket", "bucket_no_upscale", "face_crop_aug_range", "cache_info",
        "custom_attributes", "resolution", "validation_split", "alpha_mask"))
    assert len(KohyaConfigSource.open(toml).units()) == 1


def test_fine_tuning_subsets_read_kohyas_metadata_json(tmp_path, data_cfg, byte_tok):
    write(tmp_path, """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "ft"
  metadata_file = "ft/meta.json"
  num_repeats = 2
""", {"ft/x.png": None, "ft/y.png": None})
    (tmp_path / "ft" / "meta.json").write_text(json.dumps({
        "x": {"caption": "a red house", "tags": "house, red"}, "y.png": {"tags": "tree"},
        "gone": {"caption": "no such image"}}))
    ds = dataset(data_cfg(source=str(tmp_path / "dataset.toml")), byte_tok, train=False)
    assert {s["key"]: s["caption"] for s in ds} == {"1/x": "a red house,house, red",
                                                    "1/y.png": "tree"}
    assert ds.source.repeats("1/x") == 2
    assert "1 entry name no image file" in source_notes(ds.source)[-1].replace("names", "name")


def test_metadata_keys_are_looked_up_as_kohyas_fine_tuning_dataset_does(tmp_path, data_cfg,
                                                                         byte_tok):
    """With image_dir set, a key written as a path relative to the config's folder
    (``images/sub/a.png``) or a stem in a sub-folder of image_dir (``sub/b``, kohya's
    ``glob_images(image_dir, key)``) was left out with a note, and a stem found a .gif,
    which kohya's trainers never read."""
    write(tmp_path, """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "images"
  metadata_file = "meta.json"
""", {"images/sub/a.png": None, "images/sub/b.jpg": None, "images/c.gif": None,
      "images/d.webp": None})
    (tmp_path / "meta.json").write_text(json.dumps({
        "images/sub/a.png": {"caption": "path"}, "sub/b": {"caption": "sub stem"},
        "c": {"caption": "gif"}, "d": {"caption": "stem"}}))
    ds = dataset(data_cfg(source=str(tmp_path / "dataset.toml")), byte_tok, train=False)
    assert {s["key"]: s["caption"] for s in ds} == {
        "1/images/sub/a.png": "path", "1/sub/b": "sub stem", "1/d": "stem"}
    assert "1 entry names no image file" in source_notes(ds.source)[-1]
    assert "1 with only a .gif file, which kohya does not read" in source_notes(ds.source)[-1]


def test_a_metadata_caption_and_its_tags_are_joined_as_kohya_joins_them(tmp_path, data_cfg,
                                                                        byte_tok):
    """kohya's ``FineTuningDataset`` joins caption and tags with ``caption_separator`` (its
    default ",", not ", ") once, so a multi-line caption's first line, the one trained,
    has no tags; empty tags add nothing, yet an empty caption still takes the separator;
    tags alone stay as written. With ``enable_wildcard`` the tags, newlines made
    separators, follow each non-blank line. glidectl wrote "caption, tags" on each line."""
    write(tmp_path, """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "ft"
  metadata_file = "meta.json"

[[datasets]]
  [[datasets.subsets]]
  image_dir = "ft"
  metadata_file = "meta.json"
  caption_separator = ";"
  enable_wildcard = true
""", {f"ft/{k}.png": None for k in "abcdef"})
    (tmp_path / "meta.json").write_text(json.dumps({
        "a": {"caption": "a red house", "tags": "house, red"},
        "b": {"caption": "top line\nlower line", "tags": "t1, t2"},
        "c": {"caption": "", "tags": "lone"}, "d": {"caption": "plain", "tags": ""},
        "e": {"tags": "only tags\nsecond"}, "f": {"caption": "x\n  \ny", "tags": "p\nq"}}))
    source = KohyaConfigSource.open(tmp_path / "dataset.toml")
    assert source.captions == {
        "1/a": "a red house,house, red", "1/b": "top line\nlower line,t1, t2",
        "1/c": ",lone", "1/d": "plain", "1/e": "only tags\nsecond", "1/f": "x\n  \ny,p\nq",
        "2/a": "a red house;house, red", "2/b": "top line;t1, t2\nlower line;t1, t2",
        "2/c": "", "2/d": "plain;", "2/e": "only tags\nsecond", "2/f": "x;p;q\ny;p;q"}
    ds = dataset(data_cfg(source=str(tmp_path / "dataset.toml")), byte_tok, train=False)
    got = {s["key"]: s["caption"] for s in ds}
    assert {k: v for k, v in got.items() if k.startswith("1/")} == {
        "1/a": "a red house,house, red", "1/b": "top line", "1/c": ",lone", "1/d": "plain",
        "1/e": "only tags", "1/f": "x"}
    assert got["2/b"] in ("top line;t1, t2", "lower line;t1, t2")
    assert got["2/f"] in ("x;p;q", "y;p;q")


def test_metadata_entries_that_are_not_objects_say_so(tmp_path):
    """A metadata_file of captions as strings ({"a": "a cat"}) said the image_dirs "hold no
    image files"; it names the metadata file and what is wrong with it."""
    write(tmp_path, """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "ft"
  metadata_file = "meta.json"
""", {f"ft/{k}.png": None for k in "ab"})
    (tmp_path / "meta.json").write_text(json.dumps({"a": "a cat", "b": ["a dog"]}))
    with pytest.raises(GlidectlError, match=r"metadata_file .*meta.json': all 2 entries naming "
                       r"an image are not an object; write kohya's metadata JSON"):
        KohyaConfigSource.open(tmp_path / "dataset.toml")


def test_general_dreambooth_keys_stay_with_a_fine_tuning_dataset_as_kohya_takes_them(
        tmp_path):
    """kohya's [general] schema takes the DreamBooth keys whatever its datasets hold; only a
    fine-tuning dataset and its subsets refuse them. A dataset of DreamBooth subsets and one
    of fine-tuning subsets sit side by side."""
    toml = write(tmp_path, """
[general]
caption_extension = ".txt"
class_tokens = "thing"
cache_info = false
[[datasets]]
  [[datasets.subsets]]
  image_dir = "ft"
  metadata_file = "ft/meta.json"
[[datasets]]
  [[datasets.subsets]]
  image_dir = "db"
""", {"ft/x.png": None, "db/y.png": ("y.txt", "a tree")})
    (tmp_path / "ft" / "meta.json").write_text(json.dumps({"x": {"caption": "a house"}}))
    source = KohyaConfigSource.open(toml)
    assert source.units() == ["1/x", "2/y.png"]
    assert [(s.metadata_file is not None, s.class_tokens) for s in source.config.subsets] == [
        (True, "thing"), (False, "thing")]


def test_images_without_caption_or_class_tokens_train_on_the_empty_caption_as_kohya(
        tmp_path, data_cfg, byte_tok):
    """kohya's ``load_dreambooth_dir`` gives such an image "" (and warns); its
    ``process_caption`` still adds the prefix and suffix; a metadata entry without caption
    or tags is "" too; ``caption_extension = "txt"`` reads ``.txt``, as kohya adds the dot."""
    write(tmp_path, """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "plain"

  [[datasets.subsets]]
  image_dir = "pre"
  caption_extension = "txt"
  caption_prefix = "photo of"
  caption_suffix = "4k"

[[datasets]]
  [[datasets.subsets]]
  image_dir = "plain"
  metadata_file = "meta.json"
""", {"plain/x.png": None, "pre/y.png": None, "pre/z.png": ("z.txt", "a cat")})
    (tmp_path / "meta.json").write_text(json.dumps({"x": {"tags": ""}}))
    ds = dataset(data_cfg(source=str(tmp_path / "dataset.toml")), byte_tok)
    got = {s["key"]: s["caption"] for s in ds}
    assert got == {"1/x.png": "", "2/y.png": "photo of 4k", "2/z.png": "photo of a cat 4k",
                   "3/x": ""}
    assert ds.stats()["rejected"] == {}
    [note] = [n for n in source_notes(ds.source) if "subset 1" in n]
    assert note.endswith("dataset 1, subset 1: 1 image has neither a '.caption' file nor the "
                         "subset's class_tokens and trains on the empty caption, as in kohya's "
                         "trainers (\"neither caption file nor class tokens are found. use "
                         "empty caption\"); give the subset class_tokens to caption it.")
    run = CliRunner().invoke(build_app(), ["dataset", "inspect", str(tmp_path / "dataset.toml"),
                                           "--json", "--tokenizer", "byte"])
    report = json.loads(run.output)
    assert report["valid"] == 4 and report["empty_share"] == 0.5  # 1/x.png and 3/x


def test_a_caption_file_gives_its_first_line_as_kohya_reads_it(tmp_path, data_cfg, byte_tok):
    """kohya's ``read_caption`` (``DreamBoothDataset``) keeps the first line of a caption
    file (read as text: "\\r\\n" ends a line), stripped, blank or not (without
    ``enable_wildcard``), before ``process_caption`` adds the prefix and suffix to it; a
    metadata caption's first line is taken after them (``caption.split("\\n")[0]``).
    glidectl took the first non-blank line, and for a file after the suffix, which a
    multi-line file lost."""
    write(tmp_path, """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "one"
  caption_extension = ".txt"

  [[datasets.subsets]]
  image_dir = "two"
  caption_extension = ".txt"
  caption_prefix = "photo of"
  caption_suffix = "4k"

[[datasets]]
  [[datasets.subsets]]
  image_dir = "one"
  metadata_file = "meta.json"
  caption_suffix = "4k"
""", {"one/a.png": ("a.txt", "\nsks dog, grass\n"), "one/b.png": ("b.txt", "  \t \nnext"),
      "one/c.png": ("c.txt", "  spaced out  \r\nnext"), "one/d.png": ("d.txt", "\n"),
      "two/e.png": ("e.txt", "first\nsecond"), "two/f.png": ("f.txt", "")})
    (tmp_path / "meta.json").write_text(json.dumps({
        "a": {"caption": "\nhidden"}, "b": {"caption": "top\nbottom"}}))
    ds = dataset(data_cfg(source=str(tmp_path / "dataset.toml")), byte_tok, train=False)
    assert {s["key"]: s["caption"] for s in ds} == {
        "1/a.png": "", "1/b.png": "", "1/c.png": "spaced out", "1/d.png": "",
        "2/e.png": "photo of first 4k", "3/a": "", "3/b": "top"}
    # an empty file, which stops kohya's run ("caption file is empty"), is left out
    assert ds.stats()["rejected"] == {"empty_caption": 1}


def test_enable_wildcard_draws_among_the_non_blank_lines_of_a_caption_file(tmp_path, data_cfg,
                                                                          byte_tok):
    """kohya's ``read_caption`` with ``enable_wildcard`` keeps a caption file's non-blank
    lines ("空行を除く"), so a blank line is never a draw, nor a wildcard's choice."""
    toml = write(tmp_path, """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "one"
  caption_extension = ".txt"
  enable_wildcard = true
""", {"one/a.png": ("a.txt", "\nred ball\n\n  \t\nblue cube\n\n"),
      "one/b.png": ("b.txt", "{cat|dog}\r\n\r\n{red|blue} car\r\n")})
    seen: dict[str, set[str]] = {}
    for seed in range(40):
        ds = build_dataset(data_cfg(source=str(toml)), tokenizer=byte_tok, image_size=32,
                           text_ctx=64, seed=seed)
        for sample in ds:
            seen.setdefault(sample["key"], set()).add(sample["caption"])
    assert seen == {"1/a.png": {"red ball", "blue cube"},
                    "1/b.png": {"cat", "dog", "red car", "blue car"}}


@pytest.mark.parametrize("kind", ["folder", "pipe"])
def test_a_caption_path_that_is_no_file_is_counted_as_unreadable_not_class_tokens(
        tmp_path, data_cfg, byte_tok, kind):
    """A folder (or named pipe) 'b.txt' beside 'b.png' was taken for no caption file, so the
    image trained on the subset's class_tokens without a word."""
    toml = write(tmp_path, """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "dog"
  caption_extension = ".txt"
  class_tokens = "sks dog"
""", {"dog/a.png": ("a.txt", "a dog on grass"), "dog/b.png": None})
    bad = tmp_path / "dog" / "b.txt"
    bad.mkdir() if kind == "folder" else os.mkfifo(bad)
    ds = dataset(data_cfg(source=str(toml)), byte_tok, train=False)
    assert {s["key"]: s["caption"] for s in ds} == {"1/a.png": "a dog on grass"}
    stats = ds.stats()
    assert stats["rejected"] == {"unreadable_caption": 1}
    assert stats["examples"]["unreadable_caption"] == ["1/b.png"]


@pytest.mark.timeout(30)
def test_a_metadata_file_that_is_a_named_pipe_is_one_sentence_not_a_hang(tmp_path, capsys):
    toml = write(tmp_path, "[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'ft'\n"
                 "  metadata_file = 'meta.json'\n", {"ft/x.png": None})
    os.mkfifo(tmp_path / "meta.json")  # read, it waited for a writer
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", str(toml), "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "dataset 1, subset 1: metadata_file" in err and "(not a regular file)" in err
    assert err.count("\n") == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefix", ["kohya", "onetrainer"])
@pytest.mark.parametrize("kind", ["folder", "pipe"])
def test_a_config_path_that_is_no_file_names_the_file_it_takes(tmp_path, capsys, prefix,
                                                                 kind):
    """`kohya:FOLDER` said "'FOLDER' cannot be read (Is a directory)", not that the prefix
    takes kohya's dataset-config file; `kohya:PIPE` waited for a writer."""
    bad = tmp_path / "held-out"
    bad.mkdir() if kind == "folder" else os.mkfifo(bad)
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", f"{prefix}:{bad}", "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    why = "is a folder" if kind == "folder" else "is not a regular file (a pipe or a device)"
    file = ("the file of kohya's dataset config (what its --dataset_config takes"
            if prefix == "kohya" else "OneTrainer's concepts file (the .json file")
    assert err.startswith(f"Error: {str(bad)!r} {why}; give {file}") and err.count("\n") == 1


def test_a_toml_file_and_kohyas_json_form_are_claimed_without_a_prefix(tmp_path, toml,
                                                                        data_cfg, byte_tok):
    assert source_type(str(toml))[0].name == "kohya"
    as_json = tmp_path / "dataset.json"
    as_json.write_text(json.dumps({"datasets": [{"subsets": [
        {"image_dir": str(toml.parent / "dog"), "class_tokens": "sks dog"}]}]}))
    assert source_type(str(as_json))[0].name == "kohya"
    for source in (str(as_json), f"kohya:{as_json}"):
        ds = dataset(data_cfg(source=source), byte_tok, train=False)
        assert sorted(s["key"] for s in ds) == ["1/a.png", "1/b.png"]


def test_a_concepts_list_read_as_kohyas_json_names_the_onetrainer_prefix(tmp_path, capsys):
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps([{"name": "x", "path": "dog"}]))
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", f"kohya:{concepts}", "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == (f"Error: {str(concepts)!r} holds a list like OneTrainer's concepts file, not "
                   "kohya's dataset config (an object with \"datasets\"); pass it as "
                   f"onetrainer:{concepts} (or without a prefix).\n")


def test_kohyas_fine_tuning_metadata_given_as_a_source_names_metadata_file(tmp_path, capsys):
    """kohya's meta_cap.json (image key → caption/tags) as a source said it had no
    [[datasets]] table; it says how kohya reads it: a subset's metadata_file."""
    meta = tmp_path / "meta_cap.json"
    meta.write_text('{"a": {"caption": "a dog", "tags": "dog, grass"}}')
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", str(meta), "--tokenizer", "byte"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"Error: {str(meta)!r} is kohya's fine-tuning metadata (image → caption/tags), which "
        "kohya reads through a dataset config; write a dataset.toml with [[datasets.subsets]] "
        'image_dir = "FOLDER" and metadata_file = "meta_cap.json", and pass that.\n')


@pytest.mark.parametrize("config, words", [
    ("[[datasets]]\n  [[datasets.subsets]]\n  num_repeats = = 3\n",
     "is not valid TOML (Invalid value (at line 3, column 17)); fix it there."),
    ("[[datasets]]\n  [[datasets.subsets]]\n  class_tokens = 'x'\n",
     "dataset 1, subset 1 has no image_dir; give it the folder of its images"),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'nowhere'\n",
     "dataset 1, subset 1: image_dir 'nowhere' is not a folder ("),
    # an empty image_dir read the config's folder (Path('') is '.'); kohya skips it
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = ''\n",
     "dataset 1, subset 1: image_dir is empty; give the folder that holds the subset's "
     "images ('.' for the config's folder)."),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  metadata_file = ' '\n",
     "dataset 1, subset 1: metadata_file is empty; give the path of its metadata JSON"),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  num_repeats = '10'\n",
     "dataset 1, subset 1: num_repeats must be a whole number, not '10'; write e.g. "
     "num_repeats = 10."),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  shuffle_caption = 1\n",
     "shuffle_caption must be true or false, not 1"),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  is_reg = 'yes'\n",
     "dataset 1, subset 1: is_reg must be true or false, not 'yes'; write e.g. is_reg = true."),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  num_repeat = 3\n",
     "dataset 1, subset 1: unknown key 'num_repeat'; did you mean 'num_repeats'?"),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n"
     "  caption_dropout_rate = 1.5\n", "caption_dropout_rate must be between 0 and 1"),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  token_warmup_step = -1\n",
     "dataset 1, subset 1: token_warmup_step must be 0 (off) or more, not -1"),
    ("[general]\ntoken_warmup_min = -2\n[[datasets]]\n  [[datasets.subsets]]\n"
     "  image_dir = 'dog'\n", "[general]: token_warmup_min must be 0 or more, not -2."),
    ("[general]\nimage_dir = 'dog'\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'd'\n",
     "[general]: image_dir belongs in each [[datasets.subsets]] entry"),
    ("[model]\ninit = 'openai:base'\n", "has no [[datasets]] table, so it is not a kohya "
     "dataset config"),
    ("[[datasets]]\n  [[datasets.subset]]\n  image_dir = 'dog'\n",
     "dataset 1: unknown key 'subset'; did you mean 'subsets'?"),
    # keys kohya's trainers refuse (voluptuous: extra keys not allowed) are refused too
    ("[general]\nsample_ratio = 0.5\n[[datasets]]\n  [[datasets.subsets]]\n"
     "  image_dir = 'dog'\n", "[general]: unknown key 'sample_ratio', which kohya's trainers "
     "refuse too; remove it, or spell it as kohya's docs/config_README-en.md does."),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  prior_loss_weight = 1.0\n",
     "dataset 1, subset 1: prior_loss_weight is a trainer option, not a key of kohya's dataset "
     "config (kohya's trainers refuse it there too); remove it and set "
     "train.prior_loss_weight instead."),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  resolution = 512\n",
     "dataset 1, subset 1: resolution belongs in [general] or [[datasets]], not in a subset "
     "(kohya's trainers refuse it there); move it up, or remove it (glidectl uses "
     "data.resolution instead)."),
    ("[training]\nlr = 1\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n",
     "unknown table 'training', which kohya's trainers refuse too; remove it (kohya's dataset "
     "config holds [general] and [[datasets]] only)."),
    # outside any table: a trainer option is told what sets it, a known key where it goes
    ("prior_loss_weight = 1.0\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n",
     "prior_loss_weight is a trainer option, not a key of kohya's dataset config (kohya's "
     "trainers refuse it there too); remove it and set train.prior_loss_weight instead."),
    ("shuffle_caption = true\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n",
     "shuffle_caption stands outside any table, where kohya's trainers refuse it; move it "
     "into [general] (every dataset) or a [[datasets]] entry."),
    ("lr = 1\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n",
     "unknown key 'lr', which kohya's trainers refuse too; remove it"),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  num_repeats = 0\n",
     "reads no images: kohya leaves out every one of its subsets. "),
    # ConfigSanitizer: DreamBooth and fine-tuning subsets are not mixed in one dataset
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  [[datasets.subsets]]\n"
     "  image_dir = 'dog'\n  metadata_file = 'meta.json'\n  [[datasets.subsets]]\n"
     "  image_dir = 'cat'\n", "dataset 1 mixes DreamBooth subsets (no metadata_file: "
     "subsets 1, 3) and fine-tuning subsets (with a metadata_file: subset 2), which kohya's "
     "trainers refuse; split them into two [[datasets]] entries."),
    # keys of DreamBooth subsets that a fine-tuning subset (and its dataset) refuses
    ("[[datasets]]\n  [[datasets.subsets]]\n  metadata_file = 'meta.json'\n"
     "  class_tokens = 'sks dog'\n", "dataset 1, subset 1: class_tokens is an option of "
     "DreamBooth subsets, which kohya's trainers refuse in a fine-tuning subset (one with a "
     "metadata_file); remove it (the metadata_file captions its images)."),
    ("[[datasets]]\n  [[datasets.subsets]]\n  metadata_file = 'meta.json'\n"
     "  caption_extension = '.txt'\n", "dataset 1, subset 1: caption_extension is an option of "
     "DreamBooth subsets, which kohya's trainers refuse in a fine-tuning subset"),
    ("[[datasets]]\n  [[datasets.subsets]]\n  metadata_file = 'meta.json'\n"
     "  cache_info = true\n", "dataset 1, subset 1: cache_info is an option of DreamBooth "
     "subsets, which kohya's trainers refuse in a fine-tuning subset (one with a "
     "metadata_file); remove it."),
    ("[[datasets]]\n  [[datasets.subsets]]\n  metadata_file = 'meta.json'\n"
     "  is_reg = true\n", "dataset 1, subset 1: is_reg is an option of DreamBooth subsets, "
     "which kohya's trainers refuse in a fine-tuning subset (one with a metadata_file); "
     "remove it (kohya reads regularisation images from DreamBooth subsets only)."),
    ("[[datasets]]\nclass_tokens = 'dog'\n  [[datasets.subsets]]\n"
     "  metadata_file = 'meta.json'\n", "dataset 1: class_tokens is an option of DreamBooth "
     "subsets, which kohya's trainers refuse in a [[datasets]] entry of fine-tuning subsets "
     "(those with a metadata_file); remove it"),
    # keys kohya takes at one level only
    ("[general]\nalpha_mask = true\n[[datasets]]\n  [[datasets.subsets]]\n"
     "  image_dir = 'dog'\n", "[general]: alpha_mask belongs in each [[datasets.subsets]] "
     "entry, not here; move it there."),
    ("[[datasets]]\nconditioning_data_dir = 'cond'\n  [[datasets.subsets]]\n"
     "  image_dir = 'dog'\n", "dataset 1: conditioning_data_dir belongs in each "
     "[[datasets.subsets]] entry"),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  validation_split = 0.1\n",
     "dataset 1, subset 1: validation_split belongs in [general] or [[datasets]], not in a "
     "subset (kohya's trainers refuse it there); move it up, or remove it (glidectl uses "
     "validation.holdout instead)."),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n  validation_seed = 3\n",
     "dataset 1, subset 1: validation_seed belongs in [general] or [[datasets]]"),
    ("[[datasets]]\n  [[datasets.subsets]]\n  image_dir = 'dog'\n"
     "  skip_image_resolution = 64\n", "dataset 1, subset 1: skip_image_resolution belongs in "
     "[general] or [[datasets]]"),
])
def test_a_bad_dataset_config_is_one_sentence_and_exit_2(tmp_path, config, words, capsys):
    toml = write(tmp_path, config, {"dog/a.png": None})
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", str(toml), "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {str(toml)!r}") and words in err and err.count("\n") == 1


def test_inspect_shows_each_subsets_folder_repeats_images_and_class_token_captions(toml):
    run = CliRunner().invoke(build_app(), ["dataset", "inspect", str(toml), "--json",
                                           "--tokenizer", "byte"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.output)
    assert report["kind"] == "kohya" and report["total_samples"] == 6
    assert report["samples_per_epoch"] == 12 and report["scanned"] == 6
    assert report["kohya_folders"] == [
        {"folder": "dog", "repeats": 3, "images": 2, "per_epoch": 6, "class_captions": 1,
         "reg": False},
        {"folder": "cat", "repeats": 2, "images": 2, "per_epoch": 4, "class_captions": 0,
         "reg": False},
        {"folder": "dog", "repeats": 1, "images": 2, "per_epoch": 2, "class_captions": 1,
         "reg": False}]
    table = CliRunner().invoke(build_app(), ["dataset", "inspect", str(toml),
                                             "--tokenizer", "byte"]).output
    assert "kohya subsets" in table and "caption from class_tokens" in table


def test_subsets_kohya_leaves_out_are_left_out_with_a_note(tmp_path):
    toml = write(tmp_path, """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "dog"
  class_tokens = "dog"
  [[datasets.subsets]]
  image_dir = "dog"
  class_tokens = "twice"
  [[datasets.subsets]]
  image_dir = "cat"
  class_tokens = "cat"
  num_repeats = 0
""", {"dog/a.png": None, "dog/deeper/b.png": None, "cat/c.png": None})
    source = KohyaConfigSource.open(toml)
    assert source.units() == ["1/a.png"]  # not its sub-folder's image, as kohya
    deeper, twice, zero = (n.split(": ", 1)[1] for n in source_notes(source))
    assert deeper.startswith("dataset 1, subset 1: 1 image in sub-folders of 'dog' is not read")
    assert twice.startswith("dataset 1, subset 2 ('dog') has the same image_dir as subset 1 "
                            "of its dataset and is left out")
    assert zero.startswith("dataset 1, subset 3 ('cat') has num_repeats = 0 and is left out")


def test_a_subset_is_a_duplicate_when_its_image_dir_text_is_as_kohya_compares_them(tmp_path):
    """kohya's DreamBoothSubset.__eq__ compares image_dir as written (FineTuningSubset's its
    metadata_file), nothing else: "dog" and "./dog" are two subsets, both read; "dog"
    again, as regularisation images or with other tokens, is the first one, left out."""
    toml = write(tmp_path, """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "dog"
  class_tokens = "dog"
  [[datasets.subsets]]
  image_dir = "./dog"
  class_tokens = "a dog"
  [[datasets.subsets]]
  image_dir = "dog"
  is_reg = true
[[datasets]]
  [[datasets.subsets]]
  image_dir = "dog"
  metadata_file = "meta.json"
  [[datasets.subsets]]
  image_dir = "other"
  metadata_file = "meta.json"
""", {"dog/a.png": None, "other/a.png": None})
    (tmp_path / "meta.json").write_text(json.dumps({"a": {"caption": "a dog"}}))
    source = KohyaConfigSource.open(toml)
    assert source.units() == ["1/a.png", "2/a.png", "4/a"]
    assert [n.split(": ", 1)[1] for n in source_notes(source)] == [
        "dataset 1, subset 3 ('dog') has the same image_dir as subset 1 of its dataset and is "
        "left out, as kohya leaves it out (kohya compares image_dir as written); put it in "
        "another [[datasets]] to read it twice.",
        "dataset 2, subset 5 ('other') has the same metadata_file as subset 4 of its dataset "
        "and is left out, as kohya leaves it out (kohya compares metadata_file as written); "
        "put it in another [[datasets]] to read it twice."]


def test_a_relative_image_dir_is_read_from_the_configs_folder(tmp_path, monkeypatch, capsys):
    """kohya reads it from the working folder: an image_dir found only there is named."""
    toml = write(tmp_path / "conf", "[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "
                 "'pics'\n", {})
    (tmp_path / "pics").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", str(toml), "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"is not a folder ({str(tmp_path / 'conf' / 'pics')!r}; a relative image_dir is " \
        "read from the config's folder) (it does exist in the current folder, where kohya " \
        f"would look: write {str(tmp_path / 'pics')!r})" in err
