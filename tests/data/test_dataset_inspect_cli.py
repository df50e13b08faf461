"""``glidectl dataset inspect``: JSON report, tables, preview grid, benchmark, bad sources."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from data_helpers import encode, odd_images, photo
from PIL import Image
from typer.testing import CliRunner

from glidectl.cli.app import build_app, main
from glidectl.config import DataConfig
from glidectl.data.dataset import build_dataset
from glidectl.data.inspection import inspect_source


def invoke(*args):
    return CliRunner().invoke(build_app(), list(args))


def test_inspect_json_reports_counts_captions_sizes_and_rejections(write_shards):
    def extra(s, i):
        if i == 0:
            return {"jpg": b""}
        if i == 1:
            return {"txt": "word " * 200}
        return {}

    folder = write_shards(2, 4, extra=extra)[0].parent
    out = invoke("dataset", "inspect", str(folder), "--json", "--tokenizer", "byte")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["kind"] == "webdataset" and report["scanned"] == 8 and report["complete"]
    assert report["total_samples"] == 8 and report["valid"] == 6
    assert report["rejected"] == {"empty_file": 2}
    assert len(report["rejected_examples"]["empty_file"]) == 2
    assert report["truncated_share"] == pytest.approx(2 / 6)
    assert report["caption_tokens"]["max"] == 999
    assert report["size_histogram"] == {"0-63": 6}
    assert report["aspect_histogram"] == {"1.05-1.25": 6}


def test_inspect_counts_damaged_shards_apart_from_scanned_samples(write_shards):
    paths = write_shards(3, 4, extra=lambda s, i: {"jpg": b""} if (s, i) == (0, 0) else {})
    with tarfile.open(paths[1]) as tar:
        cut = tar.getmember("s1_001.jpg").offset
    paths[1].write_bytes(paths[1].read_bytes()[:cut])  # keeps its first sample
    paths[2].write_bytes(b"")
    out = invoke("dataset", "inspect", str(paths[0].parent), "--json", "--tokenizer", "byte")
    report = json.loads(out.output)
    assert report["scanned"] == 5 and report["valid"] == 4
    assert report["valid"] + sum(report["rejected"].values()) == report["scanned"]
    assert report["rejected"] == {"empty_file": 1}
    assert report["damaged"] == {"empty_shard": 1, "truncated_tar": 1}
    assert report["rejected_examples"]["empty_shard"] == [str(paths[2])]
    table = invoke("dataset", "inspect", str(paths[0].parent), "--tokenizer", "byte").output
    assert "damaged shards/files" in table and "truncated_tar (shard/file)" in table


def test_inspect_limit_and_preset(write_shards):
    folder = write_shards(2, 4)[0].parent
    out = invoke("dataset", "inspect", str(folder), "--json", "--limit", "3", "--preset",
                 "laion", "--tokenizer", "byte")
    report = json.loads(out.output)
    assert report["scanned"] == 3 and not report["complete"] and report["preset"] == "laion"


def test_inspect_reports_each_sample_scanned(write_shards, tmp_path):
    shards = write_shards(2, 4)[0].parent  # a scan of 100,000 images said nothing for minutes
    for source, limit, expected in ((shards, 5, None), (shards, 1000, None)):
        calls: list[tuple[int, int | None]] = []
        inspect_source(DataConfig(source=str(source)), tokenizer="byte", limit=limit,
                       on_scan=lambda n, total, calls=calls: calls.append((n, total)))
        assert calls == [(n, expected) for n in range(1, min(limit, 8) + 1)]
    root = tmp_path / "imgs"  # a folder knows its count: the bar has an end
    root.mkdir()
    for i in range(6):
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"image {i}")
    for limit, expected in ((4, 4), (1000, 6)):
        calls = []
        inspect_source(DataConfig(source=str(root)), tokenizer="byte", limit=limit,
                       on_scan=lambda n, total, calls=calls: calls.append((n, total)))
        assert calls == [(n, expected) for n in range(1, expected + 1)]


def test_inspect_tables_preview_and_benchmark(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for name, data in odd_images().items():
        (root / f"{name}.png").write_bytes(data)
        (root / f"{name}.txt").write_text(f"a picture called {name}")
    (root / "wide.jpg").write_bytes(encode(photo(120, 40)))
    (root / "wide.txt").write_text("a wide one")
    preview = tmp_path / "grid.png"
    out = invoke("dataset", "inspect", str(root), "--preview", str(preview), "--benchmark",
                 "--tokenizer", "byte", "--set", "data.min_image_size=8")
    assert out.exit_code == 0, out.output
    for text in ("samples in source", "decompression_bomb", "truncated_image",
                 "converted from CMYK", "images/s per worker", "aspect (w/h)"):
        assert text in out.output, text
    grid = Image.open(preview)
    assert grid.size[0] >= 3 * 160


def test_inspect_benchmark_figure_is_positive():
    report = inspect_source(DataConfig(demo_size=20), tokenizer="byte", benchmark=True,
                            benchmark_samples=10)
    assert report.benchmark["images_per_s_per_worker"] > 0 and report.valid == 20


@pytest.mark.parametrize("source, words", [
    ("/no/such/dir", "does not exist"),
    ("demo:nope", "Unknown demo dataset"),
    ("shards-{000..003}.tar", "do not exist"),
    ("/no/such/*.parquet", "No Parquet files"),
    ("hf:/no/such/dataset", "the folder '/no/such/dataset' does not exist; pass a folder"),
    ("kohay:dataset.toml", "does not exist, and 'kohay' is no source type; did you mean "
     "'kohya:'?"),
    ("pipe:cat shard.tar", "is a pipe: URL, a shell command"),
    ("s3://bucket/shard-{0..3}.tar", "glidectl does not read s3:// URLs"),
    ("http://127.0.0.1:1/shard-{0..3}.tar", "cannot be fetched"),  # port 1: refused
])
def test_bad_source_is_one_line_and_exit_2(source, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", source, "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and words in err and err.count("\n") == 1


@pytest.mark.parametrize("where, words", [
    ("folder", "is a folder"),
    ("under_a_file", "is a file"),
])
def test_unwritable_preview_is_one_line_before_the_scan(tmp_path, where, words, capsys):
    (tmp_path / "a_file").write_text("x")
    preview = {"folder": tmp_path, "under_a_file": tmp_path / "a_file" / "grid.png"}[where]
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", "demo:shapes", "--limit", "2", "--tokenizer", "byte",
              "--preview", str(preview)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: --preview") and words in err and err.count("\n") == 1


def test_a_preview_replaces_only_an_earlier_preview(tmp_path, capsys):
    """`--preview ds/a0.png` replaced a training image with the grid (so did a sample's PNG
    or a training preview), and `--preview pv.jpg` wrote PNG bytes under that name; only a
    grid an earlier inspect wrote is replaced now."""
    picture = tmp_path / "a0.png"
    Image.new("RGB", (4, 4), "red").save(picture)
    before = picture.read_bytes()
    args = ["dataset", "inspect", "demo:shapes", "--limit", "2", "--tokenizer", "byte"]
    for path, words in ((picture, "is a PNG that dataset inspect did not write"),
                        (tmp_path / "pv.jpg", "would hold a PNG under another name")):
        with pytest.raises(SystemExit) as info:
            main([*args, "--preview", str(path)])
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.count("\n") == 1 and words in err, err
    assert picture.read_bytes() == before and not (tmp_path / "pv.jpg").exists()
    grid = tmp_path / "grid.png"
    for _ in range(2):  # the second run replaces the first one's grid
        with pytest.raises(SystemExit) as info:
            main([*args, "--preview", str(grid)])
        assert info.value.code == 0, capsys.readouterr().err
    assert grid.is_file()


def test_a_preview_that_cannot_be_written_whole_keeps_the_old_one(tmp_path, capsys,
                                                                  monkeypatch):
    """A full disk while the grid is written: one sentence, and the preview of an earlier
    inspect is kept whole (no half PNG, no temp file left beside it)."""
    import errno

    from glidectl.data.inspection import PREVIEW_MARK
    from glidectl.errors import WriteError
    from glidectl.images import save_png

    preview = tmp_path / "grid.png"
    save_png(Image.new("RGB", (4, 4), "red"), preview, {PREVIEW_MARK: "dataset inspect"})
    old = preview.read_bytes()

    def half(image, fp, *args, **kwargs):
        with open(fp, "wb") as fh:
            fh.write(b"\x89PNG\r\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half)
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", "demo:shapes", "--limit", "2", "--tokenizer", "byte",
              "--preview", str(preview)])
    err = capsys.readouterr().err
    assert info.value.code == WriteError.exit_code and err.count("\n") == 1, err
    assert err.startswith("Error: Cannot write") and "No space left" in err
    assert preview.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


@pytest.mark.parametrize("name", ["cat.jpg", "metadata.jsonl"])
def test_a_file_of_an_image_folder_as_source_names_its_folder(tmp_path, name, capsys):
    (tmp_path / "cat.jpg").write_bytes(encode(photo(40, 40)))
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "cat.jpg", "text": "a cat"}\n')
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", str(tmp_path / name), "--tokenizer", "byte"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "does not exist" not in err and "is a file" in err and "image folder" in err
    assert f"(for the images beside it, pass its folder {str(tmp_path)!r})" in err


def test_unknown_preset_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", "demo:shapes", "--preset", "laoin"])
    assert info.value.code == 2
    assert "Did you mean 'laion'" in capsys.readouterr().err


def test_inspect_counts_gpt2_tokens_by_default(gpt2_vocab):
    out = invoke("dataset", "inspect", "demo:shapes", "--limit", "6", "--json",
                 "--set", f"model.vocab_dir={gpt2_vocab}")
    report = json.loads(out.output)
    assert report["tokenizer"] == "gpt2"
    assert report["caption_tokens"]["max"] == 7  # "a red circle on a white background"


def test_inspect_with_a_config_counts_truncation_at_the_model_s_text_ctx(tmp_path):
    """A quickstart-size model reads 40 bytes: `--config` reported its 51-byte captions as
    0 % truncated, measured at 128, while training cut ", black and white" off them."""
    root = tmp_path / "photos"
    root.mkdir()
    for i, caption in enumerate(["a photo of a red ball in a park",
                                 "a photo of a red ball in a park, black and white"]):
        Image.new("RGB", (32, 32), (200, 40, 30)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(caption)
    config = tmp_path / "glide.toml"
    config.write_text('[model]\nsize = "quickstart"\n[data]\nmin_image_size = 16\n')
    report = json.loads(invoke("dataset", "inspect", str(root), "--json", "-c",
                               str(config)).output)
    assert (report["text_ctx"], report["truncated_share"]) == (40, 0.5)
    alone = json.loads(invoke("dataset", "inspect", str(root), "--json", "--tokenizer",
                              "byte").output)
    assert (alone["text_ctx"], alone["truncated_share"]) == (128, 0.0)
    given = json.loads(invoke("dataset", "inspect", str(root), "--json", "-c", str(config),
                              "--text-ctx", "64").output)
    assert given["text_ctx"] == 64
    # the same model named by --set alone (it took 128 unless a file was given too)
    flags = json.loads(invoke("dataset", "inspect", str(root), "--json", "--set",
                              "model.size=quickstart", "--set", "data.min_image_size=16").output)
    assert (flags["text_ctx"], flags["tokenizer"]) == (40, "byte")


def test_inspect_warns_of_set_data_keys_the_source_does_not_read(write_shards, tmp_path):
    """`--set data.reg_source=...` on shards was dropped without a word; train warns of it."""
    folder = write_shards(1, 2)[0].parent
    out = invoke("dataset", "inspect", str(folder), "--json", "--tokenizer", "byte",
                 "--set", "data.reg_source=reg")
    assert out.exit_code == 0, out.output
    assert out.stderr == ("Warning: data.reg_source is ignored: this run reads webdataset "
                          "data, which does not read it.\n")
    assert json.loads(out.stdout)["valid"] == 2
    root = tmp_path / "photos"
    root.mkdir()
    Image.new("RGB", (32, 32)).save(root / "a.png")
    (root / "a.txt").write_text("a black square")
    out = invoke("dataset", "inspect", str(root), "--tokenizer", "byte", "--set",
                 "data.image_key=png", "--set", "data.kohya_folders=false")
    assert out.exit_code == 0, out.output
    assert ("Warning: data.image_key is ignored: this run reads folder data, which does not "
            "read it.") in out.stderr and "kohya_folders" not in out.stderr


def test_inspect_says_when_source_replaces_a_set_data_source(write_shards, tmp_path):
    """`--set data.source=B` beside SOURCE A inspected A without a word."""
    folder = write_shards(1, 2)[0].parent
    out = invoke("dataset", "inspect", str(folder), "--json", "--tokenizer", "byte",
                 "--set", f"data.source={tmp_path}", "--set", "data.preset=simple")
    assert out.exit_code == 0, out.output
    assert f"Warning: --set data.source={tmp_path} not used: SOURCE {str(folder)!r} is what is " \
           "inspected." in out.stderr and "data.preset" not in out.stderr
    assert json.loads(out.stdout)["valid"] == 2
    same = invoke("dataset", "inspect", str(folder), "--json", "--tokenizer", "byte",
                  "--set", f"data.source={folder}")
    assert same.exit_code == 0 and "not used" not in same.stderr


def test_inspect_names_where_rejected_samples_keep_their_captions_and_images(write_shards):
    def extra(s, i):
        if i == 0:  # its image under .tif, which data.image_key does not list
            return {"jpg": None, "tif": encode(photo(48, 40), "TIFF")}
        return {"txt": None, "caption": f"a dog {i}"}

    folder = write_shards(1, 3, extra=extra)[0].parent
    out = invoke("dataset", "inspect", str(folder), "--json", "--tokenizer", "byte")
    report = json.loads(out.stdout)
    assert report["rejected"] == {"missing_caption": 2, "missing_image": 1}
    assert report["notes"] == [
        "2 samples without a .txt caption (data.caption_key) carry a .caption file: set "
        "data.caption_key = \"caption\" to read it.",
        "1 sample without a .jpg/.png/.jpeg/.webp image (data.image_key) carries a .tif file: "
        "set data.image_key = \"jpg;png;jpeg;webp;tif\" to read it."]


def test_inspect_says_how_a_small_dataset_is_batched(tmp_path):
    """Three images in batches of 4 repeat across epochs, and ten leave two of four workers
    out: inspect says so, as training will."""
    for n in (3, 10):
        root = tmp_path / f"n{n}"
        root.mkdir()
        for i in range(n):
            (root / f"{i}.png").write_bytes(encode(photo(40, 40, i), "PNG"))
            (root / f"{i}.txt").write_text(f"picture {i}")
    args = ("--tokenizer", "byte", "-s", "train.batch_size=4", "-s", "data.workers=4")
    out = invoke("dataset", "inspect", str(tmp_path / "n3"), *args)
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert ("Batches (train.batch_size = 4): 3 samples are fewer than a batch of 4: each batch "
            "runs on into the next epoch (a fresh shuffle), so images repeat.") in text
    out = invoke("dataset", "inspect", str(tmp_path / "n10"), "--json", *args)
    assert json.loads(out.output)["batching"] == [
        "data.workers = 4: using 2 DataLoader workers, as 10 samples make 2 batches of 4 and a "
        "worker batches only its own share (one holding less than a batch would leave it out)."]
    out = invoke("dataset", "inspect", str(tmp_path / "n10"), "--json", "--tokenizer", "byte")
    assert json.loads(out.output)["batching"] == []  # batches of 8 (the default), no workers
    # the config's validation.holdout leaves its samples out of the epoch, as training does
    out = invoke("dataset", "inspect", str(tmp_path / "n10"), "--json", "--tokenizer", "byte",
                 "-s", "train.batch_size=8", "-s", "validation.holdout=3",
                 "-s", "validation.every=5")
    report = json.loads(out.output)
    assert report["samples_per_epoch"] == 7 and report["total_samples"] == 10
    assert report["batching"][0].startswith("7 samples are fewer than a batch of 8")
    assert any(n.startswith("validation.holdout = 3: training leaves out the first 3 valid "
                            "samples (") for n in report["notes"])


@pytest.mark.parametrize("files, problem", [
    ({}, "does not exist"),
    ({"encoder.json": "{not json", "vocab.bpe": "#version: 0.2\n"},
     "holds files that are not GPT-2's matching encoder.json and vocab.bpe ("),
])
def test_inspect_says_a_bad_model_vocab_dir_instead_of_counting_bytes(capsys, tmp_path, files,
                                                                       problem):
    """The "auto" tokenizer counted bytes without a word when model.vocab_dir could not be
    read; train stops on the same folder with this sentence."""
    vocab = tmp_path / "vocab"
    for name, text in files.items():
        vocab.mkdir(exist_ok=True)
        (vocab / name).write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", "demo:shapes", "--limit", "2", "--json",
              "--set", f"model.vocab_dir={vocab}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert f"The GPT-2 vocabulary folder {str(vocab)!r} set as model.vocab_dir {problem}" in err
    assert err.rstrip().endswith("set model.vocab_dir to a folder holding GPT-2's encoder.json "
                                 "and vocab.bpe, or leave it empty for the default "
                                 "vocabulary."), err


@pytest.mark.parametrize("size, tokenizer", [("quickstart", "byte"), ("small", "gpt2")])
def test_inspect_with_a_config_counts_tokens_as_its_scratch_model_reads_them(
        tmp_path, gpt2_vocab, size, tokenizer):
    """A scratch model's tokenizer is its size preset's, as train picks it: a "small" one
    reads GPT-2 tokens, which --config counted as bytes."""
    config = tmp_path / "glide.toml"
    config.write_text(f'[model]\nsize = "{size}"\nvocab_dir = "{gpt2_vocab}"\n')
    out = invoke("dataset", "inspect", "demo:shapes", "--limit", "2", "--json", "-c",
                 str(config))
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["tokenizer"] == tokenizer


def _inspect(capsys, *args) -> tuple[int, str, str]:
    """``glidectl dataset inspect ARGS`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main(["dataset", "inspect", *map(str, args), "--tokenizer", "byte"])
    captured = capsys.readouterr()
    return done.value.code or 0, captured.out, captured.err


def test_inspect_sizes_images_as_the_config_trains_them_unless_size_is_given(
        tmp_path, capsys, monkeypatch):
    """`dataset inspect --config FILE` used --size 64 whatever the config's data.resolution."""
    from glidectl.data import inspection

    sizes = []

    def recorded(*args, **kwargs):
        sizes.append(kwargs["image_size"])
        return real(*args, **kwargs)

    real = inspection.inspect_source
    monkeypatch.setattr(inspection, "inspect_source", recorded)
    root, config = _picture_and_config(tmp_path)
    scratch = tmp_path / "scratch.toml"
    scratch.write_text('[model]\ninit = "scratch"\nsize = "quickstart"\n')
    for args, size in (((), 64), (("--config", config), 32), (("--config", config, "--size", 48),
                                                             48),
                       (("--set", "data.resolution=40"), 40), (("--config", scratch), 12),
                       (("--config", scratch, "--set", "model.kind=upsample"), 256)):
        assert _inspect(capsys, root, *args)[0] == 0
        assert sizes.pop() == size, args


def _picture_and_config(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of one captioned 48×40 picture, and a config with data.resolution = 32."""
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.png").write_bytes(encode(photo(48, 40, 1), "PNG"))
    (root / "a.txt").write_text("a picture")
    config = tmp_path / "glide.toml"
    config.write_text('[data]\nresolution = 32\n')
    return root, config


def test_size_sizes_the_tiles_over_the_config_s_resolution(tmp_path, capsys, monkeypatch):
    """`--size 48` with a config's data.resolution = 32 cut the preview tiles and the
    grey-count tiles at 32 px: the dataset sized them by data.resolution first."""
    from glidectl.data import inspection

    sizes = []

    def recorded(*args, **kwargs):
        dataset = real(*args, **kwargs)
        sizes.append(dataset.pipeline.transform.size)
        return dataset

    real = inspection.build_dataset
    monkeypatch.setattr(inspection, "build_dataset", recorded)
    root, config = _picture_and_config(tmp_path)
    for args, size in (((), 32), (("--size", 48), 48)):
        assert _inspect(capsys, root, "--config", config, *args)[0] == 0
        assert sizes.pop() == size, args


def test_a_preview_inside_the_source_folder_is_refused(write_shards, tmp_path, capsys):
    """`inspect SHARDS --preview SHARDS/preview.png` wrote the grid beside the shards, which
    made their folder an image folder: training then refused it (missing_caption: 1)."""
    folder = write_shards(1, 2)[0].parent
    for source, preview in ((folder, folder / "preview.png"),
                            (f"folder:{tmp_path}", tmp_path / "out" / "p.png")):
        code, _, err = _inspect(capsys, source, "--preview", preview)
        assert code == 2 and err.startswith(f"Error: --preview {str(preview)!r} lies in the "
                                            f"data source {str(source)!r}: the grid would")
        assert not preview.exists() and err.count("\n") == 1
    assert _inspect(capsys, folder, "--preview", tmp_path / "preview.png")[0] == 0


def test_rejected_file_names_with_brackets_are_shown_as_written(tmp_path, capsys,
                                                               monkeypatch):
    """Rejected examples were printed as rich markup: 'cat [b]dog.png' showed as 'cat dog.png'
    and a key holding '[/b]' ('a [/b] c.png') ended in a MarkupError traceback."""
    monkeypatch.setenv("COLUMNS", "400")  # no line wrapped
    root = tmp_path / "[i]imgs"
    (root / "a [").mkdir(parents=True)
    for name in ("cat [b]dog.png", "a [/b] c.png"):
        (root / name).write_bytes(encode(photo(40, 40), "PNG"))
    code, out, err = _inspect(capsys, root)
    assert code == 2 and "Traceback" not in out + err
    flat = "".join(out.split())  # a title wraps at its table's width (a long tmp path)
    assert "cat[b]dog.png" in flat and "a[/b]c.png" in flat and "[i]imgs(folder" in flat, out


def test_a_folder_with_no_valid_image_prints_its_report_then_fails_as_training(
        tmp_path, capsys, data_cfg, byte_tok):
    """Every image unreadable: the report (which names why) and then the sentence training
    stops with, exit 2, as for an empty folder; it was exit 0 and training then failed."""
    from glidectl.data.stats import DataError

    root = tmp_path / "bad"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.jpg").write_bytes(b"<html>not a picture</html>")
        (root / f"{i}.txt").write_text("a cat")
    code, out, err = _inspect(capsys, root)
    assert code == 2 and "unreadable_image" in out and "rejections and conversions" in out
    said = (f"No valid samples in data source {str(root)!r}: 3 rejected (unreadable_image: 3)"
            ", so training would refuse it.")
    assert err == f"Error: {said}\n"
    with pytest.raises(DataError) as training:
        next(iter(build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok,
                                image_size=32, text_ctx=16)))
    assert str(training.value).startswith(said.split(", so")[0] + "; run `glidectl dataset")
    code, out, err = _inspect(capsys, root, "--json")
    assert code == 2 and json.loads(out)["refusal"] == said and err == f"Error: {said}\n"


