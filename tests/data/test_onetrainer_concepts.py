"""OneTrainer's concepts file as data.source: concepts with their balancing (REPEATS and
SAMPLES, fractional counts as a ring over epochs), prompt sources, tag options, loss weights
and types; settings not applied named in one warning, bad files one sentence."""

from __future__ import annotations

import json
import os
from collections import Counter
from itertools import islice

import pytest
from data_helpers import encode, photo, replays_after_resume
from typer.testing import CliRunner

from glidectl.cli.app import build_app, main
from glidectl.data import build_dataset
from glidectl.data.onetrainer_source import OneTrainerSource, validation_spec
from glidectl.data.source_api import samples_per_epoch, source_notes
from glidectl.data.sources import source_type
from glidectl.errors import GlidectlError
from glidectl.training.data_stream import DataStream

CONCEPTS = [
    {"__version": 2, "name": "sks dog", "path": "dog", "seed": 12, "enabled": True,
     "type": "STANDARD", "include_subdirectories": True, "image_variations": 1,
     "text_variations": 1, "balancing": 1.5, "balancing_strategy": "REPEATS",
     "loss_weight": 2.0, "concept_stats": {},
     # OneTrainer writes __version into the nested configs too: no "unknown key" for it
     "image": {"__version": 0, "enable_crop_jitter": True, "enable_random_flip": False,
               "enable_random_rotate": True, "random_rotate_max_angle": 10.0},
     "text": {"__version": 0, "prompt_source": "sample", "prompt_path": "",
              "enable_tag_shuffling": True, "tag_delimiter": ",", "keep_tags_count": 1}},
    {"name": "style", "path": "style", "balancing": 3, "balancing_strategy": "SAMPLES",
     "text": {"prompt_source": "concept", "prompt_path": "style.txt"}},
    {"name": "named", "path": "named", "text": {"prompt_source": "filename"}},
    {"name": "off", "path": "missing", "enabled": False},
    {"name": "held out", "path": "named", "type": "VALIDATION"},
]
IMAGES = {  # image → its .txt prompt (None: none)
    "dog/a.png": "sks dog, running, grass, sunny day",
    "dog/deep/b.png": "sks dog\nsks dog, sleeping",
    "dog/b-masklabel.png": None,  # OneTrainer's mask, not a sample
    "style/1.png": None, "style/2.png": None, "style/3.png": None, "style/4.png": None,
    "named/a {red|blue} house.png": None,
}


def write(root, concepts=CONCEPTS, images=IMAGES):
    root.mkdir(parents=True, exist_ok=True)
    for i, (rel, prompt) in enumerate(images.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(photo(40, 36, i), "PNG"))
        if prompt is not None:
            path.with_suffix(".txt").write_text(prompt)
    (root / "style.txt").write_text("an oil painting\n\na watercolour\n")
    (root / "concepts.json").write_text(json.dumps(concepts, indent=2))
    return root / "concepts.json"


@pytest.fixture(scope="module")
def concepts(tmp_path_factory):
    return write(tmp_path_factory.mktemp("onetrainer"))


def dataset(cfg, tok, **kw):
    return build_dataset(cfg, tokenizer=tok, image_size=32, text_ctx=64, seed=5, **kw)


def test_each_prompt_source_captions_its_concepts_images(concepts, data_cfg, byte_tok):
    assert source_type(str(concepts))[0].name == "onetrainer"
    ds = dataset(data_cfg(source=str(concepts)), byte_tok, train=False)
    assert ds.source.kind == "onetrainer"
    captions = {s["key"]: s["caption"] for s in ds}
    assert set(captions) == {"1/a.png", "1/deep/b.png", "2/1.png", "2/2.png", "2/3.png",
                             "2/4.png", "3/a {red|blue} house.png"}  # no mask, no disabled one
    assert captions["1/a.png"] == "sks dog, running, grass, sunny day"  # as written
    assert captions["1/deep/b.png"] in {"sks dog", "sks dog, sleeping"}  # one line a draw
    assert {captions[f"2/{i}.png"] for i in range(1, 5)} <= {"an oil painting", "a watercolour"}
    # the file name without its extension, braces as written (OneTrainer has no wildcards)
    assert captions["3/a {red|blue} house.png"] == "a {red|blue} house"


