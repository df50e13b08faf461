"""``glidectl train`` / ``upsample`` / ``export`` through the real CLI, in-process."""

from __future__ import annotations

import dataclasses
import os

import pytest
from typer.testing import CliRunner

from glidectl.cli.app import build_app
from glidectl.cli.train_cmd import resolve_config
from glidectl.errors import GlidectlError
from glidectl.glide import read_weights
from glidectl.glide.checkpoints import read_metadata


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture
def cli():
    app = build_app()
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_flags_override_set_which_overrides_the_file(tiny, config_file, tmp_path):
    path = config_file(tiny(train=dict(steps=9, lr=0.5)))
    cfg = resolve_config(path, ["train.steps=7", "train.name='x'"], steps=3,
                         output_dir=tmp_path / "o", name="y", precision="bf16")
    assert (cfg.train.steps, cfg.train.name, cfg.train.precision) == (3, "y", "bf16")
    assert cfg.train.output_dir == str(tmp_path / "o") and cfg.train.lr == 0.5
    cfg = resolve_config(path, ["train.steps=7"])
    assert cfg.train.steps == 7


def test_steps_flag_over_train_epochs_says_epochs_is_ignored(tiny, config_file, capsys):
    """--steps trains by steps, as --set train.steps beside train.epochs is named in a
    warning: the train.epochs it overrides is too."""
    path = config_file(tiny(train=dict(epochs=1)))
    cfg = resolve_config(path, [], steps=5)
    assert (cfg.train.steps, cfg.train.epochs) == (5, 0)
    assert capsys.readouterr().err == (
        "Warning: train.epochs is ignored: --steps 5 decides how long the run trains (leave "
        "out --steps to train by epochs, train.epochs = 1).\n")
    assert resolve_config(path, ["train.epochs=0"], steps=5).train.steps == 5
    assert capsys.readouterr().err == ""


def test_name_and_output_dir_flags_are_taken_verbatim(tiny, config_file, tmp_path):
    path = config_file(tiny())
    for name in ("a\\b", "it's \"x\"", "2024"):
        cfg = resolve_config(path, [], name=name, output_dir=tmp_path / "o\\p")
        assert (cfg.train.name, cfg.train.output_dir) == (name, str(tmp_path / "o\\p"))


def test_train_then_export_one_file(cli, tiny, config_file, tmp_path):
    path = config_file(tiny())
    result = cli("train", "--config", str(path), "--steps", "2", "--name", "cli", "--no-live")
    assert result.exit_code == 0, result.output
    assert "step 2/2" in result.output
    run = tmp_path / "runs" / "cli"
    out = tmp_path / "model.safetensors"
    result = cli("export", str(run), "-o", str(out))
    assert result.exit_code == 0, result.output
    state, options = read_weights(out)
    ema_state, _ = read_weights(run / "checkpoints" / "step-000002" / "ema.safetensors")
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # the user's umask, not 0600
    assert "glidectl.sampling" in read_metadata(out)  # the sampling defaults travel along
    again = cli("export", str(run), "-o", str(out))
    assert isinstance(again.exception, GlidectlError)  # main() prints it as one line, exit 2
    assert "already exists; pass --force" in str(again.exception)
    assert cli("export", str(run), "-o", str(out), "--force").exit_code == 0
    assert options.kind == "base" and options.image_size == 32
    own = run / "checkpoints" / "step-000002" / "ema.safetensors"
    before = own.read_bytes()
    inside = cli("export", str(run), "-o", str(own), "--force")
    assert "is inside checkpoint folder" in str(inside.exception)
    assert own.read_bytes() == before
    assert all((state[k] == ema_state[k]).all() for k in state)
    raw = tmp_path / "raw.safetensors"
    assert cli("export", str(run), "--no-ema", "-o", str(raw)).exit_code == 0
    raw_state, _ = read_weights(raw)
    assert any(not (raw_state[k] == ema_state[k]).all() for k in raw_state)
    own.unlink()  # deleted by hand: --ema said the run trained with train.ema_decay = 0
    gone = cli("export", str(run), "--ema", "-o", str(tmp_path / "e.safetensors"))
    assert str(gone.exception) == (
        f"{str(own.parent)!r} has no ema.safetensors, though the run keeps an EMA "
        "(train.ema_decay = 0.9): the file was deleted; pick another checkpoint, or export "
        "its training weights with --no-ema.")


