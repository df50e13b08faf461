"""Parquet files and Hugging Face datasets as sources, on fixtures written here, offline
(tests/data/conftest.py sets HF_DATASETS_OFFLINE=1)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from data_helpers import encode, photo, replays_after_resume
from typer.testing import CliRunner

from glidectl import plugins
from glidectl.cli.app import build_app, main
from glidectl.data import build_dataset
from glidectl.data.source_api import SourceType
from glidectl.data.sources import DemoSource, open_source
from glidectl.errors import GlidectlError
from glidectl.hookspecs import hookimpl
from glidectl.training.data_stream import DataStream

# (punsafe, pwatermark) per row; row 3 has no image, row 5 garbage bytes
LAION_SCORES = [(0.01, 0.1), (0.9, 0.1), (0.01, 0.95), (0.01, 0.1), (0.2, 0.2), (0.01, 0.1),
                (0.05, 0.3), (0.3, 0.6)]


def laion_rows(n=8, offset=0):
    rows = []
    for i in range(offset, offset + n):
        punsafe, pwatermark = LAION_SCORES[i % len(LAION_SCORES)]
        image = encode(photo(48, 40, i)) if i % 8 != 3 else None
        rows.append({"jpg": b"garbage" if i % 8 == 5 else image, "caption": f"photo {i}",
                     "similarity": 0.3, "punsafe": punsafe, "pwatermark": pwatermark,
                     "width": 480, "height": 400, "url": f"http://x/{i}.jpg"})
    return rows


def write_parquet(path, rows, row_group_size=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def keys(ds):
    return [s["key"] for s in ds]


def make(cfg, tok, **kw):
    return build_dataset(cfg, tokenizer=tok, image_size=32, text_ctx=16, **kw)


class _NumbersPlugin:
    @hookimpl
    def register_data_sources(self, register):
        opener = lambda spec, cfg, res: DemoSource("shapes", int(spec), res)  # noqa: E731
        register("numbers", SourceType("numbers", opener, "n demo shapes"))


def test_register_data_sources_adds_a_source_type(data_cfg, byte_tok):
    assert {"demo", "folder", "webdataset", "parquet", "hf"} <= set(plugins.data_sources().names())
    assert plugins.data_sources().entry("wds").plugin == "glidectl.data.builtin_sources"
    plugins.load_plugins()
    plugins.pm.register(_NumbersPlugin(), name="numbers-plugin")
    plugins.refresh()
    try:
        ds = make(data_cfg(source="numbers:5"), byte_tok)
        assert len(keys(ds)) == 5 and ds.source.kind == "demo"
        assert plugins.data_sources().entry("numbers").plugin == "numbers-plugin"
    finally:
        plugins.pm.unregister(name="numbers-plugin")
        plugins.refresh()


def test_parquet_file_glob_and_folder_specs(tmp_path, data_cfg):
    a = write_parquet(tmp_path / "pq" / "a.parquet", laion_rows(8), row_group_size=3)
    write_parquet(tmp_path / "pq" / "sub" / "b.parquet", laion_rows(4, offset=8))
    for spec, n in [(str(a), 8), (str(tmp_path / "pq" / "*.parquet"), 8),
                    (str(tmp_path / "pq"), 12), (f"parquet:{tmp_path / 'pq'}", 12)]:
        source = open_source(spec, data_cfg())
        assert source.kind == "parquet" and source.num_samples == n, spec
    assert len(open_source(str(a), data_cfg()).units()) == 3  # row groups of 3, 3, 2
    odd = write_parquet(tmp_path / "pq [2024]" / "a [1].parquet", laion_rows(2))
    assert open_source(str(odd), data_cfg()).num_samples == 2  # was taken for a glob


def test_parquet_laion_metadata_reaches_the_preset_with_exact_counts(tmp_path, data_cfg,
                                                                     byte_tok):
    path = write_parquet(tmp_path / "laion.parquet", laion_rows(8), row_group_size=4)
    cfg = data_cfg(source=str(path), preset="laion", max_punsafe=0.1, max_pwatermark=0.5)
    ds = make(cfg, byte_tok, train=False)
    assert keys(ds) == ["laion.parquet/0", "laion.parquet/6"]
    assert ds.stats()["rejected"] == {
        "punsafe": 3, "watermark": 1, "missing_image": 1, "unreadable_image": 1}
    sample = next(iter(make(data_cfg(source=str(path)), byte_tok, train=False)))
    assert sample["caption"] == "photo 0" and sample["image"].shape == (3, 32, 32)


def test_columns_are_detected_or_configured(tmp_path, data_cfg, byte_tok):
    rows = [{"picture": encode(photo(40, 40, i), "PNG"), "alt": f"alt {i}",
             "text": f"text {i}"} for i in range(3)]
    path = write_parquet(tmp_path / "cols.parquet", rows)
    with pytest.raises(GlidectlError, match="no image column.*picture, alt, text.*image_column"):
        open_source(str(path), data_cfg())
    cfg = data_cfg(source=str(path), image_column="picture")
    assert [s["caption"] for s in make(cfg, byte_tok, train=False)] == [
        "text 0", "text 1", "text 2"]
    cfg.caption_column = "alt"
    assert [s["caption"] for s in make(cfg, byte_tok, train=False)] == ["alt 0", "alt 1", "alt 2"]
    cfg.caption_column = "nope"
    with pytest.raises(GlidectlError, match="data.caption_column is 'nope'"):
        make(cfg, byte_tok)
    # no caption column found: every row was "missing_caption", with no word of the key
    path = write_parquet(tmp_path / "prompts.parquet",
                         [{"image": r["picture"], "prompt": r["alt"]} for r in rows])
    with pytest.raises(GlidectlError) as info:
        open_source(str(path), data_cfg())
    assert str(info.value) == (
        f"Found no caption column in {str(path)!r} (columns: image, prompt); set "
        "data.caption_column to the column that holds the captions.")


def test_each_parquet_file_is_read_by_its_own_columns(tmp_path, data_cfg, byte_tok):
    """Parquet files joined from two datasets (img2dataset's `jpg`, a datasets export's
    `image`) were read by the first file's columns: every row of the other was rejected as
    missing_image though it held one, and a column named in data.caption_column that only a
    later file has was refused naming the first file's columns."""
    folder = tmp_path / "joined"
    write_parquet(folder / "0.parquet", [{"jpg": encode(photo(40, 40, i)), "caption": f"c {i}"}
                                         for i in range(2)])
    write_parquet(folder / "1.parquet", [{"image": encode(photo(40, 40, i)), "text": f"t {i}"}
                                         for i in range(2)])
    ds = make(data_cfg(source=str(folder)), byte_tok, train=False)
    assert sorted(s["caption"] for s in ds) == ["c 0", "c 1", "t 0", "t 1"]
    assert ds.stats()["rejected"] == {}
    write_parquet(folder / "2.parquet", [{"jpg": encode(photo(40, 40, 0)), "prompt": "p"}])
    for column, lacking, has in (("", "2", "'caption'"), ("prompt", "0", "'prompt'")):
        with pytest.raises(GlidectlError) as info:
            open_source(str(folder), data_cfg(caption_column=column))
        assert str(info.value).startswith(f"Parquet file {str(folder / f'{lacking}.parquet')!r}")
        assert f"has {has}; give the files the same column names" in str(info.value)