def test_tags_shuffle_after_the_kept_count_and_loss_weights_ride_with_each_sample(
        concepts, data_cfg, byte_tok):
    ds = dataset(data_cfg(source=str(concepts)), byte_tok)
    seen = [s for _ in range(3) for s in ds if s["key"] == "1/a.png"]  # epochs 0, 1, 2
    tags = [s["caption"].split(", ") for s in seen]
    assert all(t[0] == "sks dog" and sorted(t[1:]) == ["grass", "running", "sunny day"]
               for t in tags)
    assert len({tuple(t) for t in tags}) > 1  # shuffled, per draw
    weights = {s["key"][0]: s["loss_weight"] for s in dataset(data_cfg(source=str(concepts)),
                                                             byte_tok)}
    assert weights == {"1": 2.0, "2": 1.0, "3": 1.0}


@pytest.mark.parametrize("delimiter, shuffle, joiner", [
    (";", False, ";"), (",", False, ","), (";", True, ", ")])
def test_dropped_tags_join_with_the_delimiter_and_shuffled_ones_with_a_comma(
        tmp_path, data_cfg, byte_tok, delimiter, shuffle, joiner):
    """mgds DropTags joins the kept tags with tag_delimiter; ShuffleTags, after it, with
    ", " whatever the delimiter."""
    tags = ["sks dog", "red", "blue", "green", "tall"]
    concepts = write(tmp_path, [{"path": "dog", "text": {
        "tag_delimiter": delimiter, "enable_tag_shuffling": shuffle, "tag_dropout_enable": True,
        "tag_dropout_mode": "RANDOM", "tag_dropout_probability": 0.4}}],
        {"dog/a.png": f" {delimiter} ".join(tags)})
    ds = dataset(data_cfg(source=str(concepts)), byte_tok)
    captions = [s["caption"] for _ in range(12) for s in ds]
    kept = [c.split(joiner) for c in captions]
    assert all(k[0] == "sks dog" and set(k[1:]) <= set(tags[1:]) for k in kept)
    assert len({len(k) for k in kept}) > 1  # tags were dropped
    assert all(joiner in c for c in captions if c != "sks dog")


def test_an_image_without_a_prompt_file_trains_on_the_empty_prompt(tmp_path, data_cfg,
                                                                    byte_tok):
    """mgds LoadMultipleTexts: a missing or blank .txt is the prompt "", which OneTrainer
    trains on (glidectl rejected it as missing_caption)."""
    concepts = write(tmp_path, [{"path": "dog"}], {
        "dog/a.png": "sks dog", "dog/b.png": None, "dog/c.png": "\n \n"})
    ds = dataset(data_cfg(source=str(concepts)), byte_tok)
    assert {s["key"]: s["caption"] for s in ds} == {
        "1/a.png": "sks dog", "1/b.png": "", "1/c.png": ""}
    assert ds.stats()["rejected"] == {}
    [note] = [n for n in source_notes(ds.source) if ".txt" in n]
    assert note.endswith("concept 1: 1 image has no .txt prompt beside it (text.prompt_source "
                         "\"sample\") and is trained on the empty prompt, as OneTrainer trains "
                         "it; write the .txt, or set text.prompt_source to \"filename\" or "
                         "\"concept\", to caption it.")


