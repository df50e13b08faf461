"""Hostile inputs across every command: each is refused with exit 2 and exactly one ``Error:``
line, no traceback, and nothing written (no partial run folders, images or exports).

Most cases run in this process through the CLI's entry point (``main``, the one top-level
handler); a few run as real subprocesses. The working folder holds a tiny model, prompt files,
a damaged weights file, a code-running pickle and a run folder without checkpoints; a case
passes only if that folder is byte-for-byte unchanged afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_pipeline import tiny_glide
from tiny_configs import TINY

from glidectl.config import GlideConfig, save_config


class _Evil:
    """A pickle that would create a folder when loaded: loading must never run it."""

    def __reduce__(self):
        return (os.mkdir, ("PWNED",))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from glidectl.glide import save_weights

    w = tmp_path_factory.mktemp("hostile")
    save_weights(tiny_glide("base", 0), w / "tiny.safetensors")
    (w / "prompts.txt").write_text("a red cube\n")
    (w / "empty.txt").write_text("# only a comment\n\n")
    (w / "notes.txt").write_text("not a model")
    (w / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad json")
    torch.save({"weight": _Evil()}, w / "evil.pt")
    (w / "bad.toml").write_text("[train\nlr = ")
    (w / "latin1.toml").write_bytes("[train]\nname = '\xe9'\n".encode("latin-1"))
    (w / "empty_folder").mkdir()
    (w / "run_without_checkpoints").mkdir()
    cfg = GlideConfig()
    for section, values in TINY.items():
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    save_config(cfg, w / "tiny.toml")
    return w


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


TRAIN = ["train", "-c", "tiny.toml"]
SAMPLE = ["sample", "a cube", "--base", "tiny.safetensors", "--upsampler", "none",
          "--device", "cpu", "--quiet"]
EVAL = ["eval", "prompts.txt", "--base", "tiny.safetensors", "--device", "cpu"]

CASES: list[tuple[str, list[str]]] = [
    # train / upsample / lora: config values, files, runs
    ("train negative lr", [*TRAIN, "--set", "train.lr=-1"]),
    ("train nan lr", [*TRAIN, "--set", "train.lr=nan"]),
    ("train batch 0", [*TRAIN, "--set", "train.batch_size=0"]),
    ("train seed -1", [*TRAIN, "--set", "train.seed=-1"]),
    ("train seed 2**70", [*TRAIN, "--set", f"train.seed={2**70}"]),
    ("train beta2 1", [*TRAIN, "--set", "train.adam_beta2=1.0"]),
    ("train crop scale 0", [*TRAIN, "--set", "data.crop_scale=[0.0, 1.0]"]),
    ("train crop scale one number", [*TRAIN, "--set", "data.crop_scale=[0.5]"]),
    ("train config is a folder", ["train", "-c", "empty_folder"]),
    ("train unknown key", [*TRAIN, "--set", "train.learning_rate=1e-4"]),
    ("train lr not a number", [*TRAIN, "--set", "train.lr='fast'"]),
    ("train unknown precision", [*TRAIN, "--set", "train.precision=fp8"]),
    ("train unknown size", [*TRAIN, "--set", "model.size=huge"]),
    ("train missing data", [*TRAIN, "--set", "data.source=/nonexistent/images"]),
    ("train unknown preview sampler", [*TRAIN, "--set", "preview.every=1",
                                       "--set", "preview.sampler=nope"]),
    ("train unknown preview sampler, no previews", [*TRAIN, "--set", "preview.every=0",
                                                    "--set", "preview.sampler=nope"]),
    ("train missing init", [*TRAIN, "--set", "model.init=missing.safetensors"]),
    ("train damaged init", [*TRAIN, "--set", "model.init=corrupt.safetensors"]),
    ("train code-running init", [*TRAIN, "--set", "model.init=evil.pt"]),
    ("train output dir is a file", [*TRAIN, "--set", "train.output_dir=notes.txt"]),
    ("train NUL in output dir", [*TRAIN, "--set", 'train.output_dir="runs\\u0000x"']),
    ("train NUL in name", [*TRAIN, "--set", 'train.name="a\\u0000b"']),
    ("train control character in --name", [*TRAIN, "--name", "a\x01b"]),
    ("train newline in name", [*TRAIN, "--set", 'train.name="a\\nb"']),
    ("train negative --steps", [*TRAIN, "--steps", "-3"]),
    ("train missing config", ["train", "-c", "missing.toml"]),
    ("train invalid toml", ["train", "-c", "bad.toml"]),
    ("train config not utf-8", ["train", "-c", "latin1.toml"]),
    ("train resume nothing", [*TRAIN, "--resume", "no_such_run"]),
    ("upsample a base config", ["upsample", "-c", "tiny.toml"]),
    ("upsample grad_accum 0", ["upsample", "-c", "tiny.toml", "--set", "train.grad_accum=0"]),
    ("lora rank 0", ["lora", "-c", "tiny.toml", "--set", "lora.rank=0"]),
    ("lora unknown target", ["lora", "-c", "tiny.toml", "--set", "lora.targets=['nope']"]),
    ("lora merge missing adapter", ["lora", "merge", "missing", "-o", "merged.safetensors"]),
    ("lora merge nan scale", ["lora", "merge", "empty_folder", "-o", "m.safetensors",
                              "--scale", "nan"]),
    ("lora merge onto an existing file", ["lora", "merge", "empty_folder", "-o",
                                          "corrupt.safetensors"]),
    # sample
    ("sample seed 2**70", [*SAMPLE, "--seed", str(2**70)]),
    ("sample seed -1", [*SAMPLE, "--seed", "-1"]),
    ("sample guidance nan", [*SAMPLE, "--guidance", "nan"]),
    ("sample guidance inf", [*SAMPLE, "--guidance", "inf"]),
    ("sample guidance -1", [*SAMPLE, "--guidance", "-1"]),
    ("sample eta 5", [*SAMPLE, "--eta", "5"]),
    ("sample n 0", [*SAMPLE, "--n", "0"]),
    ("sample batch 0", [*SAMPLE, "--batch-size", "0"]),
    ("sample sigma-max 0", [*SAMPLE, "--sigma-max", "0"]),
    ("sample upsample-temp 5", [*SAMPLE, "--upsample-temp", "5"]),
    ("sample unknown sampler", [*SAMPLE, "--sampler", "nope"]),
    ("sample steps not a number", [*SAMPLE, "--steps", "abc"]),
    ("sample unknown precision", [*SAMPLE, "--precision", "fp64"]),
    ("sample unknown device", [*SAMPLE, "--device", "gpu0"]),
    ("sample device nothing computes on", [*SAMPLE, "--device", "meta"]),
    ("sample missing model", ["sample", "x", "--base", "missing.safetensors"]),
    ("sample damaged model", ["sample", "x", "--base", "corrupt.safetensors",
                              "--upsampler", "none"]),
    ("sample text file as model", ["sample", "x", "--base", "notes.txt", "--upsampler", "none"]),
    ("sample code-running pickle", ["sample", "x", "--base", "evil.pt", "--upsampler", "none"]),
    ("sample out is a file", [*SAMPLE, "--out", "notes.txt"]),
    ("sample missing low-res", [*SAMPLE, "--low-res", "missing.png"]),
    ("sample missing lora", [*SAMPLE, "--lora", "missing"]),
    ("sample lora scale nan", [*SAMPLE, "--lora", "empty_folder:nan"]),
    ("sample lora scale 1e9", [*SAMPLE, "--lora", "empty_folder:1e9"]),
    ("sample no prompt", ["sample"]),
    ("sample from a text file", ["sample", "--from-png", "notes.txt"]),
    ("sample from a missing PNG", ["sample", "--from-png", "missing.png"]),
    ("sample from a folder", ["sample", "--from-png", "empty_folder"]),
    # eval
    ("eval missing prompts", ["eval", "missing.txt"]),
    ("eval no prompts", [*EVAL[:1], "empty.txt", *EVAL[2:]]),
    ("eval prompts is a folder", [*EVAL[:1], "empty_folder", *EVAL[2:]]),
    ("eval lora scale inf", [*EVAL, "--lora", "empty_folder:inf"]),
    ("eval guidance inf", [*EVAL, "--guidance", "inf"]),
    ("eval n 0", [*EVAL, "--n", "0"]),
    ("eval seed -5", [*EVAL, "--seed", "-5"]),
    ("eval rerank -1", [*EVAL, "--rerank", "-1"]),
    ("eval unknown sampler", [*EVAL, "--sampler", "nope"]),
    ("eval device nothing computes on", [*EVAL, "--device", "meta"]),
    ("eval out is a file", [*EVAL, "--out", "notes.txt"]),
    # export
    ("export missing run", ["export", "no_such_run", "-o", "out.safetensors"]),
    ("export run without checkpoints", ["export", "run_without_checkpoints", "-o",
                                        "out.safetensors"]),
    # dataset inspect
    ("inspect missing source", ["dataset", "inspect", "/nonexistent/images"]),
    ("inspect unknown demo", ["dataset", "inspect", "demo:nope"]),
    ("inspect empty folder", ["dataset", "inspect", "empty_folder"]),
    ("inspect unknown preset", ["dataset", "inspect", "demo:shapes", "--preset", "nope"]),
    ("inspect limit 0", ["dataset", "inspect", "demo:shapes", "--limit", "0"]),
    ("inspect preview over a model", ["dataset", "inspect", "demo:shapes", "--limit", "2",
                                      "--preview", "tiny.safetensors"]),
    ("inspect preview over a prompt file", ["dataset", "inspect", "demo:shapes", "--limit", "2",
                                            "--preview", "prompts.txt"]),
    # config
    ("config missing file", ["config", "show", "-c", "missing.toml"]),
    ("config file is a folder", ["config", "show", "-c", "empty_folder"]),
    ("config crop scale one number", ["config", "show", "--set", "data.crop_scale=[0.5]"]),
    ("config crop scale min > max", ["config", "show", "--set", "data.crop_scale=[0.9,0.1]"]),
    ("config malformed --set", ["config", "show", "--set", "train.lr"]),
    ("config out of range", ["config", "show", "--set", "preview.guidance=inf"]),
    ("config unknown section", ["config", "show", "--set", "trian.lr=1e-4"]),
    # download, ui, plugins, the app itself
    ("download unknown model", ["download", "nope"]),
    ("ui port 0", ["ui", "--port", "0"]),
    ("ui port 70000", ["ui", "--port", "70000"]),
    ("ui missing models dir", ["ui", "--models-dir", "/nonexistent/models"]),
    ("plugins unknown option", ["plugins", "--bogus"]),
    ("unknown command", ["nosuchcommand"]),
]


def test_the_table_covers_every_command():
    assert len(CASES) >= 40
    firsts = {args[0] if args[0] not in ("lora", "dataset", "config") else " ".join(args[:2])
              for _, args in CASES}
    assert {"train", "upsample", "lora -c", "lora merge", "sample", "eval", "export",
            "dataset inspect", "config show", "download", "ui", "plugins"} <= firsts


@pytest.mark.parametrize("args", [a for _, a in CASES], ids=[n for n, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, workdir, monkeypatch, capsys):
    from glidectl.cli.app import main

    monkeypatch.chdir(workdir)
    before = _snapshot(workdir)
    threads = torch.get_num_threads()
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert code == 2, (code, err)
    assert len(errors) == 1, err
    assert "Traceback" not in err + out
    assert _snapshot(workdir) == before  # nothing half-written (and no pickle ran)


@pytest.mark.parametrize("args", [
    ["sample", "a cube", "--seed", str(2**64 - 1)],
    ["train", "-c", "tiny.toml", "--set", "train.lr=-1"],
    ["sample", "x", "--base", "evil.pt", "--upsampler", "none"],
], ids=["seed 2**64-1", "negative lr", "code-running pickle"])
def test_bad_input_through_the_console_entry_point(args, workdir):
    before = _snapshot(workdir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "glidectl", *args], cwd=workdir, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert [ln for ln in out.stderr.splitlines() if ln.strip()] == \
        [ln for ln in out.stderr.splitlines() if ln.startswith("Error:")] != []
    assert "Traceback" not in out.stderr and _snapshot(workdir) == before


def test_an_unreadable_config_file_is_one_sentence(tmp_path):
    """A config file this user may not read is exit 2 and one line, through the CLI and
    through ``load_config`` (root included: it runs without the capabilities that let root
    read anything)."""
    import shutil

    config = tmp_path / "locked.toml"
    config.write_text("[train]\nsteps = 1\n")
    config.chmod(0)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is absent: root reads any file")
        prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    cli = subprocess.run([*prefix, sys.executable, "-m", "glidectl", "config", "show", "-c",
                          str(config)], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2, cli.stderr
    assert cli.stderr.strip().splitlines() == [
        f"Error: Invalid value for '--config' / '-c': path {str(config)!r} is not readable "
        "(see 'glidectl config show --help')."]
    library = subprocess.run([*prefix, sys.executable, "-c", (
        "import sys; from glidectl.config import ConfigError, load_config\n"
        "try: load_config(sys.argv[1])\n"
        "except ConfigError as exc: print(exc)"), str(config)],
        capture_output=True, text=True, timeout=120)
    assert library.stdout.strip() == (
        f"Config file {str(config)!r} cannot be read (permission denied); make it readable by "
        "this user or copy it somewhere that is."), library.stderr


def test_a_failed_start_leaves_a_folder_that_was_there_as_it_was(tmp_path, monkeypatch, capsys):
    """--resume of a folder that is no run, and a new run named after an existing empty
    folder whose data is missing, stop in one line and leave no .lock, previews/ or
    checkpoints/ behind in the user's folder."""
    from glidectl.cli.app import main

    cfg = GlideConfig()
    for section, values in TINY.items():
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    save_config(cfg, tmp_path / "tiny.toml")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "keep.txt").write_text("mine")
    (tmp_path / "runs" / "e").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for args in (["--resume", "photos"],
                 ["--set", "train.name=e", "--set", "data.source=/nonexistent/images"]):
        with pytest.raises(SystemExit) as exc:
            main(["train", "-c", "tiny.toml", "--no-live", *args])
        assert exc.value.code == 2
        assert capsys.readouterr().err.count("Error:") == 1
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["keep.txt"]
    assert list((tmp_path / "runs" / "e").iterdir()) == []