def test_a_table_of_image_links_says_to_fetch_the_images(tmp_path, data_cfg, byte_tok,
                                                         capsys):
    """LAION's metadata Parquet (URL, TEXT, ...) holds links, not images: its error said
    to set data.image_column, and with data.image_column = "URL" each link was opened as a
    file beside the table and counted as unreadable_file."""
    path = write_parquet(tmp_path / "laion" / "part-0.parquet", [
        {"URL": f"https://example.com/{i}.jpg", "TEXT": f"t {i}", "punsafe": 0.01}
        for i in range(2)])
    with pytest.raises(GlidectlError) as info:
        open_source(str(path.parent), data_cfg())
    assert str(info.value) == (
        f"Found no image column in {str(path.parent)!r} (columns: URL, TEXT, punsafe), only "
        "links in 'URL', and glidectl downloads no images: fetch them first (img2dataset "
        "writes shards or Parquet that hold them) and point data.source at those, or set "
        "data.image_column to a column of image bytes or paths.")
    with pytest.raises(SystemExit) as run:
        main(["dataset", "inspect", str(path.parent), "--tokenizer", "byte", "--set",
              "data.image_column=URL"])
    assert run.value.code == 2
    assert "2 rejected (image_url: 2), so training would refuse it. Column 'URL' holds image " \
        "links, and glidectl downloads no images" in capsys.readouterr().err
    ds = make(data_cfg(source=str(path.parent), image_column="URL"), byte_tok)
    with pytest.raises(GlidectlError, match=r"image_url: 2.*Column 'URL' holds image links"):
        list(ds)