def test_an_empty_shard_prints_its_report_then_fails(tmp_path, capsys):
    shard = tmp_path / "empty.tar"
    tarfile.open(shard, "w").close()
    code, out, err = _inspect(capsys, shard)
    assert code == 2 and "samples in source" in out
    assert err == (f"Error: Data source {str(shard)!r} yielded no samples, so training would "
                   "refuse it; check that it holds images (and captions).\n")


def test_a_limit_short_of_max_rejects_with_no_valid_sample_is_no_refusal(tmp_path, capsys):
    """Training stops after data.max_rejects rejections in a row: a scan cut short before
    that many says nothing it cannot know."""
    root = tmp_path / "bad"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(b"")
        (root / f"{i}.txt").write_text("a cat")
    code, _, err = _inspect(capsys, root, "--limit", "2", "--set", "data.max_rejects=3")
    assert code == 0 and err == ""
    code, _, err = _inspect(capsys, root, "--limit", "2", "--set", "data.max_rejects=2")
    assert code == 2 and "2 rejected (empty_file: 2), so training would refuse it" in err


def test_inspect_reports_the_grey_share_as_training_judges_it(tmp_path, capsys, data_cfg,
                                                              byte_tok, monkeypatch):
    """Grey images (a greyscale photo saved as an RGB JPEG, with its chroma rounding, and an
    L PNG) are counted by the test training decides grey sampling with; it was not said."""
    from glidectl.training.state import TrainState

    root = tmp_path / "imgs"
    root.mkdir()
    images = {"a.jpg": encode(photo(48, 40, 1).convert("L").convert("RGB")),
              "b.png": encode(photo(48, 40, 2).convert("L"), "PNG"),
              "c.png": encode(photo(48, 40, 3), "PNG")}
    for name, data in images.items():
        (root / name).write_bytes(data)
        (root / name).with_suffix(".txt").write_text("a picture")
    monkeypatch.setenv("COLUMNS", "200")  # the table's rows on one line each
    code, out, _ = _inspect(capsys, root, "--json", "--size", "32")
    report = json.loads(out)
    assert code == 0 and (report["grey"], report["grey_share"]) == (2, pytest.approx(2 / 3))
    code, out, _ = _inspect(capsys, root)
    assert "2 of 3 (66.7%); the other holds colour, so a run on them samples in" in out
    (root / "c.png").unlink()
    code, out, _ = _inspect(capsys, root)
    assert "2 of 2 (100.0%): a run on them samples grey" in out
    state = TrainState(None, None)  # what training decides on the same images: grey
    for sample in build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok,
                                image_size=32, text_ctx=16):
        state.see_images(sample["image"][None])
    assert state.grey_data is True