def test_resume_needs_no_config_and_extends_steps(cli, tiny, config_file, tmp_path):
    path = config_file(tiny(train=dict(steps=1)))
    assert cli("train", "-c", str(path), "--no-live").exit_code == 0
    run = tmp_path / "runs" / "t"
    result = cli("train", "--resume", str(run), "--steps", "2", "--no-live")
    assert result.exit_code == 0, result.output
    assert f"Continuing from '{run / 'checkpoints' / 'step-000001'}' at step 1." in result.output
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000002"
    done = cli("train", "--resume", str(run), "--no-live")
    assert done.exit_code == 0, done.output
    assert "already at step 2 of 2: nothing to train" in done.output


def test_resume_latest_without_a_config_names_the_run_folder_to_resume(
        cli, tmp_path, monkeypatch):
    """`train --resume latest` (as --help suggests) without --config said "No config:
    pass --config FILE (see examples/glide.toml)", the quickstart's config."""
    monkeypatch.chdir(tmp_path)
    said = str(cli("train", "--resume", "latest").exception)  # main(): one line, exit 2
    assert said.startswith("--resume latest needs --config FILE") and said.endswith(
        "config.toml: --resume runs/NAME."), said
    (tmp_path / "runs" / "t" / "checkpoints" / "step-000001").mkdir(parents=True)
    said = str(cli("lora", "--resume", "latest").exception)
    assert said.endswith("--resume runs/t."), said


def test_resume_from_another_folder_reads_the_paths_the_run_began_with(tmp_path, monkeypatch):
    """--resume RUN from another folder read the relative data.source of RUN/config.toml
    from there: "does not exist", or another folder's images of the same name, in silence."""
    from glidectl.config import GlideConfig, save_config

    start, other = tmp_path / "project", tmp_path / "elsewhere"
    for folder in (start / "imgs", other / "imgs", start / "runs" / "r"):
        folder.mkdir(parents=True)
    (start / "p.txt").write_text("a cat\n", encoding="utf-8")
    cfg = GlideConfig()
    cfg.train.output_dir, cfg.train.name = "runs", "r"
    cfg.data.source, cfg.preview.prompt_file, cfg.model.vocab_dir = "imgs", "p.txt", "gone"
    save_config(cfg, start / "runs" / "r" / "config.toml")
    run = str(start / "runs" / "r")
    monkeypatch.chdir(other)
    got = resolve_config(None, [], resume=run)
    assert (got.data.source, got.preview.prompt_file, got.model.vocab_dir) == (
        str(start / "imgs"), str(start / "p.txt"), "gone")
    assert resolve_config(None, ["data.source='imgs'"], resume=run).data.source == "imgs"
    monkeypatch.chdir(start)
    assert resolve_config(None, [], resume=run).data.source == "imgs"


