"""Folders laid out for kohya's trainers or OneTrainer are read with the image files those
trainers read: a .gif or a .tif scan in them was trained (with the folder's repeats and
class words), where the other trainer skips it; now it is left out and counted in a note."""

from __future__ import annotations

import json

from data_helpers import encode, photo

from glidectl.data.folder import FolderSource
from glidectl.data.kohya_source import KohyaConfigSource
from glidectl.data.onetrainer_source import OneTrainerSource
from glidectl.data.source_api import source_notes


def _images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    formats = {".png": "PNG", ".jpg": "JPEG", ".gif": "GIF", ".tif": "TIFF", ".jfif": "JPEG"}
    for i, name in enumerate(names):
        ext = name[name.rindex("."):]
        (folder / name).write_bytes(encode(photo(32, 32, i), formats[ext]))


def test_a_kohya_folder_reads_what_kohyas_trainers_read(tmp_path):
    _images(tmp_path / "t" / "10_sks dog", ["a.png", "b.jpg", "c.gif", "d.tif", "e.jfif"])
    src = FolderSource.scan(tmp_path / "t")
    assert src.units().count("10_sks dog/a.png") == 1
    assert sorted(set(src.units())) == ["10_sks dog/a.png", "10_sks dog/b.jpg"]
    assert src.kohya["10_sks dog"].images == 2
    assert (f"{str(tmp_path / 't')!r}: 3 image files (.gif 1, .tif 1, .jfif 1) in its "
            "'N_words' folders are not read, as kohya's trainers do not read them; convert "
            "them to PNG or JPEG to train on them.") in src.notes()
    _images(tmp_path / "plain" / "photos", ["a.png", "c.gif"])  # no kohya layout: all read
    assert sorted(FolderSource.scan(tmp_path / "plain").units()) == ["photos/a.png",
                                                                     "photos/c.gif"]


def test_a_kohya_subset_reads_what_kohya_reads(tmp_path):
    _images(tmp_path / "dog", ["a.png", "c.gif"])
    (tmp_path / "dataset.toml").write_text(
        '[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "dog"\n  class_tokens = "dog"\n')
    source = KohyaConfigSource.open(tmp_path / "dataset.toml")
    assert [u.split("/", 1)[1] for u in source.units()] == ["a.png"]
    assert any("1 image file (.gif 1) in 'dog' is not read, as kohya does not read it" in n
               for n in source_notes(source)), source_notes(source)


def test_a_kohya_config_of_gifs_only_names_the_kinds_kohya_reads(tmp_path):
    """Its error listed .gif among the kinds the image_dirs lack, for a folder of .gif."""
    import pytest

    from glidectl.errors import GlidectlError

    _images(tmp_path / "dog", ["c.gif"])
    (tmp_path / "dataset.toml").write_text(
        '[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "dog"\n')
    with pytest.raises(GlidectlError, match=r"hold no image files \(\.png \.jpg \.jpeg "
                                            r"\.webp \.bmp\) at their top.*\(\.gif 1\)"):
        KohyaConfigSource.open(tmp_path / "dataset.toml")


def test_a_onetrainer_concept_reads_what_onetrainer_reads(tmp_path):
    _images(tmp_path / "dog", ["a.png", "d.tif", "c.gif"])
    (tmp_path / "concepts.json").write_text(json.dumps([{"name": "dog", "path": "dog"}]))
    source = OneTrainerSource.open(tmp_path / "concepts.json")
    assert sorted(source.units()) == ["1/a.png", "1/d.tif"]  # OneTrainer reads .tif
    assert any("1 image file (.gif 1) in 'dog' is not read, as OneTrainer does not read it"
               in n for n in source_notes(source)), source_notes(source)