def test_image_paths_are_relative_to_the_parquet_file(tmp_path, data_cfg, byte_tok):
    folder = tmp_path / "paths"
    (folder / "img").mkdir(parents=True)
    for i in range(2):
        photo(40, 40, i).save(folder / "img" / f"{i}.png")
    rows = [{"image": f"img/{i}.png", "text": f"p {i}"} for i in range(3)]  # 2.png is missing
    write_parquet(folder / "meta.parquet", rows)
    ds = make(data_cfg(source=str(folder / "meta.parquet")), byte_tok, train=False)
    assert keys(ds) == ["meta.parquet/0", "meta.parquet/1"]
    assert ds.stats()["rejected"] == {"unreadable_file": 1}
    # the folder itself, images beside the table: read as Parquet, not as an image folder
    assert open_source(str(folder), data_cfg()).kind == "parquet"


def test_img2dataset_files_output_with_its_parquet_index_is_an_image_folder(tmp_path, data_cfg,
                                                                            byte_tok):
    out = tmp_path / "i2d"
    for shard in range(2):  # NNNNN/ with images and .txt captions, NNNNN.parquet its index
        (out / f"{shard:05d}").mkdir(parents=True)
        for i in range(2):
            key = f"{shard:05d}{i:04d}"
            (out / f"{shard:05d}" / f"{key}.jpg").write_bytes(encode(photo(48, 40, i)))
            (out / f"{shard:05d}" / f"{key}.txt").write_text(f"photo {key}")
        write_parquet(out / f"{shard:05d}.parquet",
                      [{"url": f"http://x/{i}", "key": f"{shard:05d}{i:04d}",
                        "status": "success", "caption": f"photo {i}"} for i in range(2)])
    ds = make(data_cfg(source=str(out)), byte_tok, train=False)
    assert ds.source.kind == "folder" and len(keys(ds)) == 4
    assert {s["caption"] for s in ds} == {"photo 000000000", "photo 000000001",
                                          "photo 000010000", "photo 000010001"}


def test_a_damaged_parquet_file_is_counted_and_skipped(tmp_path, data_cfg, byte_tok):
    write_parquet(tmp_path / "ok" / "a.parquet", laion_rows(2))
    (tmp_path / "ok" / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    ds = make(data_cfg(source=str(tmp_path / "ok")), byte_tok, train=False)
    assert keys(ds) == ["a.parquet/0", "a.parquet/1"]
    assert ds.stats()["rejected"] == {"bad_parquet": 1}


def _clean_rows(n):
    return [{"image": encode(photo(40, 36, i)), "text": f"row {i}"} for i in range(n)]


def test_parquet_two_ranks_two_workers_see_every_row_once(tmp_path, data_cfg, byte_tok):
    path = write_parquet(tmp_path / "rows.parquet", _clean_rows(24), row_group_size=3)
    seen = []
    for rank in range(2):
        ds = make(data_cfg(source=str(path), shuffle_buffer=4), byte_tok, rank=rank,
                  world_size=2, seed=1)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
        seen += [k for batch in loader for k in batch["key"]]
    assert len(seen) == len(set(seen)) == 24


def _resume_check(cfg, tok, workers):
    return replays_after_resume(
        lambda: DataStream(make(cfg, tok, seed=3), batch_size=2, seed=3, workers=workers))[0]


def test_parquet_resume_is_exact_with_workers(tmp_path, data_cfg, byte_tok):
    path = write_parquet(tmp_path / "rows.parquet", _clean_rows(12), row_group_size=3)
    cfg = data_cfg(source=str(path), shuffle_buffer=5, flip=True, crop_scale=[0.5, 1.0])
    assert _resume_check(cfg, byte_tok, workers=2).epoch >= 1


def _hf_dataset(rows):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                                  "punsafe": datasets.Value("float32")})
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": r["image"], "path": None} for r in rows],
         "text": [r["text"] for r in rows], "punsafe": [0.9 if i == 2 else 0.0
                                                        for i in range(len(rows))]},
        features=features)