def test_a_config_kept_in_the_run_folder_is_not_replaced_by_the_resolved_one(
        tiny, config_file, tmp_path, capsys):
    """`glidectl train --config runs/foo/config.toml --name foo` wrote the resolved config
    over the user's file (its comments and layout lost) when the run began."""
    from glidectl.cli.app import main
    from glidectl.config import save_config

    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    mine = config_file(tiny(train=dict(steps=1)), "runs/t/config.toml")
    mine.write_text("# my notes\n" + mine.read_text())
    before = mine.read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["train", "-c", str(mine), "--no-live"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("Error: ") and err.count("\n") == 1, err
    assert "config.toml" in err and "move it" in err
    assert mine.read_bytes() == before and not (run / "checkpoints").exists()
    # a run that stopped before its first checkpoint left its own config.toml: it trains
    save_config(tiny(train=dict(steps=1)), mine)
    with pytest.raises(SystemExit) as exc:
        main(["train", "-c", str(config_file(tiny(train=dict(steps=1)))), "--no-live"])
    assert exc.value.code == 0, capsys.readouterr().err
    assert (run / "checkpoints" / "step-000001").is_dir()


def test_a_short_config_of_the_users_in_the_serialisers_layout_is_not_replaced(
        tiny, config_file, tmp_path, capsys):
    """A run folder's `[train]` / `steps = 1` (no comment: the layout tomli_w writes) was
    taken for the run's own config.toml and written over when a new run began there."""
    from glidectl.cli.app import main

    mine = tmp_path / "runs" / "t" / "config.toml"
    mine.parent.mkdir(parents=True)
    mine.write_text("[train]\nsteps = 1\n")
    with pytest.raises(SystemExit) as exc:
        main(["train", "-c", str(config_file(tiny(train=dict(steps=1)))), "--no-live"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "config.toml glidectl did not write" in err, err
    assert mine.read_text() == "[train]\nsteps = 1\n"


def test_a_run_an_earlier_release_began_restarts_over_its_own_config(tiny, config_file,
                                                                   tmp_path, capsys):
    """An earlier release wrote fewer keys (none it did not know) and its arrays one element
    a line: its config.toml is still the run's own, not a file of the user's."""
    import tomli_w

    from glidectl.cli.app import main
    from glidectl.config import (
        is_saved_config,
        save_config,
        tomllib,  # tomli before Python 3.11
    )

    cfg = tiny(train=dict(steps=1))
    old = tmp_path / "runs" / "t" / "config.toml"
    old.parent.mkdir(parents=True)
    save_config(cfg, old)
    data = tomllib.loads(old.read_text())
    del data["train"]["cuda_graphs"]  # a key added since
    old.write_text(tomli_w.dumps(data))
    assert "[\n" in old.read_text() and is_saved_config(old)
    with pytest.raises(SystemExit) as exc:
        main(["train", "-c", str(config_file(cfg)), "--no-live"])
    assert exc.value.code == 0, capsys.readouterr().err
    assert (old.parent / "checkpoints" / "step-000001").is_dir()


def test_resume_from_a_file_of_a_checkpoint_names_its_checkpoint_folder(tiny, config_file,
                                                                       tmp_path, capsys):
    """`--resume RUN/checkpoints/step-N/ema.safetensors` with --config said the weights file
    was an output path to replace with another --output-dir."""
    from glidectl.cli.app import main

    path = config_file(tiny(train=dict(steps=1)))
    with pytest.raises(SystemExit):
        main(["train", "-c", str(path), "--no-live"])
    step = tmp_path / "runs" / "t" / "checkpoints" / "step-000001"
    capsys.readouterr()
    for config in (["-c", str(path)], []):
        with pytest.raises(SystemExit) as exc:
            main(["train", *config, "--resume", str(step / "ema.safetensors"), "--no-live"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1, err
        assert "is a file" in err and f"its checkpoint folder {str(step)!r}" in err, err
        assert "--output-dir" not in err


def test_unwritable_output_dir_fails_before_training(tiny, config_file, tmp_path, capsys):
    from glidectl.cli.app import main

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    path = config_file(tiny())
    with pytest.raises(SystemExit) as exc:
        main(["train", "-c", str(path), "--output-dir", str(blocker / "runs")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1 and "not-a-dir" in err
    assert not (tmp_path / "runs").exists()


def test_train_refuses_upsampler_and_upsample_refuses_base(cli, tiny, config_file):
    up = config_file(dataclasses.replace(tiny(), model=dataclasses.replace(
        tiny().model, kind="upsample")), "up.toml")
    result = cli("train", "-c", str(up))
    assert isinstance(result.exception, GlidectlError)
    assert "glidectl upsample" in str(result.exception) or "upsample" in str(result.exception)
    result = cli("upsample", "-c", str(config_file(tiny())))
    assert isinstance(result.exception, GlidectlError)


def test_export_of_a_missing_run_is_a_user_error(cli, tmp_path):
    result = cli("export", str(tmp_path / "nope"), "-o", str(tmp_path / "x.safetensors"))
    assert isinstance(result.exception, GlidectlError)
    assert "does not exist" in str(result.exception)


def test_export_of_a_weights_file_names_what_to_pass_instead(cli, tmp_path):
    """`glidectl export FILE.safetensors` said the file "has no checkpoints; train it first"."""
    import torch

    from glidectl.glide import create_model, preset_options, save_weights

    step = tmp_path / "runs" / "base" / "checkpoints" / "step-000002"
    step.mkdir(parents=True)
    torch.manual_seed(0)
    model = create_model(preset_options("base", "tiny").replace(image_size=16))
    out = tmp_path / "x.safetensors"
    for name, flag in (("ema.safetensors", ""), ("model.safetensors", " --no-ema")):
        save_weights(model, step / name)
        result = cli("export", str(step / name), "-o", str(out))
        assert isinstance(result.exception, GlidectlError)
        assert str(result.exception) == (
            f"{str(step / name)!r} is a checkpoint's weights file; export takes its checkpoint "
            f"or run folder: glidectl export {step}{flag} -o {out}")
    loose = save_weights(model, tmp_path / "loose.safetensors")
    result = cli("export", str(loose), "-o", str(out))
    assert str(result.exception) == (
        f"{str(loose)!r} is a weights file already (export writes one from a run); use it as "
        f"it is, e.g. glidectl sample --base {loose}, or pass a runs/<name> or checkpoint "
        "folder.")
    assert not out.exists()


def test_a_missing_data_folder_is_reported_before_any_download(tiny, tmp_path, monkeypatch):
    """model.init = openai:base (1.5 GB, not cached) with a mistyped data.source: the data
    error comes first, not after the download (here downloads are off, so that error would
    be about the cache)."""
    from glidectl.training.engine import Trainer

    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("GLIDECTL_OFFLINE", "1")
    cfg = tiny(model=dict(init="openai:base"), data=dict(source=str(tmp_path / "my-photos")))
    with pytest.raises(GlidectlError, match="my-photos' does not exist"):
        Trainer(cfg, quiet=True)
    assert not (tmp_path / "runs").exists()


def test_an_unknown_data_preset_is_named_before_any_download(tiny, tmp_path, monkeypatch):
    """A misspelt data.preset with model.init = openai:base (not cached) stops at the start,
    naming the key, not after the 1.5 GB download."""
    from glidectl.training.engine import Trainer

    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("GLIDECTL_OFFLINE", "1")
    cfg = tiny(model=dict(init="openai:base"), data=dict(preset="laoin"))
    with pytest.raises(GlidectlError) as error:
        Trainer(cfg, quiet=True)
    assert str(error.value).startswith("data.preset: Unknown dataset preset 'laoin'. Did you "
                                       "mean 'laion'?")
    assert not (tmp_path / "runs").exists()

@pytest.mark.parametrize(("init", "model", "resolution", "said"), [
    # train trains no upsampler: "set model.kind" was advice train then refused
    ("openai:upsample", {}, 32, "model.init 'openai:upsample' is an 'upsample' model, which "
     "this command does not train; pick base or base-inpaint weights, or train it with "
     "glidectl upsample (model.kind = \"upsample\")."),
    ("openai:base-inpaint", {}, 32, "model.init 'openai:base-inpaint' is a 'base-inpaint' "
     "model but model.kind is 'base'; set model.kind = \"base-inpaint\" or pick other "
     "weights."),
    ("openai:base", {"tokenizer": "byte"}, 32, "model.tokenizer is 'byte' but 'openai:base' "
     "was trained with 'gpt2'; set model.tokenizer = \"auto\"."),
    ("openai:base", {}, 12, "data.resolution = 12 does not fit openai:base's 64 px base"),
])
def test_weights_that_cannot_train_the_config_are_refused_before_their_download(
        cli, tiny, config_file, tmp_path, monkeypatch, init, model, resolution, said):
    """An openai:NAME model.init of another kind, tokenizer or a size its network cannot take
    is refused from OpenAI's published architecture, before the download (here: offline,
    so the error was 'not in the cache', and online 1.5 GB came first)."""
    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("GLIDECTL_OFFLINE", "1")
    cfg = tiny(model=dict(init=init, **model), data=dict(resolution=resolution))
    result = cli("train", "--config", str(config_file(cfg)))
    assert isinstance(result.exception, GlidectlError)  # exit code 2, in main()
    assert str(result.exception).startswith(said)
    assert not (tmp_path / "runs").exists()



def test_the_last_line_says_how_many_samples_training_skipped_and_why(cli, tiny, config_file,
                                                                     image_folder):
    """Images without captions were skipped with no word outside metrics.jsonl."""
    (image_folder / "img0.txt").unlink()  # 4 steps of 2 read past the first epoch
    path = config_file(tiny(train=dict(steps=4), data=dict(source=str(image_folder))))
    result = cli("train", "-c", str(path), "--no-live")
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("done at step 4") and " samples skipped (missing_caption " in last
    (image_folder / "img0.txt").write_text("a red square\n")
    clean = cli("train", "-c", str(path), "--no-live", "--name", "clean", "--steps", "1")
    assert clean.exit_code == 0 and "skipped" not in clean.output, clean.output


@pytest.mark.parametrize("command", ["train", "upsample"])
def test_an_interrupted_run_names_the_whole_command_that_resumes_it(cli, tiny, config_file,
                                                                    tmp_path, monkeypatch,
                                                                    command):
    """As `glidectl lora` did; `train` said only "Resume with: --resume RUN"."""
    import glidectl.training
    from glidectl.training.state import TrainResult

    run = tmp_path / "runs" / "t"
    stopped = TrainResult(run, 3, interrupted=True, checkpoint=run / "checkpoints" / "step-3")
    monkeypatch.setattr(glidectl.training, "train", lambda *a, **k: stopped)
    result = cli(command, "-c", str(config_file(tiny())), "--no-live")
    assert result.exit_code == 130
    assert f"Resume with: glidectl {command} --resume {run}" in result.output


@pytest.mark.parametrize("signal_in_step, code", [(2, 0), (1, 130)])
def test_a_ctrl_c_during_the_last_step_ends_the_run_as_done(cli, tiny, config_file, tmp_path,
                                                            monkeypatch, signal_in_step, code):
    """A Ctrl-C while the last step trains: that step is the end, so the final checkpoint is
    saved and the run ends as done (exit 0); one a step earlier still stops the run."""
    import os
    import signal

    from glidectl.training.objective import Objective

    losses = Objective.losses

    def losses_and_ctrl_c(self, model, batch, step, *args):
        if step + 1 == signal_in_step:
            os.kill(os.getpid(), signal.SIGINT)
        return losses(self, model, batch, step, *args)

    monkeypatch.setattr(Objective, "losses", losses_and_ctrl_c)
    path = config_file(tiny(train=dict(steps=2), checkpoint=dict(every=0)))
    result = cli("train", "-c", str(path), "--no-live")
    assert result.exit_code == code, result.output
    checkpoints = tmp_path / "runs" / "t" / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == f"step-00000{signal_in_step}"
    last = result.output.strip().splitlines()[-1]
    if code == 0:
        assert last.startswith("done at step 2") and "Interrupted" not in result.output
    else:
        assert "SIGINT: saving step 1" in result.output
        assert last.startswith("Interrupted at step 1; checkpoint ")


def test_train_warns_about_image_files_the_folder_leaves_out(cli, tiny, config_file,
                                                             image_folder):
    (image_folder / "phone.heic").write_bytes(b"\x00")
    path = config_file(tiny(train=dict(steps=1), data=dict(source=str(image_folder))))
    result = cli("train", "-c", str(path), "--no-live")
    assert result.exit_code == 0, result.output
    assert (f"Warning: {str(image_folder)!r}: 1 image file of kinds glidectl does not read "
            "left out (.heic 1)") in result.output


def test_resuming_a_run_whose_config_is_gone_names_the_file(cli, tiny, config_file, tmp_path):
    path = config_file(tiny(train=dict(steps=1)))
    assert cli("train", "-c", str(path), "--no-live").exit_code == 0
    run = tmp_path / "runs" / "t"
    (run / "config.toml").unlink()
    result = cli("train", "--resume", str(run), "--steps", "2", "--no-live")
    assert isinstance(result.exception, GlidectlError)
    assert str(result.exception).startswith(f"The run's {str(run / 'config.toml')!r} is missing")
    again = cli("train", "--resume", str(run), "-c", str(path), "--steps", "2", "--no-live")
    assert again.exit_code == 0, again.output


def test_fid_without_weights_is_said_at_the_start(cli, tiny, config_file):
    path = config_file(tiny(train=dict(steps=2), preview=dict(every=0),
                            validation=dict(holdout=4, fid_every=2, fid_samples=4)))
    result = cli("train", "-c", str(path), "--no-live")
    assert result.exit_code == 0, result.output
    said = result.output.find("Warning: FID/KID will be absent: ")
    assert 0 <= said < result.output.find("step 1/2"), result.output
    assert "fid_samples" not in result.output


def test_fid_samples_beyond_the_held_out_ones_is_a_warning(cli, tiny, config_file):
    path = config_file(tiny(train=dict(steps=1), preview=dict(every=0),
                            validation=dict(holdout=4, fid_every=2)))  # fid_samples 16
    result = cli("train", "-c", str(path), "--no-live")
    assert result.exit_code == 0, result.output
    assert ("Warning: validation.fid_samples = 16 but there are 4 validation samples, so "
            "FID/KID use 4 images; raise validation.holdout or lower validation.fid_samples."
            ) in result.output


def test_a_warmup_as_long_as_the_run_is_a_warning(cli, tiny, config_file):
    """train.warmup_steps >= the run's steps: the schedule after it never starts."""
    from glidectl.training.lr_schedule import warmup_note

    path = config_file(tiny(train=dict(steps=2, warmup_steps=2, lr_schedule="cosine")))
    result = cli("train", "-c", str(path), "--no-live")
    assert result.exit_code == 0, result.output
    assert ("Warning: train.warmup_steps = 2 is not below the run's 2 steps, so training ends "
            "in the warmup (train.lr_schedule = 'cosine' never starts); lower "
            "train.warmup_steps.") in result.output
    assert warmup_note("cosine", 1, 2) is None and warmup_note("constant", 0, 2) is None


def test_an_ema_that_stays_the_starting_weights_is_a_warning(cli, tiny, config_file):
    """The default ema_decay 0.9999 without warmup kept 99 % of a scratch model's random
    weights after a 60-step run: previews, export and sample showed noise, unexplained."""
    from glidectl.training.ema import ema_note

    path = config_file(tiny(train=dict(steps=2, ema_decay=0.99), preview=dict(every=0)))
    result = cli("train", "-c", str(path), "--no-live")
    assert result.exit_code == 0, result.output
    assert ("Warning: train.ema_decay = 0.99 without train.ema_warmup keeps 98% of the "
            "starting weights in the EMA after 2 steps, and previews, export and sample use "
            "the EMA; set train.ema_warmup = true or lower train.ema_decay (0 = no EMA)."
            ) in " ".join(result.output.split())
    assert ema_note(0.9999, True, 60) is None and ema_note(0, False, 60) is None
    assert ema_note(0.99, False, 100) is None  # 37 % left: the run moved it


@pytest.mark.parametrize("init", ["scratch", "openai:base"])
def test_a_missing_data_source_is_named_by_its_key(tiny, tmp_path, monkeypatch, init):
    """A new user's first finetune (examples/finetune-base.toml) stopped at "Data source
    'data/my-photos' ... does not exist" without the key to change: before the model loads,
    and before a base that would be downloaded."""
    from glidectl.training.engine import Trainer

    monkeypatch.setenv("GLIDECTL_OFFLINE", "1")  # openai:base is not fetched before the check
    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "cache"))
    missing = tmp_path / "my-photos"
    cfg = tiny(data=dict(source=str(missing)), model=dict(init=init))
    with pytest.raises(GlidectlError) as error:
        Trainer(cfg, quiet=True)
    assert str(error.value).startswith(f"data.source {str(missing)!r} does not exist; pass ")


def test_a_missing_validation_source_is_named_as_such(tiny, tmp_path):
    """Not "Data source ... does not exist" alone, which reads as data.source."""
    from glidectl.training.engine import Trainer

    missing = tmp_path / "val-photos"
    cfg = tiny(validation=dict(source=str(missing), every=1))
    with pytest.raises(GlidectlError) as error:
        Trainer(cfg, quiet=True)
    assert str(error.value).startswith(f"validation.source: Data source {str(missing)!r} does "
                                       "not exist")
    assert not (tmp_path / "runs").exists()


def test_an_error_names_the_keyword_in_python_and_the_flag_on_the_command_line(
        cli, tiny, config_file):
    """``train(cfg, resume="latest")`` was told "--resume latest: ..., pass --name", flags
    the caller never passed; ``glidectl train --resume latest`` still names them."""
    from glidectl.training import train

    cfg = tiny(train=dict(name=""))
    with pytest.raises(GlidectlError, match=r"^resume='latest': no run with checkpoints under "
                       r".*; pass cfg\.train\.name or a checkpoint path\.$"):
        train(cfg, resume="latest", quiet=True)
    result = cli("train", "-c", str(config_file(cfg)), "--resume", "latest", "--no-live")
    assert isinstance(result.exception, GlidectlError)
    assert str(result.exception).startswith("--resume latest: no run with checkpoints under ")
    assert str(result.exception).endswith("; pass --name or a checkpoint path.")


def test_a_preview_that_cannot_sample_names_the_preview_key_not_a_flag(cli, tiny, config_file):
    """``raise --steps`` pointed at the optimizer steps (``train --steps``); the preview's
    own ``preview.steps`` is what to raise, in Python and on the command line alike."""
    from glidectl.training import train

    cfg = tiny(train=dict(steps=1), preview=dict(every=1, sampler="plms", steps=2))
    said = ("preview.steps = 2: the plms sampler needs at least 3 steps; raise preview.steps "
            "or pick another preview.sampler.")  # at setup, before the run folder
    with pytest.raises(GlidectlError) as err:
        train(cfg, quiet=True)
    assert str(err.value) == said
    result = cli("train", "-c", str(config_file(cfg)), "--name", "cli", "--no-live")
    assert str(result.exception) == said


def test_a_preview_sampler_that_needs_fitted_coefficients_is_refused_at_setup(cli, tiny,
                                                                              config_file):
    """``preview.sampler = "bespoke"`` stopped the run at its first preview (a resumed run's
    steps since its checkpoint lost) saying "pass --schedule FILE", a flag train has not."""
    cfg = tiny(train=dict(steps=1), preview=dict(every=1, sampler="bespoke", steps=2))
    result = cli("train", "-c", str(config_file(cfg)), "--no-live")
    assert isinstance(result.exception, GlidectlError)
    assert str(result.exception) == (
        "preview.sampler = 'bespoke' needs coefficients fitted to the trained model (glidectl "
        "fit-steps --method bespoke), which [preview] cannot pass; pick another "
        "preview.sampler, and sample with it once a checkpoint is fitted.")
    assert not os.path.exists(os.path.join(cfg.train.output_dir, "t"))  # no run folder


@pytest.mark.parametrize("name", ["..", "../elsewhere", "/abs/run", "a/../b", "."])
def test_a_run_name_that_leaves_the_output_folder_is_one_sentence(tiny, config_file, tmp_path,
                                                                  capsys, name):
    """train.name '..' or an absolute path put the run's files beside or far from
    train.output_dir (a run named '..' wrote config.toml and checkpoints/ into its parent)."""
    from glidectl.cli.app import main

    path = config_file(tiny(train=dict(steps=1)))
    before = sorted(p.name for p in tmp_path.iterdir())
    for extra in ([], ["--resume", "latest"]):
        with pytest.raises(SystemExit) as exc:
            main(["train", "-c", str(path), "--name", name, *extra, "--no-live"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1, err
        assert f"train.name {name!r} is not a folder name inside train.output_dir" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_run_whose_stdout_reader_goes_away_saves_a_checkpoint(tiny, config_file, tmp_path):
    """`glidectl train … | head -1`: the run ended at its next line with exit 1, no word and
    no checkpoint; the closed pipe is taken as a stop, as Ctrl-C is."""
    import os
    import subprocess
    import sys

    cfg = tiny(train=dict(steps=10_000), log=dict(every=1), checkpoint=dict(every=0))
    cmd = [sys.executable, "-m", "glidectl", "train", "-c", str(config_file(cfg)), "--no-live"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    while "step" not in (proc.stdout.readline() or "step"):
        pass  # the first step's line: then the reader goes, as head's does
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    run = tmp_path / "runs" / cfg.train.name
    assert "Traceback" not in err and "Interrupted at step" in err, err
    assert (run / "checkpoints" / "latest").is_file()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_run_whose_stdout_disk_is_full_saves_a_checkpoint_and_says_where(tiny, config_file,
                                                                           tmp_path):
    """`glidectl train … > train.log` on a disk that fills: the run ended at its next line
    with no checkpoint (the steps since the last one lost) and no word of where to resume.
    It stops as for a closed pipe, then says why in one line with the checkpoint."""
    import subprocess
    import sys

    cfg = tiny(train=dict(steps=10_000), log=dict(every=1), checkpoint=dict(every=0))
    cmd = [sys.executable, "-m", "glidectl", "train", "-c", str(config_file(cfg)), "--no-live"]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    run = tmp_path / "runs" / cfg.train.name
    last = run / "checkpoints" / "step-000001"
    assert proc.returncode == 1 and proc.stderr == (
        "Error: Cannot write glidectl's output (No space left on device): the disk where "
        "standard output (or a file it writes) goes is full or failing; free space there, or "
        f"send the output elsewhere; its last checkpoint is {str(last)!r}: resume with "
        f"--resume {run}.\n"), proc.stderr
    assert (run / "checkpoints" / "latest").read_text() == "step-000001\n"


def test_base_weights_given_to_upsample_name_the_command_that_trains_them(
        cli, tiny, config_file, tmp_path):
    """``glidectl upsample`` with a base model.init said to set model.kind = "base", which
    upsample then refuses ("this command trains upsample or upsample-inpaint models")."""
    from tiny_configs import tiny_base_weights

    init = tiny_base_weights(tmp_path / "base.safetensors")
    cfg = tiny(model=dict(kind="upsample", init=str(init)))
    result = cli("upsample", "--config", str(config_file(cfg)))
    assert isinstance(result.exception, GlidectlError), result.output
    assert str(result.exception) == (
        f"model.init {str(init)!r} is a 'base' model, which this command does not train; "
        "pick upsample or upsample-inpaint weights, or train it with glidectl train "
        "(model.kind = \"base\").")
