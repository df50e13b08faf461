"""``glidectl export -o``: outputs in (or linked into) a checkpoint folder and folders named
like the output are refused in one line, and nothing on disk is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_helpers import exit_code

from glidectl import runs
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


def test_a_name_too_long_or_a_link_loop_is_one_line_and_a_name_near_the_limit_is_written(
        run, tmp_path, capsys):
    """A 300-byte name and a link to itself were tracebacks; a name of 240 bytes, which the
    filesystem takes, could not be written: its temp file's name was 15 bytes longer."""
    long = "n" * 300 + ".safetensors"
    assert cli("export", run, "-o", long) == 2
    assert capsys.readouterr().err == (
        f"Error: {long[:80] + '…' + long[-30:]!r} has a name longer than the filesystem "
        "allows (255 bytes a name); "
        "pick a shorter name.\n")
    Path("loop.safetensors").symlink_to("loop.safetensors")
    assert cli("export", run, "-o", "loop.safetensors", "--force") == 2
    assert "loop.safetensors' is a symbolic link that leads back to itself; remove the link " \
        in capsys.readouterr().err
    near = "n" * 240 + ".safetensors"
    assert cli("export", run, "-o", near) == 0, capsys.readouterr().err
    assert (tmp_path / near).is_file() and not list(tmp_path.glob(".n*.tmp"))


def test_an_export_keeps_a_file_written_to_its_output_while_it_ran(run, tmp_path, capsys,
                                                                  monkeypatch):
    """The output was checked at the start and replaced at the end: of two exports to one
    file started together both said they had written it."""
    from glidectl.glide import read_weights

    real = read_weights

    def read_then_another_writes(path):
        out = real(path)
        Path("x.safetensors").write_bytes(b"another export's")
        return out

    monkeypatch.setattr("glidectl.glide.read_weights", read_then_another_writes)
    assert cli("export", run, "-o", "x.safetensors") == 2
    assert capsys.readouterr().err == (
        "Error: Output 'x.safetensors' already exists (written while this command ran); pass "
        "--force to overwrite it or choose another --output.\n")
    assert Path("x.safetensors").read_bytes() == b"another export's"
    assert cli("export", run, "-o", "x.safetensors", "--force") == 0
    assert Path("x.safetensors").stat().st_size > 100


def test_an_export_onto_a_dangling_link_needs_force(run, tmp_path, capsys):
    Path("d.safetensors").symlink_to("gone.safetensors")
    assert cli("export", run, "-o", "d.safetensors") == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert Path("d.safetensors").is_symlink()


def test_one_checkpoint_exports_to_the_same_bytes_however_the_run_is_named(
        run, tmp_path, monkeypatch):
    """The metadata names the run, its step and the file within it, not the path as typed:
    a schedule file or PNG that pins an export by its sha256 holds for a re-export."""
    import hashlib
    import os

    from glidectl.glide.checkpoints import read_metadata

    out = tmp_path / "out"
    assert cli("export", run, "-o", out / "a.safetensors") == 0
    assert cli("export", tmp_path / run, "-o", out / "b.safetensors") == 0
    monkeypatch.chdir(tmp_path / STEP)
    assert cli("export", ".", "-o", out / "c.safetensors") == 0
    digests = {hashlib.sha256((out / f"{n}.safetensors").read_bytes()).hexdigest()
               for n in "abc"}
    assert len(digests) == 1
    meta = read_metadata(out / "c.safetensors")
    assert {k: meta[k] for k in ("run", "step", "source", "ema")} == {
        "run": "t", "step": "2", "source": "checkpoints/step-000002/ema.safetensors",
        "ema": "true"}
    assert os.path.sep not in meta["run"]