def test_a_concepts_folder_is_collected_as_mgds_collects_it_links_not_followed(tmp_path):
    """mgds CollectPaths (os.scandir, follow_symlinks=False): linked images and linked
    folders inside a concept's folder are not read, hidden folders are not entered, a
    linked concept path itself is; glidectl followed the links."""
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere, [], {"x.png": None, "y.png": None})
    concepts = write(tmp_path, [{"path": "dog", "include_subdirectories": True},
                                {"path": "linked"}, {"path": "dog"}],
                     {"dog/a.png": None, "dog/deep/b.png": None, "dog/.cache/c.png": None,
                      "dog/._a.png": None})
    (tmp_path / "dog" / "x.png").symlink_to(elsewhere / "x.png")
    (tmp_path / "dog" / "deep" / "more").symlink_to(elsewhere, target_is_directory=True)
    (tmp_path / "dog" / "deep" / "loop").symlink_to(tmp_path / "dog", target_is_directory=True)
    (tmp_path / "linked").symlink_to(elsewhere, target_is_directory=True)
    source = OneTrainerSource.open(concepts)
    assert source.units() == ["1/a.png", "1/deep/b.png", "2/x.png", "2/y.png", "3/a.png"]
    notes = source_notes(source)
    [note] = [n for n in notes if "link" in n and "concept 1:" in n]
    assert note == (f"{str(concepts)!r}: concept 1: 3 symbolic links in 'dog' (1 to an image, "
                    "2 to folders) are not followed, as OneTrainer does not follow them in a "
                    "concept's folder; copy what they point to into the folder, or give it a "
                    "concept of its own.")
    assert any(n.endswith("concept 3: 1 image in sub-folders of 'dog' is not read, as "
                          "include_subdirectories is false; set it to true to read them.")
               for n in notes)  # not the hidden folder's, nor the linked folders'
    [hidden, _] = [n for n in notes if "hidden" in n]
    assert hidden.endswith("concept 1: 1 hidden image file (named '.…') in 'dog' is not read, "
                           "though OneTrainer reads it (macOS's '._a.png' is no image); rename "
                           "it without the dot to train on it.")



def test_condlabel_images_are_conditioning_images_not_samples_as_masks(tmp_path):
    """OneTrainer's CollectPaths excludes the postfixes "-masklabel" and "-condlabel" (a
    custom conditioning image), by the name without its extension, whatever the image
    extension; glidectl trained the conditioning images."""
    concepts = write(tmp_path, [{"path": "dog", "include_subdirectories": True}],
                     {"dog/a.png": "a dog", "dog/a-condlabel.png": None,
                      "dog/a-masklabel.png": None, "dog/deep/b.jpg": None,
                      "dog/deep/b-condlabel.jpg": None, "dog/c-condlabel-2.png": None})
    assert OneTrainerSource.open(concepts).units() == ["1/a.png", "1/c-condlabel-2.png",
                                                       "1/deep/b.jpg"]
    off = write(tmp_path / "off", [{"path": "dog"}],
                {"dog/a.png": None, "dog/deep/a-condlabel.png": None})
    note = " ".join(source_notes(OneTrainerSource.open(off)))
    assert "1 image in sub-folders" not in note  # a conditioning image is no unread image

@pytest.mark.parametrize("kind", ["folder", "pipe"])
def test_a_prompt_path_beside_an_image_that_is_no_file_is_counted_as_unreadable(
        tmp_path, data_cfg, byte_tok, kind):
    """A folder (or named pipe) 'b.txt' beside 'b.png' was taken for no prompt file, so the
    image trained on the empty prompt, and the note counted it as having no .txt (mgds'
    LoadMultipleTexts opens what exists there, and stops the run when it cannot read it)."""
    concepts = write(tmp_path, [{"path": "dog"}], {"dog/a.png": "sks dog", "dog/b.png": None,
                                                   "dog/c.png": None})
    bad = tmp_path / "dog" / "b.txt"
    bad.mkdir() if kind == "folder" else os.mkfifo(bad)
    ds = dataset(data_cfg(source=str(concepts)), byte_tok)
    assert {s["key"]: s["caption"] for s in ds} == {"1/a.png": "sks dog", "1/c.png": ""}
    stats = ds.stats()
    assert stats["rejected"] == {"unreadable_caption": 1}
    assert stats["examples"]["unreadable_caption"] == ["1/b.png"]
    [note] = [n for n in source_notes(ds.source) if ".txt" in n]
    assert "concept 1: 1 image has no .txt prompt beside it" in note  # c.png only


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind, why", [("folder", "a folder"), ("pipe", "not a regular file")])
def test_a_concept_prompt_path_that_is_no_file_is_one_sentence_not_a_hang(tmp_path, capsys,
                                                                         kind, why):
    concepts = write(tmp_path, [{"path": "dog", "text": {
        "prompt_source": "concept", "prompt_path": "prompts.txt"}}], {"dog/a.png": None})
    bad = tmp_path / "prompts.txt"
    bad.mkdir() if kind == "folder" else os.mkfifo(bad)  # a pipe: read, it waited for a writer
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", str(concepts), "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"concept 1: text.prompt_path {str(bad)!r} cannot be read ({why});" in err
    assert err.count("\n") == 1


