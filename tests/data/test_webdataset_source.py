"""Webdataset shards written with TarWriter: specs, splitting, epochs, damaged shards."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import shlex
import tarfile

import pytest
import torch
from data_helpers import encode, photo
from PIL import Image

from glidectl.cli.app import main
from glidectl.data import build_dataset
from glidectl.data.shards import expand_shards, lacks_end_blocks
from glidectl.data.stats import DataError
from glidectl.errors import GlidectlError


def keys(ds):
    return [s["key"].split("/", 1)[1] for s in ds]


def all_ids(n_shards, per_shard):
    return {f"s{s}_{i:03d}" for s in range(n_shards) for i in range(per_shard)}


def test_directory_glob_brace_and_list_specs(write_shards):
    paths = write_shards(4, 2)
    folder = paths[0].parent
    assert expand_shards(str(folder)) == [str(p) for p in paths]
    assert expand_shards(str(folder / "shard-*.tar")) == [str(p) for p in paths]
    assert expand_shards(str(folder / "shard-{00001..00002}.tar")) == [str(p) for p in paths[1:3]]
    assert expand_shards([str(paths[3]), str(paths[0])]) == [str(paths[3]), str(paths[0])]
    assert expand_shards(f"{paths[0]}::{paths[1]}") == [str(paths[0]), str(paths[1])]


def test_a_folder_or_shard_named_with_brackets_or_braces_is_read_as_named(write_shards):
    """A folder 'photos [2024]' (or a tar in it) was taken for a glob matching nothing: "No
    .tar shards found"; 'photos {a,b}' would have been brace-expanded."""
    for name in ("photos [2024]", "photos {a,b}"):
        paths = write_shards(2, 1, folder=name)
        assert expand_shards(str(paths[0].parent)) == [str(p) for p in paths]
        assert expand_shards(str(paths[1])) == [str(paths[1])]


def test_a_folder_of_linked_shard_folders_is_shards(write_shards, tmp_path, data_cfg,
                                                   byte_tok):
    paths = write_shards(2, 2)
    root = tmp_path / "linked"
    root.mkdir()
    (root / "part").symlink_to(paths[0].parent, target_is_directory=True)
    assert expand_shards(str(root)) == [str(root / "part" / p.name) for p in paths]
    ds = build_dataset(data_cfg(source=str(root)), tokenizer=byte_tok, image_size=32,
                       text_ctx=32)
    assert ds.source.kind == "webdataset" and sorted(keys(ds)) == sorted(all_ids(2, 2))


