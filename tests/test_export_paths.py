"""``glidectl export -o``: outputs in (or linked into) a checkpoint folder and folders named
like the output are refused in one line, and nothing on disk is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_helpers import exit_code

from glidectl.glide import create_model, preset_options, save_weights

STEP = Path("runs", "t", "checkpoints", "step-000002")


cli = exit_code


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    """``runs/t`` (the current folder is ``tmp_path``): one checkpoint, step 2, holding a
    tiny model's EMA weights."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / STEP).mkdir(parents=True)
    torch.manual_seed(0)
    save_weights(create_model(preset_options("base", "tiny").replace(image_size=16)),
                 tmp_path / STEP / "ema.safetensors")
    return Path("runs", "t")


def test_an_export_below_a_checkpoint_folder_is_refused(run, tmp_path, capsys):
    """Only the direct parent was checked: `-o runs/t/checkpoints/step-000002/sub/x` was
    written, and the next resume's checkpoint.keep_last pruning deleted it."""
    out = STEP / "sub" / "x.safetensors"
    assert cli("export", run, "-o", out) == 2
    assert capsys.readouterr().err == (
        f"Error: Output {str(out)!r} is inside checkpoint folder {str(STEP)!r}; write the "
        "export outside checkpoints/.\n")
    assert not (tmp_path / STEP / "sub").exists()


def test_an_export_to_a_link_into_a_checkpoint_names_that_checkpoint(run, tmp_path, capsys):
    """The refusal named '.' (the link's folder) as the checkpoint folder."""
    ema = tmp_path / STEP / "ema.safetensors"
    before = ema.read_bytes()
    Path("link.safetensors").symlink_to(STEP / "ema.safetensors")
    assert cli("export", run, "-o", "link.safetensors", "--force") == 2
    assert capsys.readouterr().err == (
        f"Error: Output 'link.safetensors' links into checkpoint folder {str(STEP)!r}; write "
        "the export outside checkpoints/.\n")
    assert ema.read_bytes() == before


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "forced"])
def test_an_export_onto_a_folder_says_it_is_a_folder(run, tmp_path, capsys, force):
    """It said "already exists; pass --force", and with --force "free disk space or fix the
    folder's permissions" (exit 1)."""
    folder = tmp_path / "d.safetensors"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert cli("export", run, "-o", "d.safetensors", *force) == 2
    assert capsys.readouterr().err == (
        "Error: Output 'd.safetensors' is a folder; pass a file path to --output, e.g. "
        "'d.safetensors/model.safetensors'.\n")
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