def test_repeats_and_samples_balancing_give_each_epochs_reads(concepts):
    source = OneTrainerSource.open(concepts)
    # REPEATS 1.5 of 2 images: floor(3) reads; SAMPLES 3 of 4 images; default REPEATS 1
    assert samples_per_epoch(source) == 3 + 3 + 1
    per_epoch = [{u: source.reads(u, e) for u in source.units()} for e in range(4)]
    assert all(sum(r[u] for u in r if u[0] == "2") == 3 for r in per_epoch)
    # the SAMPLES concept walks its four images as a ring: 1,2,3 | 4,1,2 | 3,4,1 | 2,3,4
    ring = [[r[f"2/{i}.png"] for i in range(1, 5)] for r in per_epoch]
    assert ring == [[1, 1, 1, 0], [1, 1, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1]]
    assert [[r["1/a.png"], r["1/deep/b.png"]] for r in per_epoch[:2]] == [[2, 1], [1, 2]]


def test_a_training_epoch_reads_the_balanced_counts(concepts, data_cfg, byte_tok):
    ds = dataset(data_cfg(source=str(concepts)), byte_tok)
    ds.set_epoch(1)
    assert Counter(s["key"] for s in ds) == {
        "1/a.png": 1, "1/deep/b.png": 2, "2/4.png": 1, "2/1.png": 1, "2/2.png": 1,
        "3/a {red|blue} house.png": 1}
    assert ds.num_samples == 7


def test_an_endless_stream_draws_every_image_of_a_fractional_concept(tmp_path, data_cfg,
                                                                     byte_tok):
    """data.resampled has no epochs to walk the ring over: each image is drawn by its mean
    reads per epoch (k/n), not by the first epoch's reads, which left images out."""
    concepts = [{"name": "half", "path": "style", "balancing": 0.5,
                 "text": {"prompt_source": "filename"}},
                {"name": "twice", "path": "dog", "balancing": 2.0}]
    root = write(tmp_path, concepts)
    ds = dataset(data_cfg(source=str(root), resampled=True), byte_tok)
    drawn = Counter(s["key"] for s in islice(ds, 1200))
    # per epoch: 2 reads of the four style images (the first epoch's: 1 and 2 only), 2 of
    # the dog's one image at its top
    assert set(drawn) == {"1/1.png", "1/2.png", "1/3.png", "1/4.png", "2/a.png"}
    assert all(100 < drawn[f"1/{i}.png"] < 200 for i in range(1, 5))  # 150 each
    assert 540 < drawn["2/a.png"] < 660  # 600
    first = [[s["key"] for s in islice(dataset(data_cfg(source=str(root), resampled=True),
                                                byte_tok), 50)] for _ in range(2)]
    assert first[0] == first[1]  # seeded: a resume skips into the same draws


def test_resume_inside_and_across_epochs_draws_the_same_samples(concepts, data_cfg, byte_tok):
    cfg = data_cfg(source=str(concepts), flip=True, uncond_p=0.3)
    straight, _ = replays_after_resume(
        lambda: DataStream(dataset(cfg, byte_tok), batch_size=2, seed=5), taken=3, total=9)


def test_unapplied_settings_and_types_are_named_in_one_warning(concepts):
    notes = source_notes(OneTrainerSource.open(concepts))
    ignored = notes[0]
    assert ignored.startswith(f"{str(concepts)!r}: glidectl does not apply these OneTrainer "
                              "settings (what it does instead in brackets): "
                              "image.enable_random_rotate (no rotation)")
    assert "seed" not in ignored  # OneTrainer's own bookkeeping (cache key, loss label)
    assert not any("__version" in n for n in notes)  # written into image and text too
    assert "VALIDATION" not in " ".join(notes)  # the run's validation data: said by the run
    assert "random_rotate_max_angle" not in ignored and "image_variations" not in ignored
    assert sum("not enabled" in n for n in notes) == 1