def test_img2dataset_output_with_its_parquet_index_is_read_as_shards(write_shards, data_cfg,
                                                                     byte_tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = write_shards(2, 3)
    for path in paths:  # img2dataset writes NNNNN.parquet (url, key, status, caption) beside
        rows = [{"url": f"http://x/{i}.jpg", "key": f"{i}", "status": "success",
                 "caption": f"caption {i}"} for i in range(3)]
        pq.write_table(pa.Table.from_pylist(rows), path.with_suffix(".parquet"))
        path.with_name(path.stem + "_stats.json").write_text("{}")
    ds = build_dataset(data_cfg(source=str(paths[0].parent)), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    assert ds.source.kind == "webdataset" and sorted(keys(ds)) == sorted(all_ids(2, 3))


def test_missing_shards_are_a_user_error(write_shards):
    folder = write_shards(2, 1)[0].parent
    with pytest.raises(GlidectlError, match=r"1 of 3 shard\(s\)"):
        expand_shards(str(folder / "shard-{00000..00002}.tar"))
    with pytest.raises(GlidectlError, match="No .tar shards"):
        expand_shards(str(folder / "nothing-*.tar"))


def test_one_epoch_reads_every_sample_once(write_shards, data_cfg, byte_tok):
    folder = write_shards(3, 4)[0].parent
    ds = build_dataset(data_cfg(source=str(folder)), tokenizer=byte_tok, image_size=32,
                       text_ctx=32)
    got = keys(ds)
    assert sorted(got) == sorted(all_ids(3, 4))
    sample = next(iter(ds))
    assert sample["image"].shape == (3, 32, 32)
    assert sample["tokens"].dtype == torch.long and sample["mask"].dtype == torch.bool


def test_two_ranks_two_workers_see_every_sample_exactly_once(write_shards, data_cfg,
                                                              byte_tok):
    folder = write_shards(8, 3)[0].parent
    seen = []
    for rank in range(2):
        ds = build_dataset(data_cfg(source=str(folder), shuffle_buffer=4), tokenizer=byte_tok,
                           image_size=32, text_ctx=32, rank=rank, world_size=2, seed=3)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
        mine = [k.split("/", 1)[1] for batch in loader for k in batch["key"]]
        assert len(mine) == 12
        seen += mine
    assert len(seen) == len(set(seen)) == 24
    assert set(seen) == all_ids(8, 3)


def test_fewer_shards_than_processes_split_by_sample(write_shards, data_cfg, byte_tok):
    folder = write_shards(2, 5)[0].parent
    seen = []
    for rank in range(2):
        ds = build_dataset(data_cfg(source=str(folder)), tokenizer=byte_tok, image_size=32,
                           text_ctx=32, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2)
        seen += [k.split("/", 1)[1] for batch in loader for k in batch["key"]]
    assert sorted(seen) == sorted(all_ids(2, 5))


def test_shards_are_reshuffled_each_epoch_with_the_seed(write_shards, data_cfg, byte_tok):
    folder = write_shards(8, 2)[0].parent

    def order(seed, epoch):
        ds = build_dataset(data_cfg(source=str(folder)), tokenizer=byte_tok, image_size=32,
                           text_ctx=32, seed=seed)
        ds.set_epoch(epoch)
        return keys(ds)

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert sorted(order(0, 0)) == sorted(order(0, 1))
    ds = build_dataset(data_cfg(source=str(folder)), tokenizer=byte_tok, image_size=32,
                       text_ctx=32)
    assert keys(ds) != keys(ds)  # without set_epoch each pass counts as a new epoch


def test_eval_order_is_fixed_and_unshuffled(write_shards, data_cfg, byte_tok):
    folder = write_shards(3, 2)[0].parent
    ds = build_dataset(data_cfg(source=str(folder), shuffle_buffer=100), tokenizer=byte_tok,
                       image_size=32, text_ctx=32, train=False)
    assert keys(ds) == sorted(all_ids(3, 2)) == keys(ds)


def test_resampled_stream_is_infinite(write_shards, data_cfg, byte_tok):
    folder = write_shards(2, 2)[0].parent
    ds = build_dataset(data_cfg(source=str(folder), resampled=True), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    got = [s["key"] for s in itertools.islice(iter(ds), 25)]
    assert len(got) == 25 and len(set(got)) <= 4


def _cut_inside(path, member: str) -> None:
    """Truncate a tar in the middle of ``member``'s data."""
    import tarfile

    with tarfile.open(path) as tar:
        info = tar.getmember(member)
    path.write_bytes(path.read_bytes()[: info.offset_data + info.size // 2])


def test_truncated_and_empty_shards_are_skipped_and_counted(write_shards, data_cfg, byte_tok):
    paths = write_shards(3, 4)
    _cut_inside(paths[1], "s1_002.jpg")
    paths[2].write_bytes(b"")
    ds = build_dataset(data_cfg(source=str(paths[0].parent)), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    got = keys(ds)
    assert sorted(got) == sorted(all_ids(1, 4) | {"s1_000", "s1_001"})
    assert ds.stats()["rejected"] == {"truncated_tar": 1, "empty_shard": 1}


def test_a_truncated_tar_is_counted_once_per_read(write_shards, data_cfg, byte_tok):
    paths = write_shards(2, 3)
    _cut_inside(paths[0], "s0_001.txt")  # s0_001 keeps its jpg and json, loses its caption
    ds = build_dataset(data_cfg(source=str(paths[0].parent)), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    for epoch in range(1, 3):
        assert sorted(keys(ds)) == ["s0_000", "s1_000", "s1_001", "s1_002"]
        assert ds.stats()["rejected"] == {"truncated_tar": epoch, "missing_caption": epoch}


@pytest.mark.parametrize("where", ["between_members", "inside_a_pax_header"])
def test_a_tar_cut_where_reading_it_raises_nothing_or_empty_header_is_truncated(
        write_shards, data_cfg, byte_tok, where):
    paths = write_shards(2, 3)
    with tarfile.open(paths[0]) as tar:
        info = tar.getmember("s0_001.jpg")
    cut = info.offset if where == "between_members" else info.offset + 512
    paths[0].write_bytes(paths[0].read_bytes()[:cut])  # s0_001 and s0_002 are lost
    ds = build_dataset(data_cfg(source=str(paths[0].parent)), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    assert sorted(keys(ds)) == ["s0_000", "s1_000", "s1_001", "s1_002"]
    assert ds.stats()["rejected"] == {"truncated_tar": 1}


def test_a_gzipped_tar_named_tar_is_whole_and_a_file_that_is_no_tar_is_bad_tar(
        tmp_path, data_cfg, byte_tok):
    """A whole gzip-compressed shard named '.tar', and a text file named '.tar', were both
    counted as truncated_tar: only their last 1024 bytes (not zero) were looked at."""
    from glidectl.data.inspection import inspect_source

    folder = tmp_path / "odd"
    folder.mkdir()
    for name, count in (("shard-0.tar", 3), ("shard-1.tar", 1)):  # shard-1: under 512 bytes
        plain = io.BytesIO()
        with tarfile.open(fileobj=plain, mode="w") as tar:
            for i in range(count):
                image = encode(Image.new("RGB", (16, 16), (80 * i, 0, 0)), "PNG")
                for ext, data in (("png", image), ("txt", b"a picture")):
                    info = tarfile.TarInfo(f"{name[6]}_{i}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        (folder / name).write_bytes(gzip.compress(plain.getvalue()))
    assert (folder / "shard-1.tar").stat().st_size < tarfile.BLOCKSIZE
    (folder / "shard-2.tar").write_bytes(b"this is not a tar file" * 100)
    assert [lacks_end_blocks(str(folder / f"shard-{n}.tar")) for n in range(3)] == [False] * 3
    report = inspect_source(data_cfg(source=str(folder)), tokenizer=byte_tok, image_size=16)
    assert (report.scanned, report.valid, report.rejected) == (4, 4, {})
    assert report.damaged == {"bad_tar": 1}
    assert report.rejected_examples == {"bad_tar": [str(folder / "shard-2.tar")]}
    ds = build_dataset(data_cfg(source=str(folder)), tokenizer=byte_tok, image_size=16,
                       text_ctx=8)
    assert sorted(keys(ds)) == ["0_0", "0_1", "0_2", "1_0"]
    assert ds.stats()["rejected"] == {"bad_tar": 1}


@pytest.mark.parametrize("damage", ["bad_header", "two_tars_joined"])
def test_a_tar_whose_reader_stops_before_its_data_ends_is_bad_tar(
        write_shards, data_cfg, byte_tok, damage):
    """A damaged member header (or a second tar appended to the first) is the end of the
    archive to tarfile: the members after it were dropped and nothing was counted."""
    from glidectl.data.inspection import inspect_source

    paths = write_shards(2, 6)
    data = bytearray(paths[0].read_bytes())
    if damage == "bad_header":
        with tarfile.open(paths[0]) as tar:
            offset = tar.getmember("s0_001.jpg").offset
        data[offset:offset + 512] = b"\x07" * 512  # s0_001 … s0_005 are lost
        kept = {"s0_000"}
    else:
        data += paths[1].read_bytes()  # read up to the first tar's end blocks
        kept = all_ids(1, 6)
    paths[0].write_bytes(bytes(data))
    ds = build_dataset(data_cfg(source=str(paths[0].parent)), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    assert sorted(keys(ds)) == sorted(kept | all_ids(2, 6) - all_ids(1, 6))
    assert ds.stats()["rejected"] == {"bad_tar": 1}
    report = inspect_source(data_cfg(source=str(paths[0].parent)), tokenizer=byte_tok,
                            image_size=32)
    assert report.damaged == {"bad_tar": 1}
    assert report.rejected_examples == {"bad_tar": [str(paths[0])]}


@pytest.mark.parametrize("kind, why", [("pipe", "is no file (a device or a pipe)"),
                                       ("folder", "is a folder")])
def test_a_glob_matching_a_pipe_or_a_folder_names_it_so(write_shards, kind, why, capsys):
    """A pipe (or a folder) matched by 'w/*.tar' was said not to exist."""
    folder = write_shards(1, 1)[0].parent
    odd = folder / "shard-00001.tar"
    os.mkfifo(odd) if kind == "pipe" else odd.mkdir()
    spec = str(folder / "*.tar")
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", spec, "--tokenizer", "byte"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"Error: Shard {str(odd)!r} of {spec!r} {why}; point data.source at tar files only "
        "(move it away or narrow the pattern).\n")
    if kind == "pipe":  # a folder given alone is read as a folder of shards
        with pytest.raises(GlidectlError) as error:
            expand_shards(str(odd))
        assert str(error.value) == f"Shard {str(odd)!r} {why}; point data.source at tar files only."


def test_the_suggested_inspect_command_survives_the_shell(write_shards, data_cfg, byte_tok):
    paths = write_shards(2, 1, folder="my shards")
    for path in paths:
        path.write_bytes(b"")
    spec = str(paths[0].parent / "shard-{00000..00001}.tar")
    ds = build_dataset(data_cfg(source=spec), tokenizer=byte_tok, image_size=32, text_ctx=32)
    with pytest.raises(DataError) as info:
        list(ds)
    command = str(info.value).split("run `", 1)[1].rsplit("` to see", 1)[0]
    assert shlex.split(command) == ["glidectl", "dataset", "inspect", spec,
                                    "--set", "data.min_image_size=8"]  # data_cfg's


def test_the_suggested_inspect_command_reads_the_source_as_the_run_does(
        write_shards, data_cfg, byte_tok, capsys):
    """A run with preset laion on shards without JSON suggested `dataset inspect SPEC`,
    which reads them with preset simple and finds every sample valid."""
    folder = write_shards(1, 2, extra=lambda s, i: {"json": None})[0].parent
    ds = build_dataset(data_cfg(source=str(folder), preset="laion", skip_words=["it's"]),
                       tokenizer=byte_tok, image_size=32, text_ctx=32)
    with pytest.raises(DataError) as info:
        list(ds)
    command = str(info.value).split("run `", 1)[1].rsplit("` to see", 1)[0]
    argv = shlex.split(command)
    assert argv == ["glidectl", "dataset", "inspect", str(folder), "--set", 'data.preset="laion"',
                    "--set", "data.skip_words=[\"it's\"]", "--set", "data.min_image_size=8"]
    with pytest.raises(SystemExit) as run:
        main([*argv[1:], "--tokenizer", "byte"])
    assert run.value.code == 2
    assert "2 rejected (missing_metadata: 2), so training would refuse it" in \
        capsys.readouterr().err


def test_bad_members_are_counted_by_reason(write_shards, data_cfg, byte_tok):
    bad = {1: {"jpg": b""}, 2: {"txt": b"\xff\xfe\xe9"}, 3: {"json": b"{not json"},
           4: {"jpg": None, "png": encode(photo(40, 40), "PNG")}}
    folder = write_shards(1, 6, extra=lambda s, i: bad.get(i, {}))[0].parent
    ds = build_dataset(data_cfg(source=str(folder), preset="laion"), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    got = keys(ds)
    assert sorted(got) == ["s0_000", "s0_004", "s0_005"]  # s0_004 falls back to png
    assert ds.stats()["rejected"] == {
        "empty_file": 1, "caption_not_utf8": 1, "bad_metadata": 1}


def test_the_no_valid_data_line_counts_every_rejection(write_shards, data_cfg, byte_tok):
    """Four reasons: the line named three and their counts fell short of its total
    (`4 rejected (bad_metadata: 1, caption_not_utf8: 1, empty_file: 1)`)."""
    bad = {0: {"jpg": b""}, 1: {"txt": b"\xff\xfe\xe9"}, 2: {"json": b"{not json"},
           3: {"jpg": None}, 4: {"jpg": None}}
    folder = write_shards(1, 5, extra=lambda s, i: bad[i])[0].parent
    ds = build_dataset(data_cfg(source=str(folder), preset="laion"), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    with pytest.raises(DataError) as info:
        list(ds)
    assert "5 rejected (missing_image: 2, bad_metadata: 1, caption_not_utf8: 1; 1 more for 1 " \
           "other reason)" in str(info.value)


def test_a_repeated_key_in_a_shard_counts_each_later_sample_once(tmp_path, data_cfg,
                                                                 byte_tok, capsys):
    """A shard holding two (or three) samples of one key: webdataset drops each repeated
    member, so the later samples were lost and counted as `duplicate_tar_member`, once per
    member, as a damaged shard (`dataset inspect`: "damaged shards/files 4", the shard's path
    for the key). The key's first sample is read; each later one is one `duplicate_key`."""
    import webdataset as wds

    path = tmp_path / "shards" / "dup-000.tar"
    path.parent.mkdir()
    with wds.TarWriter(str(path)) as sink:
        for i, key in enumerate(["a", "dup", "dup", "b", "three", "three", "three"]):
            sink.write({"__key__": key, "jpg": encode(photo(48, 40, i)), "txt": f"c {i}"})
    ds = build_dataset(data_cfg(source=str(path.parent)), tokenizer=byte_tok, image_size=32,
                       text_ctx=32)
    assert sorted((s["key"], s["caption"]) for s in ds) == [
        ("dup-000.tar/a", "c 0"), ("dup-000.tar/b", "c 3"), ("dup-000.tar/dup", "c 1"),
        ("dup-000.tar/three", "c 4")]
    stats = ds.stats()
    assert stats["rejected"] == {"duplicate_key": 3}
    assert stats["examples"]["duplicate_key"] == ["dup-000.tar/dup", "dup-000.tar/three"]
    with pytest.raises(SystemExit):
        main(["dataset", "inspect", str(path), "--tokenizer", "byte", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert (report["scanned"], report["valid"], report["damaged"]) == (7, 4, {})
    assert report["rejected"] == {"duplicate_key": 3}


def test_missing_image_key_is_rejected(write_shards, data_cfg, byte_tok):
    folder = write_shards(1, 2, extra=lambda s, i: {"jpg": None} if i == 0 else {})[0].parent
    ds = build_dataset(data_cfg(source=str(folder)), tokenizer=byte_tok, image_size=32,
                       text_ctx=32)
    assert keys(ds) == ["s0_001"]
    assert ds.stats()["rejected"] == {"missing_image": 1}


def test_configurable_image_and_caption_keys(write_shards, data_cfg, byte_tok):
    folder = write_shards(
        1, 2, extra=lambda s, i: {"jpg": None, "webp": encode(photo(40, 40), "WEBP"),
                                  "caption": f"alt {i}"})[0].parent
    cfg = data_cfg(source=str(folder), image_key="webp", caption_key="caption")
    ds = build_dataset(cfg, tokenizer=byte_tok, image_size=32, text_ctx=32, train=False)
    assert [s["caption"] for s in ds] == ["alt 0", "alt 1"]


def test_laion_punsafe_and_pwatermark_counts_on_real_shards(write_shards, data_cfg, byte_tok):
    import json

    scores = [(0.05, 0.1), (0.6, 0.1), (0.05, 0.95), (0.9, 0.9), (None, None), (0.11, 0.49)]

    def meta(s, i):
        punsafe, pwatermark = scores[(s * 3 + i) % len(scores)]
        fields = {"similarity": 0.3, "original_width": 64, "original_height": 48,
                  "punsafe": punsafe, "pwatermark": pwatermark}
        return {"json": json.dumps({k: v for k, v in fields.items() if v is not None}).encode()}

    folder = write_shards(2, 3, extra=meta)[0].parent
    cfg = data_cfg(source=str(folder), preset="laion", max_punsafe=0.1, max_pwatermark=0.5)
    ds = build_dataset(cfg, tokenizer=byte_tok, image_size=32, text_ctx=32)
    assert sorted(keys(ds)) == ["s0_000", "s1_001"]
    # punsafe is checked first: (0.9, 0.9) counts as punsafe, (0.11, 0.49) too
    assert ds.stats()["rejected"] == {"punsafe": 3, "watermark": 1}
    defaults = build_dataset(data_cfg(source=str(folder), preset="laion"), tokenizer=byte_tok,
                             image_size=32, text_ctx=32)
    assert sorted(keys(defaults)) == ["s0_000", "s1_001", "s1_002"]
    assert defaults.stats()["rejected"] == {"punsafe": 2, "watermark": 1}


def test_no_valid_data_names_the_extension_the_captions_are_under(write_shards, data_cfg,
                                                                   byte_tok):
    """Captions stored as .caption while data.caption_key is "txt": every sample was
    rejected as missing_caption with no word of where the captions were."""
    folder = write_shards(1, 3, extra=lambda s, i: {"txt": None, "caption": f"a cat {i}"})
    ds = build_dataset(data_cfg(source=str(folder[0].parent)), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    with pytest.raises(DataError) as info:
        list(ds)
    assert "missing_caption: 3" in str(info.value)
    assert str(info.value).endswith(
        "to see examples. 3 samples without a .txt caption (data.caption_key) carry a "
        ".caption file: set data.caption_key = \"caption\" to read it.")


def test_a_json_list_of_captions_or_a_named_field_captions_the_sample(write_shards, data_cfg,
                                                                      byte_tok):
    """A shard's .json caption as a list (one picked per fetch, as folders and tables pick
    it) or under 'prompt' (data.caption_column) was rejected as missing_caption; 'prompt'
    unset is named in the error."""
    import json

    listed = write_shards(1, 2, folder="lists", extra=lambda s, i: {
        "txt": None, "json": json.dumps({"caption": [f"a cat {i}", f"a kitten {i}"]}).encode()})
    ds = build_dataset(data_cfg(source=str(listed[0].parent)), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    seen = {s["caption"] for _ in range(8) for s in ds}
    assert seen == {"a cat 0", "a kitten 0", "a cat 1", "a kitten 1"}
    prompts = write_shards(1, 2, folder="prompts", extra=lambda s, i: {
        "txt": None, "json": json.dumps({"prompt": f"a dog {i}", "url": "x"}).encode()})
    spec = str(prompts[0].parent)
    with pytest.raises(DataError) as info:
        list(build_dataset(data_cfg(source=spec), tokenizer=byte_tok, image_size=32,
                           text_ctx=32))
    assert str(info.value).endswith("2 samples without a .txt caption hold one under 'prompt' "
                                    "in their .json: set data.caption_column = \"prompt\" to "
                                    "read it.")
    ds = build_dataset(data_cfg(source=spec, caption_column="prompt"), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    assert sorted(s["caption"] for s in ds) == ["a dog 0", "a dog 1"]


def test_caption_column_wins_over_the_json_caption_field(write_shards, data_cfg, byte_tok):
    """data.caption_column = "prompt" on shards whose .json held both 'caption' and
    'prompt' trained on 'caption', unsaid; the named field captions them, as a folder's
    metadata column and a table's do (a .txt still comes first)."""
    import json

    def extra(s: int, i: int) -> dict:
        return {"txt": "a txt" if i == 2 else None,
                "json": json.dumps({"caption": f"alt {i}", "prompt": f"a dog {i}"}).encode()}

    spec = str(write_shards(1, 3, extra=extra)[0].parent)
    ds = build_dataset(data_cfg(source=spec, caption_column="prompt"), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    assert sorted(s["caption"] for s in ds) == ["a dog 0", "a dog 1", "a txt"]
    ds = build_dataset(data_cfg(source=spec), tokenizer=byte_tok, image_size=32, text_ctx=32)
    assert sorted(s["caption"] for s in ds) == ["a txt", "alt 0", "alt 1"]


def test_a_pipe_url_is_refused_and_runs_nothing(write_shards, data_cfg, byte_tok, tmp_path):
    """A pipe: URL is a shell command; webdataset ran it (data never runs code)."""
    shard = write_shards(1, 2)[0]
    ran = tmp_path / "ran"
    for spec in (f"pipe:touch {ran}; cat {shard}", f"{shard}::pipe:touch {ran}",
                 f"wds:pipe:touch {ran}"):
        with pytest.raises(GlidectlError, match=r"is a pipe: URL, a shell command, and "
                                                r"glidectl runs no command"):
            build_dataset(data_cfg(source=spec), tokenizer=byte_tok, image_size=32,
                          text_ctx=32)
    assert not ran.exists()


@pytest.mark.parametrize("url", ["s3://bucket/shard-{0..1}.tar", "gs://bucket/a.tar"])
def test_a_url_scheme_other_than_http_is_one_sentence(data_cfg, byte_tok, url):
    with pytest.raises(GlidectlError, match=r"glidectl does not read (s3|gs):// URLs; copy"):
        build_dataset(data_cfg(source=url), tokenizer=byte_tok, image_size=32, text_ctx=32)


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server over tmp_path: its root URL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_shards_are_read_and_a_missing_one_is_counted(write_shards, data_cfg, byte_tok,
                                                           http_root):
    write_shards(2, 3)
    spec = f"{http_root}/shards/shard-{{00000..00002}}.tar"  # the third is not there: 404
    ds = build_dataset(data_cfg(source=spec), tokenizer=byte_tok, image_size=32, text_ctx=32)
    assert sorted(keys(ds)) == sorted(all_ids(2, 3))
    assert ds.stats()["rejected"] == {"unreadable_shard": 1}


def test_an_unreachable_http_shard_is_one_sentence_at_once(data_cfg, byte_tok, http_root):
    """Without the network (here: a port nothing listens on, a path not served) the shards
    were counted as empty, or curl retried for minutes."""
    import socket
    import time

    with socket.socket() as sock:  # a free port, closed again: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    for url, why in ((f"http://127.0.0.1:{port}/shard-{{0..1}}.tar", "Connection refused"),
                     (f"{http_root}/nothing.tar", "HTTP 404 File not found")):
        with pytest.raises(GlidectlError) as info:
            build_dataset(data_cfg(source=url), tokenizer=byte_tok, image_size=32,
                          text_ctx=32)
        assert "cannot be fetched (" in str(info.value) and f"{why}); check" in str(info.value)
        assert str(info.value).endswith("check the URL and the network, or download the "
                                        "shards and point data.source at them.")
    assert time.monotonic() - start < 5


def test_a_dotted_member_name_is_named_with_its_rename(tmp_path, data_cfg, byte_tok):
    """photo.0.v2.jpg is sample "photo" with extension "0.v2.jpg" (webdataset's rule), so
    two samples merged into one without an image, and nothing said why."""
    import io

    folder = tmp_path / "dots"
    folder.mkdir()
    with tarfile.open(folder / "000.tar", "w") as tar:
        for name in ("photo.0.v2", "photo.1.v2", "dir.v1/plain"):
            for ext, data in (("jpg", encode(photo(40, 40))), ("txt", name.encode())):
                info = tarfile.TarInfo(f"{name}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    ds = build_dataset(data_cfg(source=str(folder)), tokenizer=byte_tok, image_size=32,
                       text_ctx=32)
    assert keys(ds) == ["dir.v1/plain"]  # a dot in a folder's name is no extension
    assert ds.stats()["rejected"] == {"missing_image": 1}
    assert ds.source.hint("missing_image") == (
        "1 sample without a .jpg/.png/.jpeg/.webp image (data.image_key) has one behind a dot "
        "in its name, as photo.0.v2.jpg: webdataset takes a member's name up to its first dot "
        "as the sample's key (members sharing it merge into one sample), so rename them "
        "without dots before the extension, e.g. photo_0_v2.jpg.")


def test_a_local_shard_under_a_folder_with_a_colon_is_read(write_shards, data_cfg, byte_tok,
                                                         tmp_path, monkeypatch):
    """'run:1/shard.tar' (a timestamped folder, say) read as a URL of scheme 'run' by
    webdataset: the shard counted as bad_shard and none of its samples read."""
    write_shards(1, 3, folder="run:1")
    monkeypatch.chdir(tmp_path)
    ds = build_dataset(data_cfg(source="run:1/shard-00000.tar"), tokenizer=byte_tok,
                       image_size=32, text_ctx=32)
    assert sorted(keys(ds)) == sorted(all_ids(1, 3)) and ds.stats()["rejected"] == {}


def test_a_sample_split_across_two_shards_is_named_by_inspect(tmp_path, data_cfg, byte_tok):
    """A tar writer cut between a.jpg (the last member of shard 0) and a.txt (the first of
    shard 1): inspect counted a missing caption and a missing image and said nothing of why.
    webdataset groups by key within one tar (an end-of-shard marker in between), so training
    still reads the two incomplete samples, not one joined across shards."""
    import webdataset as wds

    from glidectl.data.inspection import inspect_source

    folder = tmp_path / "cut"
    folder.mkdir()
    shards = [[("s0", "jpg", "txt"), ("a", "jpg")], [("a", "txt"), ("s1", "jpg", "txt")],
              [("s1", "jpg", "txt")]]  # s1 again, whole: no split
    for n, samples in enumerate(shards):
        with wds.TarWriter(str(folder / f"shard-{n}.tar")) as sink:
            for key, *exts in samples:
                sink.write({"__key__": key, **{e: encode(photo(40, 40)) if e == "jpg"
                                               else f"caption {key}" for e in exts}})
    first, second, _ = expand_shards(str(folder))
    report = inspect_source(data_cfg(source=str(folder)), tokenizer=byte_tok)
    assert (report.scanned, report.valid) == (5, 3)
    assert report.rejected == {"split_across_shards": 2}
    assert report.rejected_examples == {"split_across_shards": ["shard-0.tar/a",
                                                                "shard-1.tar/a"]}
    assert report.notes == [
        f"sample 'a' is split across shards {first!r} and {second!r}: webdataset reads it as "
        "two incomplete samples; rewrite the shards so each sample's files sit in one tar."]
    ds = build_dataset(data_cfg(source=str(folder)), tokenizer=byte_tok, image_size=32,
                       text_ctx=32)
    assert sorted(keys(ds)) == ["s0", "s1", "s1"]
    assert ds.stats()["rejected"] == {"missing_caption": 1, "missing_image": 1}


def test_a_caption_key_that_is_the_metadata_key_is_one_sentence(write_shards, capsys):
    """data.caption_key = "json" trained each sample on its raw JSON text as the caption."""
    folder = write_shards(1, 2)[0].parent
    with pytest.raises(SystemExit) as info:
        main(["dataset", "inspect", str(folder), "--tokenizer", "byte", "--set",
              "data.caption_key=json"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "Error: data.caption_key and data.metadata_key are both 'json': each caption would be "
        "the metadata's JSON text; leave data.caption_key at 'txt' (a sample without a .txt is "
        "captioned by its JSON's caption or text field).\n")


def test_shards_of_one_name_in_two_folders_give_their_samples_other_keys(write_shards):
    """Two img2dataset folders joined with `::` both hold 00000.tar: their samples shared
    keys, so validation.holdout (which holds out by key) dropped the other folder's twins
    from training too."""
    from glidectl.data.shards import ShardSource
    from glidectl.data.stats import RejectionCounter

    a = write_shards(1, 3, folder="laion")[0]
    b = write_shards(1, 3, folder="coyo")[0]
    source = ShardSource.open(f"{a}::{b}")
    keys = [s.key for url in source.urls for s in source.read(url, RejectionCounter())]
    assert keys == [f"{folder}/shard-00000.tar/s0_{i:03d}" for folder in ("laion", "coyo")
                    for i in range(3)]
    alone = ShardSource.open(str(a))  # one name once: the file name, as before
    assert [s.key for s in alone.read(alone.urls[0], RejectionCounter())][0] == \
        "shard-00000.tar/s0_000"