@pytest.mark.parametrize("command", ["train", "lora"])
def test_resume_of_something_that_is_no_folder_names_resume(command, workdir, monkeypatch,
                                                            capsys):
    """/dev/null (a FIFO, a socket) is no run: said of --resume, not as an --output-dir that
    is a file."""
    from glidectl.cli.app import main

    monkeypatch.chdir(workdir)
    with pytest.raises(SystemExit) as exc:
        main([command, "-c", "tiny.toml", "--resume", "/dev/null"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "Error: --resume '/dev/null' is not a folder; pass a run folder or one of its "
        "checkpoints/step-NNNNNN folders, or 'latest'.\n")


@pytest.mark.parametrize("args", [
    ["sample", "--from-png", "/dev/null"],
    [*SAMPLE, "--low-res", "/dev/null"],
    [*SAMPLE, "--inpaint-image", "/dev/null", "--inpaint-mask", "prompts.txt"],
], ids=["from-png", "low-res", "inpaint-image"])
def test_a_device_as_an_input_image_is_no_file_not_a_missing_one(args, workdir, monkeypatch,
                                                                 capsys):
    """/dev/null (or a FIFO) exists: "does not exist; fix the path" sent the user looking."""
    from glidectl.cli.app import main

    monkeypatch.chdir(workdir)
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert "'/dev/null' is no file (a device or a pipe); pass a" in err, err


def test_inspect_preview_never_replaces_a_device(tmp_path, monkeypatch, capsys):
    """--preview /dev/null (or a FIFO) is refused: run as root, the grid's atomic rename put a
    regular file where the system's /dev/null was."""
    from glidectl.cli.app import main

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "inspect", "demo:shapes", "--limit", "2", "--preview", "pipe"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("Error: --preview 'pipe' is no file (a device or a pipe); "
                                       "pass a new file such as 'preview.png'.\n")
    assert fifo.is_fifo()


def test_no_atomic_write_replaces_a_device_or_a_link_to_one(workdir, tmp_path, monkeypatch,
                                                             capsys):
    """Every file glidectl writes is a temp file renamed over its path: run as root,
    `fit-steps --out /dev/full --overwrite` (or `export -o` onto a device) put a plain file
    where the system's device was. A device, pipe or link to one is refused first."""
    from glidectl.atomic import atomic_path
    from glidectl.cli.app import main
    from glidectl.errors import GlidectlError

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    (tmp_path / "link.json").symlink_to(fifo)
    for path in (fifo, tmp_path / "link.json"):
        with pytest.raises(GlidectlError, match=r"is no file \(a device or a pipe\), which the "
                           "file written would replace"), atomic_path(path) as tmp:
            tmp.write_text("{}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["fit-steps", str(workdir / "tiny.safetensors"), "--prompt", "a red cube",
              "--out", "pipe.json", "--overwrite"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.endswith(
        "Error: --out 'pipe.json' is no file (a device or a pipe), which the file written "
        "would replace; pass a file's path.\n")
    assert fifo.is_fifo() and (tmp_path / "link.json").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "pipe.json"]


def test_the_largest_seed_the_config_allows_trains(tmp_path, monkeypatch):
    """train.seed = 2**63-1 is in range: numpy's seeding (0 to 2**32-1) ended it in a
    ValueError traceback."""
    from glidectl.cli.app import main

    cfg = GlideConfig()
    for section, values in TINY.items():
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    save_config(cfg, tmp_path / "tiny.toml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["train", "-c", "tiny.toml", "--no-live", "--steps", "1", "--set",
              f"train.seed={2**63 - 1}"])
    assert exc.value.code == 0
    assert (tmp_path / "runs" / "t" / "checkpoints" / "step-000001").is_dir()