def test_validation_concepts_are_read_by_the_validation_source(concepts, tmp_path,
                                                                data_cfg, byte_tok):
    spec = f"onetrainer-validation:{concepts}"
    assert validation_spec(str(concepts)) == (spec, ["concept 5 ('held out')"])
    assert validation_spec(f"onetrainer:{concepts}") == (
        f"onetrainer-validation:{concepts}", ["concept 5 ('held out')"])
    ds = dataset(data_cfg(source=spec), byte_tok, train=False)
    assert [(s["key"], s["caption"]) for s in ds] == [
        ("5/a {red|blue} house.png", "")]  # prompt_source "sample", no .txt: ""
    none = write(tmp_path, [{"path": "style"}, {"path": "named", "enabled": False,
                                                "type": "VALIDATION"}])
    assert validation_spec(str(none)) is None  # disabled: no validation data
    with pytest.raises(GlidectlError, match=r"has no enabled VALIDATION concept to validate "
                       r"on \(concept 1 STANDARD, concept 2 VALIDATION \(not enabled\)\)"):
        OneTrainerSource.open(none, validation=True)


def test_prior_prediction_concepts_are_read_with_their_flag_and_can_be_left_out(
        tmp_path, data_cfg, byte_tok):
    """OneTrainer's training loader reads STANDARD and PRIOR_PREDICTION concepts; a run that
    cannot predict as the base model (not LoRA) leaves the latter out, with a warning."""
    concepts = write(tmp_path, [{"path": "style", "loss_weight": 0.5, "text": {
        "prompt_source": "filename", "tag_dropout_enable": True,
        "tag_dropout_probability": 0.5}}, {"name": "prior", "path": "named",
                                           "type": "PRIOR_PREDICTION"}])
    ds = dataset(data_cfg(source=str(concepts)), byte_tok)
    assert {s["key"]: s["prior_prediction"] for s in ds if s["key"][0] == "2" or
            s["key"] == "1/1.png"} == {"1/1.png": False, "2/a {red|blue} house.png": True}
    [ignored] = [n for n in source_notes(ds.source) if "does not apply" in n]
    assert "PRIOR_PREDICTION" not in ignored
    assert "text.tag_dropout_enable (glidectl drops tags only in tag_dropout_mode RANDOM" \
        in ignored  # OneTrainer's default FULL mode drops all tags at once
    source = OneTrainerSource.open(concepts)
    note = source.leave_out_prior_prediction()
    assert note.startswith(f"{str(concepts)!r}: PRIOR_PREDICTION concept 2 ('prior') is left "
                           "out of training")
    assert {u[0] for u in source.units()} == {"1"} and samples_per_epoch(source) == 4
    assert source.leave_out_prior_prediction() is None  # none left
    only = write(tmp_path / "only", [{"path": "named", "type": "PRIOR_PREDICTION"}])
    with pytest.raises(GlidectlError, match="names only PRIOR_PREDICTION concepts"):
        OneTrainerSource.open(only).leave_out_prior_prediction()


def test_prior_prediction_images_come_last_so_holdout_and_previews_read_the_others_first(
        tmp_path, data_cfg, byte_tok):
    concepts = write(tmp_path, [{"path": "named", "type": "PRIOR_PREDICTION"},
                                {"path": "style", "text": {"prompt_source": "filename"}}])
    assert [u[0] for u in OneTrainerSource.open(concepts).units()] == ["2"] * 4 + ["1"]
    first = next(iter(dataset(data_cfg(source=str(concepts)), byte_tok, train=False)))
    assert first["key"] == "2/1.png" and not first["prior_prediction"]


def test_older_concepts_are_migrated_as_onetrainer_does_and_unknown_keys_are_named(tmp_path):
    concepts = write(tmp_path, [  # version 0 "repeats", version 1 "validation_concept"
        {"path": "style", "repeats": 0.5, "validation_concept": False, "sample_ratio": 2},
        {"path": "named", "validation_concept": True}])
    source = OneTrainerSource.open(concepts)
    assert [(r["type"], r["per_epoch"]) for r in source.concept_table()] == [
        ("STANDARD", 2), ("VALIDATION", 0)]
    assert (f"{str(concepts)!r}: sample_ratio is not a key of OneTrainer's concepts that "
            "glidectl knows, and is ignored.") in source_notes(source)


