"""Runs that could change no weight, and run folders behind a broken link, stop in one line
before anything is made."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_configs import tiny_base_weights

from glidectl.cli.app import main
from glidectl.errors import GlidectlError
from glidectl.out_dir import check_out_dir
from glidectl.training.run_dir import check_writable

LR_0 = ("train.lr = 0 trains nothing (every step leaves the weights as they are); set "
        "train.lr above 0 (the default is 1e-4).")
TEXT_FROM_SCRATCH = (
    "train.trainable = \"text\" trains nothing from model.init = \"scratch\": a new network's "
    "output layers start at zero and the frozen UNet keeps them there, so no gradient "
    "reaches the weights that train; start from trained weights (model.init) or set "
    "train.trainable = \"all\".")
TEXT_SCALE_0 = ("train.text_lr_scale = 0 trains nothing here: every weight that trains is the "
                "text transformer's, which it gives a learning rate of 0; set "
                "train.text_lr_scale above 0.")


def _cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--no-live"])
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command, sets, said", [
    ("train", ["train.lr=0"], LR_0),
    ("lora", ["train.lr=0"], LR_0),
    ("train", ["train.trainable=text"], TEXT_FROM_SCRATCH),
    ("train", ["train.trainable=text", "train.text_lr_scale=0"], TEXT_FROM_SCRATCH),
    ("lora", ["train.text_lr_scale=0", "lora.targets=[]",
              'lora.patterns=["^transformer\\\\..*c_qkv$"]'], TEXT_SCALE_0),
])
def test_a_run_that_can_change_no_weight_is_refused(tiny, config_file, tmp_path, capsys,
                                                    command, sets, said):
    """Each trained to its last step and exited 0 without a word, its checkpoints' weights
    those it began with."""
    init = tiny_base_weights(tmp_path / "base.safetensors")
    cfg = tiny(data=dict(resolution=16), lora=dict(targets=["attention"]))
    if command == "lora":
        cfg.model.init = str(init)
    code, err = _cli([command, "-c", str(config_file(cfg)),
                      *(a for s in sets for a in ("--set", s))], capsys)
    assert code == 2, err
    assert err == f"Error: {said}\n"
    assert not (tmp_path / "runs").exists()  # no run folder left behind


def test_preview_steps_the_preview_sampler_cannot_take_are_refused_with_previews_off(
        tiny, config_file, tmp_path, capsys):
    """preview.sampler plms at preview.steps 2, previews off, was recorded as the
    checkpoints' sampling, which `glidectl sample` then refused (with previews on, a resumed
    run failed mid-run: tests/training/test_cli.py)."""
    cfg = tiny(preview=dict(every=0, sampler="plms", steps=2))
    code, err = _cli(["train", "-c", str(config_file(cfg))], capsys)
    assert (code, err) == (2, "Error: preview.steps = 2: the plms sampler needs at least 3 "
                              "steps; raise preview.steps or pick another preview.sampler.\n")
    assert not (tmp_path / "runs").exists()


def test_text_lr_scale_0_trains_the_unet_beside_a_frozen_text_transformer(tiny, capsys):
    """Not refused where the UNet trains: the text transformer alone stays as it was."""
    from glidectl.training.engine import Trainer

    trainer = Trainer(tiny(train=dict(steps=1, text_lr_scale=0.0), checkpoint=dict(every=0)),
                      quiet=True)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-3, 0.0]


@pytest.mark.parametrize("name, said", [
    ("dangling", "is a broken symbolic link (to {target!r})"),
    ("dangling/sub", "is under {link!r}, a broken symbolic link (to {target!r})"),
])
def test_a_run_folder_behind_a_broken_link_is_named_as_one(tiny, config_file, tmp_path,
                                                           capsys, name, said):
    """It was called a permissions problem: "is not writable (File exists); … fix its
    permissions"."""
    runs, target = tmp_path / "runs", tmp_path / "gone"
    runs.mkdir()
    (runs / "dangling").symlink_to(target)
    code, err = _cli(["train", "-c", str(config_file(tiny())), "--set", f"train.name={name}"],
                     capsys)
    assert code == 2, err
    what = said.format(link=str(runs / "dangling"), target=str(target))
    assert err == (f"Error: Output folder {str(runs / name)!r} {what}; remove the link or "
                   "point it at a folder.\n"), err
    assert os.readlink(runs / "dangling") == str(target) and not target.exists()
    assert [p.name for p in runs.iterdir()] == ["dangling"]


def test_a_loop_of_links_is_a_broken_link_too(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(GlidectlError) as err:
        check_writable(tmp_path / "a")
    assert str(err.value) == (f"Output folder {str(tmp_path / 'a')!r} is a broken symbolic "
                              f"link (to {str(tmp_path / 'b')!r}); remove the link or point "
                              "it at a folder.")


@pytest.mark.parametrize("out", ["dangling", "dangling/x"])
def test_an_out_folder_behind_a_broken_link_is_named_as_one(tmp_path: Path, out: str):
    """sample's and eval's --out: mkdir failed later, with a FileExistsError traceback."""
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(GlidectlError) as err:
        check_out_dir(tmp_path / out)
    under = "" if out == "dangling" else f"under {str(tmp_path / 'dangling')!r}, "
    assert str(err.value) == (f"--out {str(tmp_path / out)!r} is {under}a broken symbolic "
                              f"link (to {str(tmp_path / 'gone')!r}); remove the link or "
                              "point it at a folder.")