def test_hf_saved_dataset_and_splits(tmp_path, data_cfg, byte_tok):
    import datasets

    rows = _clean_rows(6)
    rows[4]["image"] = b"not an image"
    single = tmp_path / "single"
    _hf_dataset(rows).save_to_disk(str(single))
    ds = make(data_cfg(source=f"hf:{single}", preset="laion"), byte_tok, train=False)
    assert keys(ds) == ["train/0", "train/1", "train/3", "train/5"]
    assert ds.stats()["rejected"] == {"punsafe": 1, "unreadable_image": 1}

    both = tmp_path / "dict"
    datasets.DatasetDict({"train": _hf_dataset(rows[:2]),
                          "validation": _hf_dataset(rows[3:4])}).save_to_disk(str(both))
    cfg = data_cfg(source=f"hf:{both}", split="validation")
    assert [s["caption"] for s in make(cfg, byte_tok, train=False)] == ["row 3"]
    # the folders without hf: are recognised too (they were "image folders with no images")
    assert open_source(str(single), data_cfg()).kind == "hf"
    cfg.source = str(both)
    assert [s["caption"] for s in make(cfg, byte_tok, train=False)] == ["row 3"]
    cfg.split = "test"
    with pytest.raises(GlidectlError, match="no split 'test' .*train, validation.*data.split"):
        make(cfg, byte_tok)


def test_hf_streamed_dataset_splits_across_workers_and_resumes(tmp_path, data_cfg, byte_tok):
    repo = tmp_path / "repo"
    for i in range(4):  # a Hub-style repo: data/<split>-<shard>.parquet, read as a stream
        write_parquet(repo / "data" / f"train-{i:05d}-of-00004.parquet",
                      [{**r, "text": f"shard {i} {r['text']}"} for r in _clean_rows(4)])
    write_parquet(repo / "data" / "test-00000-of-00001.parquet", _clean_rows(1))
    source = open_source(f"hf:{repo}", data_cfg())
    assert source.kind == "hf" and source.units() == ["0", "1", "2", "3"]
    ds = make(data_cfg(source=f"hf:{repo}"), byte_tok)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    seen = [k for batch in loader for k in batch["key"]]
    assert len(seen) == len(set(seen)) == 16
    assert len(keys(make(data_cfg(source=f"hf:{repo}", split="test"), byte_tok))) == 1
    cfg = data_cfg(source=f"hf:{repo}", shuffle_buffer=3, flip=True)
    _resume_check(cfg, byte_tok, workers=0)