@pytest.mark.parametrize("kind", ["folder", "shards"])
def test_inspect_says_when_the_valid_samples_make_not_one_batch(tmp_path, write_shards, kind,
                                                                data_cfg, byte_tok):
    """Ten files of which seven are broken (an epoch counted 10, so batches do not run on),
    or four samples in shards (whose epoch length training does not know): training stops
    with 'gave not one batch of 8', and inspect said nothing of it."""
    from glidectl.errors import GlidectlError
    from glidectl.training.data_stream import DataStream

    if kind == "folder":
        root = tmp_path / "imgs"
        root.mkdir()
        for i in range(10):
            (root / f"{i}.png").write_bytes(encode(photo(40, 40, i), "PNG") if i < 3 else b"x")
            (root / f"{i}.txt").write_text(f"picture {i}")
        said = ("3 valid samples an epoch (7 rejected (unreadable_image: 7)) make not one batch "
                "of 8, and here batches do not run on into the next epoch, so training would "
                "stop before its first step; lower train.batch_size, or fix or add samples.")
    else:
        root = write_shards(1, 4)[0].parent
        said = "4 valid samples an epoch make not one batch of 8, and here"
    out = invoke("dataset", "inspect", str(root), "--json", "--tokenizer", "byte")
    assert out.exit_code == 0 and json.loads(out.output)["batching"][-1].startswith(said)
    out = invoke("dataset", "inspect", str(root), "--json", "--tokenizer", "byte",
                 "-s", "train.batch_size=3")
    assert json.loads(out.output)["batching"] == []
    dataset = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=32,
                            text_ctx=16)
    with pytest.raises(GlidectlError, match="gave not one batch of 8"):
        DataStream(dataset, batch_size=8).next()  # as training does