def test_a_set_aside_upsampler_step_exports_with_its_run_s_filter_and_folder(tmp_path,
                                                                              monkeypatch):
    """A step a resume set aside (checkpoints/abandoned-after-step-K/step-N) is its run's:
    the export records the run's data.low_res_resample and the folder it came from, not
    the default filter and the new branch's step of the same number."""
    from test_pipeline import tiny_glide

    from glidectl.glide.checkpoints import read_metadata

    monkeypatch.chdir(tmp_path)
    aside = Path("runs", "u", "checkpoints", "abandoned-after-step-000001", "step-000002")
    aside.mkdir(parents=True)
    save_weights(tiny_glide("upsample"), aside / "ema.safetensors")
    Path("runs", "u", "config.toml").write_text('[data]\nlow_res_resample = "box"\n',
                                                encoding="utf-8")
    assert cli("export", aside, "-o", tmp_path / "up.safetensors") == 0
    meta = read_metadata(tmp_path / "up.safetensors")
    assert meta["glidectl.low_res_resample"] == "box"
    assert meta["run"] == "u"
    assert meta["source"] == ("checkpoints/abandoned-after-step-000001/step-000002/"
                              "ema.safetensors")

def test_a_checkpoint_s_resume_state_names_its_checkpoint_folder(run, tmp_path, capsys):
    """``STEP/state`` holds an ema.safetensors too (the EMA's resume state): given where
    weights belong (export, --base/--upsampler, model.init) it was 'not a GLIDE
    checkpoint', with nothing to do; it names the checkpoint folder to pass."""
    from safetensors.torch import save_file

    from glidectl.errors import GlidectlError
    from glidectl.glide.loading import load_model

    state = STEP / "state"
    state.mkdir()
    save_file({"t0": torch.zeros(2)}, state / "ema.safetensors", {"glidectl.state": "{}"})
    said = (f"{str(state / 'ema.safetensors')!r} is a checkpoint's resume state (read by "
            f"--resume), not model weights; pass its checkpoint folder {str(STEP)!r} instead.")
    assert cli("export", state, "-o", tmp_path / "o.safetensors") == 2
    assert capsys.readouterr().err == f"Error: {said}\n"
    with pytest.raises(GlidectlError) as info:
        load_model(state)
    assert str(info.value) == said
    assert not (tmp_path / "o.safetensors").exists()

def test_a_run_s_best_pointer_names_its_checkpoint_for_export_and_sample(run, tmp_path):
    """``RUN/checkpoints/best`` (keep_best) and ``latest`` are the step they name, for export
    and as a model; a weights file renamed .pt is read as the safetensors it is."""
    from glidectl.glide.loading import load_model, resolve_spec

    checkpoints = run / "checkpoints"
    (checkpoints / "best").write_text("step-000002\n")
    assert resolve_spec(checkpoints / "best") == checkpoints / "step-000002" / "ema.safetensors"
    assert cli("export", checkpoints / "best", "-o", tmp_path / "best.safetensors") == 0
    renamed = tmp_path / "renamed.pt"
    renamed.write_bytes((tmp_path / "best.safetensors").read_bytes())
    assert load_model(renamed).options.image_size == 16
    (checkpoints / "latest").write_text("step-000009\n")  # pruned
    assert cli("export", checkpoints / "latest", "-o", tmp_path / "l.safetensors") == 2


def test_a_pruned_step_is_said_as_pruned_with_the_steps_kept(run, tmp_path):
    """checkpoint.keep_last removed it: said so, with what is kept, by export and sample."""
    gone = run / "checkpoints" / "step-000001"
    _said_by_sample_and_export(gone, (
        f"{str(gone)!r} is not there: its run keeps 1 checkpoint (step-000002; "
        "checkpoint.keep_last prunes older steps); pass one of those, or the run folder for "
        "its latest."), tmp_path)


def _said_by_sample_and_export(path: Path, said: str, tmp_path: Path) -> None:
    """``said`` is the error of a model spec ``path``, and export of it exits 2."""
    from glidectl.errors import GlidectlError
    from glidectl.glide.loading import resolve_spec

    with pytest.raises(GlidectlError) as info:
        resolve_spec(path)
    assert str(info.value) == said
    assert cli("export", path, "-o", tmp_path / "o.safetensors") == 2