def test_dataset_inspect_reads_parquet_and_hf(tmp_path):
    path = write_parquet(tmp_path / "laion.parquet", laion_rows(8))
    out = CliRunner().invoke(build_app(), ["dataset", "inspect", str(path), "--json",
                                           "--tokenizer", "byte", "--preset", "laion"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["kind"] == "parquet" and report["total_samples"] == 8
    assert report["valid"] == 3  # defaults: punsafe and pwatermark at most 0.5
    assert report["rejected"] == {"missing_image": 1, "punsafe": 1, "unreadable_image": 1,
                                  "watermark": 2}
    saved = tmp_path / "saved"
    _hf_dataset(_clean_rows(3)).save_to_disk(str(saved))
    out = CliRunner().invoke(build_app(), ["dataset", "inspect", f"hf:{saved}", "--json",
                                           "--tokenizer", "byte"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["valid"] == 3


def test_hf_hub_name_without_network_is_one_sentence_at_once(data_cfg, monkeypatch):
    """An unresolvable Hub host stops before huggingface_hub's retries (~25 s of them)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # never resolves (RFC 6761)
    with pytest.raises(GlidectlError, match=r"^Cannot open Hugging Face dataset 'someone/"
                                            r"pictures': the Hub \(hub.invalid\) cannot be "
                                            r"reached \(.+\); connect to the network"):
        open_source("hf:someone/pictures", data_cfg())


@pytest.mark.parametrize("spec, message", [
    ("hf:{tmp}/missing", r"^hf:.*/missing: the folder '.*/missing' does not exist; pass a folder"),
    ("hf:./missing", r"^hf:./missing: the folder './missing' \(relative to the current folder"),
    ("hf:~/glidectl-no-such-folder", r"^hf:~/glidectl-no-such-folder: the folder '/"),
    ("hf:{tmp}/notes.txt", r"^hf:.*/notes.txt is a file, not a folder; pass its folder"),
    ("hf:someone/not-cached", r"^Hugging Face dataset 'someone/not-cached' is not in the local "
                              r"cache, and HF_DATASETS_OFFLINE"),
])
def test_hf_paths_that_are_no_folder_and_uncached_names_are_one_sentence(
        spec, message, tmp_path, data_cfg, monkeypatch):
    """A path given as hf: never goes to the Hub (where it was 'cannot reach the Hub')."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(GlidectlError, match=message):
        open_source(spec.format(tmp=tmp_path), data_cfg())


def test_hf_data_files_folder_under_home_is_read(tmp_path, data_cfg, monkeypatch):
    """``hf:~/FOLDER`` of data files (not save_to_disk) reads the folder, not a Hub name."""
    monkeypatch.setenv("HOME", str(tmp_path))
    write_parquet(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet", _clean_rows(2))
    source = open_source("hf:~/repo", data_cfg())
    assert source.describe() == f"hf:{tmp_path / 'repo'}" and source.units() == ["0"]


class _Broken(DemoSource):
    """A demo source whose reading goes wrong the way ``how`` says."""

    how = ""

    def read(self, unit, counter):
        if self.how == "raise":
            raise OSError("disk on fire")
        yield ("key", "not a RawSample")

    def repeats(self, unit):
        return {"repeats": 1.5, "negative": -1}.get(self.how, 1)


def _broken_source(how):
    def opener(spec, cfg, res):
        if how == "open":
            raise FileNotFoundError(spec)
        if how == "object":
            return object()
        source = _Broken("shapes", 4, res)
        source.how = how
        return source

    class Plugin:
        @hookimpl
        def register_data_sources(self, register):
            register("broken", SourceType("broken", opener, "goes wrong"))

    return Plugin()


@pytest.mark.parametrize("how, workers, problem", [
    ("open", 0, "FileNotFoundError: x"),
    ("object", 0, "open() returned object, which has no units, read, describe, kind, "
                  "num_samples, splits_samples (glidectl.data.source_api.Source)"),
    ("raise", 1, "OSError: disk on fire"),
    ("tuple", 0, "read() yielded tuple, not a glidectl.data.records.RawSample"),
    # a TypeError traceback, and "-4 samples are fewer than a batch"
    ("repeats", 0, "its repeats(unit) returned 1.5 (float), not a whole number of reads >= 0"),
    ("negative", 0, "its repeats(unit) returned -1 (int), not a whole number of reads >= 0"),
])
def test_a_plugin_data_source_that_fails_is_one_line_naming_it(data_cfg, byte_tok, how,
                                                               workers, problem):
    plugins.load_plugins()
    plugins.pm.register(_broken_source(how), name="broken-plugin")
    plugins.refresh()
    try:
        with pytest.raises(GlidectlError) as info:
            ds = make(data_cfg(source="broken:x"), byte_tok)
            batches = iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers))
            try:
                list(batches)
            finally:
                getattr(batches, "_shutdown_workers", lambda: None)()
    finally:
        plugins.pm.unregister(name="broken-plugin")
        plugins.refresh()
    assert str(info.value) == (f"Plugin 'broken-plugin' failed in data source 'broken': "
                               f"{problem}; switch it off with GLIDECTL_LOAD_PLUGINS=\"\".")