@pytest.mark.parametrize("text, words", [
    ('[{"path": "dog",}]', "is not valid JSON (Expecting property name enclosed in double "
     "quotes at line 1, column 17); fix it there."),
    ('{"path": "dog"}', "holds a JSON dict, not a list of concepts"),
    ('[{"name": "x", "path": "nowhere"}]', "concept 1 ('x'): path 'nowhere' is not a folder"),
    ('[{"path": "dog", "balancing": "2"}]', "concept 1: balancing must be a number, not '2'"),
    ('[{"path": "dog", "enabled": "yes"}]', "concept 1: enabled must be true or false"),
    ('[{"name": "x", "path": "dog", "balancing_strategy": "EPOCHS"}]',
     "concept 1 ('x'): balancing_strategy must be one of REPEATS, SAMPLES, not 'EPOCHS'."),
    ('[{"path": "dog", "text": {"prompt_source": "concept"}}]',
     "text.prompt_source is \"concept\" but text.prompt_path is empty"),
    ('[{"path": "dog", "text": {"prompt_source": "concept", "prompt_path": "no.txt"}}]',
     "concept 1: text.prompt_path"),
    ('[{"path": "dog", "text": {"keep_tag_count": 2}}]',
     "concept 1: unknown key 'text.keep_tag_count'; did you mean 'keep_tags_count'?"),
    ('[{"path": "dog", "loss_weight": -1}]', "concept 1: loss_weight must be between 0"),
    ('[{"path": "dog"}, 3]', "concept 2 is 3, not an object"),
    ('[{"path": "dog", "enabled": false}, {"path": "dog", "type": "VALIDATION"}]',
     "has no enabled STANDARD or PRIOR_PREDICTION concept to train on (concept 1 STANDARD "
     "(not enabled), concept 2 VALIDATION); enable one, or make it STANDARD."),
    ('[{"path": "dog", "balancing": 0.5}]', "reads no images per epoch: every concept's "
     "balancing rounds down to 0. "),
])
def test_a_bad_concepts_file_is_one_sentence_and_exit_2(tmp_path, text, words, capsys):
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "a.png").write_bytes(encode(photo(40, 36), "PNG"))
    path = tmp_path / "concepts.json"
    path.write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", f"onetrainer:{path}", "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {str(path)!r}") and words in err and err.count("\n") == 1


@pytest.mark.parametrize("text, words", [
    ('[\n  {"path": "dog"},\n]\n', "is not valid JSON (Expecting value at line 3, column 1)"),
    ("[]", "holds an empty list, not a list of concepts"),
    ('[{"name": "x"}]', "concept 1 ('x') has no path"),
])
def test_a_json_list_or_bad_json_without_a_prefix_is_read_as_concepts(tmp_path, text, words,
                                                                       capsys):
    path = tmp_path / "concepts.json"
    path.write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", str(path), "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {str(path)!r}") and words in err and err.count("\n") == 1


def test_kohyas_json_given_as_concepts_names_the_kohya_prefix(tmp_path, capsys):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"datasets": [{"subsets": [{"image_dir": "dog"}]}]}))
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", f"onetrainer:{path}", "--tokenizer", "byte"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"Error: {str(path)!r} holds kohya's dataset config, not OneTrainer's list of concepts; "
        f"pass it as kohya:{path} (or without a prefix).\n")


def test_inspect_shows_each_concepts_balancing_images_reads_and_loss_weight(concepts):
    run = CliRunner().invoke(build_app(), ["dataset", "inspect", str(concepts), "--json",
                                           "--tokenizer", "byte"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.output)
    assert report["kind"] == "onetrainer" and report["total_samples"] == 7
    assert report["samples_per_epoch"] is None  # 3 + 3 + 1 reads: as many as images
    assert [(r["concept"], r["type"], r["images"], r["per_epoch"], r["loss_weight"])
            for r in report["concepts"]] == [
        ("sks dog", "STANDARD", 2, 3, 2.0), ("style", "STANDARD", 4, 3, 1.0),
        ("named", "STANDARD", 1, 1, 1.0), ("off", "STANDARD", 0, 0, 1.0),
        ("held out", "VALIDATION", 0, 0, 1.0)]
    table = CliRunner().invoke(build_app(), ["dataset", "inspect", str(concepts),
                                             "--tokenizer", "byte"]).output
    assert "OneTrainer concepts" in table and "3 samples" in table and "×1.5" in table