def test_a_best_checkpoint_a_run_never_kept_names_keep_best(run, tmp_path):
    """`export RUN/checkpoints/best` (or `--base` of it) of a run without checkpoint.keep_best
    said "Run … does not exist; pass a runs/<name> folder" of a run that is there."""
    from glidectl.errors import GlidectlError
    from glidectl.glide.loading import resolve_spec

    best = run / "checkpoints" / "best"
    _said_by_sample_and_export(best, (
        f"{str(best)!r} is not there: its run keeps no best checkpoint (that takes "
        "checkpoint.keep_best = true with a [validation] section); pass the run folder for "
        "its latest, or one of its step-N folders."), tmp_path)
    (run / "config.toml").write_text("[checkpoint]\nkeep_best = true\n")
    with pytest.raises(GlidectlError, match="its run has no best checkpoint yet"):
        resolve_spec(best)


def test_a_step_past_the_last_set_aside_or_never_written_is_said_as_such(run, tmp_path):
    """Every missing step was said to be pruned by checkpoint.keep_last: one newer than the
    run's last checkpoint, one a resume from an earlier checkpoint set aside (named where),
    and one never written while keep_last had pruned nothing."""
    checkpoints = run / "checkpoints"
    aside = checkpoints / "abandoned-after-step-000002" / "step-000004"
    aside.mkdir(parents=True)
    said = {}
    for step in (9, 4, 1):
        gone = checkpoints / f"step-{step:06d}"
        assert cli("export", gone, "-o", tmp_path / "o.safetensors") == 2
        said[step] = runs.missing_step(gone)
    assert said[9] == (f"{str(checkpoints / 'step-000009')!r} is not there: its run's newest "
                       "checkpoint is step-000002 (it keeps step-000002); pass one of those, "
                       "or the run folder for its latest.")
    assert f"set this step of the branch before aside in {str(aside)!r}; pass that" in said[4]
    assert "keep_last prunes older steps" in said[1]
    (run / "config.toml").write_text("[checkpoint]\nkeep_last = 3\n")
    assert "(step-000002; no checkpoint was written at that step)" in \
        runs.missing_step(checkpoints / "step-000001")


def test_options_this_version_cannot_build_name_the_file(run, tmp_path):
    import json

    from glidectl.errors import GlidectlError
    from glidectl.glide import read_weights
    from glidectl.glide.checkpoints import META_OPTIONS, read_metadata

    path = tmp_path / STEP / "ema.safetensors"
    options = json.loads(read_metadata(path)[META_OPTIONS])
    state = read_weights(path)[0]
    from safetensors.torch import save_file

    newer = tmp_path / "newer.safetensors"
    save_file(state, str(newer), metadata={**read_metadata(path),
                                           META_OPTIONS: json.dumps({**options, "bogus": 1})})
    with pytest.raises(GlidectlError, match=r"'.*newer.safetensors' records model options "
                       r"glidectl .* cannot build \(Unknown model option"):
        read_weights(newer)


def test_a_run_with_no_checkpoint_says_to_wait_only_while_it_trains(tmp_path, capsys):
    """A run killed before its first checkpoint was 'wait for the first': none would come."""
    from glidectl.atomic import lock_file

    run = tmp_path / "runs" / "early"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text("[train]\nsteps = 900\n")
    out = tmp_path / "x.safetensors"
    assert cli("export", run, "-o", out) == 2
    assert capsys.readouterr().err == (
        f"Error: Run {str(run)!r} has no checkpoint, and no process is training it (its "
        "training stopped before the first); train it again to start it over.\n")
    held = lock_file(run / ".lock", "busy")  # as the process training it holds it
    try:
        assert cli("export", run, "-o", out) == 2
        assert capsys.readouterr().err.endswith("when it stops); wait for the first.\n")
    finally:
        held.close()
    assert not out.exists()
