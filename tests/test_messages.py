"""One-line errors stay one clean line: no terminal escape codes, no cut-off fragments."""

from __future__ import annotations

import shlex

import pytest
import torch

from glidectl import plugins
from glidectl.errors import GlidectlError, cause, one_line
from glidectl.hookspecs import hookimpl

# The shape of torch's weights-only message in the versions that bolded part of it.
TORCH_TEXT = (
    "Weights only load failed. This file can still be loaded, to do so you have two options, "
    "\x1b[1mdo those steps only if you trust the source of the checkpoint\x1b[0m. \n\t(1) In "
    "PyTorch 2.6, we changed the default value of the `weights_only` argument in `torch.load` "
    "from `False` to `True`. Re-running `torch.load` with `weights_only` set to `False` will "
    "likely succeed, but it can result in arbitrary code execution."
)


def test_one_line_drops_escape_codes_control_characters_and_line_breaks():
    assert one_line("\x1b[1mbold\x1b[0m text\n\tnext \x1b]8;;http://x\x07link\x1b]8;;\x07") == \
        "bold text next link"


@pytest.mark.parametrize("limit", [40, 80, 120, 160, 200, 260])
def test_cause_cuts_at_a_sentence_or_word_and_never_inside_a_code_span(limit):
    text = cause(RuntimeError(TORCH_TEXT), limit)
    assert "\x1b" not in text and "\n" not in text and "\t" not in text
    assert len(text) <= limit + 2
    assert text.count("`") % 2 == 0
    assert text.endswith(" …")
    body = text[:-2]
    assert one_line(TORCH_TEXT).startswith(body)
    rest = one_line(TORCH_TEXT)[len(body):]
    assert rest[:1] in {".", " ", ",", ";", ":"}, rest[:10]  # not cut mid-word


def test_cause_keeps_short_messages_and_names_empty_ones():
    assert cause(ValueError("bad header")) == "bad header"
    assert cause(KeyError()) == "KeyError"
    assert cause(KeyError(101)) == "KeyError: 101"


class _Shouty:
    @hookimpl
    def register_commands(self, app):
        @app.command("shout")
        def shout() -> None:
            raise GlidectlError("a \x1b[1mbold\x1b[0m problem\n\nover two lines.")


def test_the_top_level_handler_prints_one_clean_line(capsys):
    from glidectl.cli.app import main

    plugins.load_plugins()
    plugins.pm.register(_Shouty(), name="shouty")
    try:
        with pytest.raises(SystemExit) as info:
            main(["shout"])
    finally:
        plugins.pm.unregister(name="shouty")
    assert info.value.code == 2
    assert capsys.readouterr().err == "Error: a bold problem over two lines.\n"


def test_a_code_running_checkpoint_is_one_clean_line(tmp_path, capsys):
    from glidectl.cli.app import main

    class Evil:
        def __reduce__(self):
            import os

            return (os.getcwd, ())

    path = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, path)
    with pytest.raises(SystemExit) as info:
        main(["sample", "x", "--base", str(path), "--upsampler", "none", "--device", "cpu",
              "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err == (
        f"Error: Cannot read checkpoint '{path}': it holds Python objects (posix.getcwd), not "
        "only weights, and glidectl never loads those; use a .safetensors file or a plain "
        "state_dict saved with torch.save.\n"
    )
    assert not (tmp_path / "out").exists()


def test_a_damaged_checkpoint_says_to_delete_it_before_fetching_it_again(tmp_path, capsys,
                                                                        monkeypatch):
    """It said "download it again", which `glidectl download` answers with "already cached"
    for a damaged file in its cache; a damaged file of the user's own (not in the cache) is
    not to be deleted on our word, nor is a plain pickle (it is not damaged)."""
    import os
    import pickle

    from glidectl.cli.app import main

    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"a": os.stat_result}, protocol=4))
    for path, fix in ((tmp_path / "cache" / "base.pt", "delete it and fetch it again (glidectl "
                       "download skips a file its cache holds)."),
                      (tmp_path / "mine.pt", "pass another weights file."),
                      (plain, None)):
        if fix:
            path.write_bytes(b"not a checkpoint" * 64)
        with pytest.raises(SystemExit) as info:
            main(["sample", "x", "--base", str(path), "--upsampler", "none", "--device", "cpu",
                  "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.startswith(f"Error: Cannot read checkpoint '{path}'")
        assert err.count("\n") == 1 and "Warning" not in err, err
        if fix:
            assert err.endswith(f"it is a text file, not a PyTorch checkpoint; {fix}\n"), err
        else:
            assert "it is a plain pickle, not a file torch.save writes" in err, err


def _merge_command(message: str) -> list[str]:
    """The words of the `glidectl lora merge ... -o OUT` a message suggests, as a shell
    would split them."""
    words = shlex.split(message[message.index("glidectl lora merge"):])
    end = words.index("-o") + 2
    return [*words[:end - 1], words[end - 1].rstrip(".`)")]


def test_commands_in_messages_quote_paths_for_the_shell(tmp_path):
    """A suggested command is copied into a shell: a run folder with a space or a quote in
    its path stays one word (it was pasted in bare: `glidectl lora merge my runs/x ...`)."""
    from glidectl import runs
    from glidectl.glide.checkpoints import adapter_not_model
    from glidectl.glide.loading import resolve_spec
    from glidectl.training.export import export_weights

    run = tmp_path / "my runs" / "Bob's LoRA"
    step = run / runs.CHECKPOINTS_DIR / runs.step_dir_name(3)
    (step / runs.ADAPTER_DIR).mkdir(parents=True)
    (step / runs.ADAPTER_DIR / runs.ADAPTER_CONFIG).write_text("{}")
    with pytest.raises(GlidectlError) as loading:
        resolve_spec(run)
    assert shlex.split(str(loading.value).split("--lora ")[1])[0].rstrip(",") == str(run)
    out = tmp_path / "full.safetensors"
    with pytest.raises(GlidectlError) as export:
        export_weights(run, out)
    for message in (str(loading.value), adapter_not_model(run)):
        assert _merge_command(message) == ["glidectl", "lora", "merge", str(run), "-o",
                                           "merged.safetensors"]
    assert _merge_command(str(export.value)) == ["glidectl", "lora", "merge", str(run), "-o",
                                                 str(out)]
    from glidectl.cli.eval_cmd import _resume_line

    out = tmp_path / "eval 1"
    assert shlex.split(_resume_line("my prompts.txt", out)) == [
        "glidectl", "eval", "my prompts.txt", "--resume", "--out", str(out)]


@pytest.mark.parametrize("args", [
    ("train", "--config", "examples/glide.toml"),
    ("sample", "a cat", "--base", "runs/quickstart"),
    ("eval", "prompts.txt"),
    ("export", "runs/quickstart", "-o", "q.safetensors"),
    ("dataset", "inspect", "data/zorblax"),
])
def test_a_relative_path_that_is_not_there_names_the_folder_it_was_read_from(
        args, tmp_path, monkeypatch, capsys):
    """The README's commands run from another folder than the clone say where they looked."""
    from glidectl.cli.app import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert f"(relative to the current folder, {tmp_path}) " in err
    with pytest.raises(SystemExit):
        main([str(tmp_path / a) if "/" in a or a.endswith(".txt") else a for a in args])
    assert "relative to the current folder" not in capsys.readouterr().err


def test_in_keywords_says_flags_and_their_values_as_python_keywords():
    from glidectl.errors import in_keywords

    names = {"--resume": "resume", "--name": "cfg.train.name", "--n": "n", "--out": "out",
             "--upsampler": "upsampler", "--skip-existing": "skip_existing=True",
             "--low-res": "low_res"}
    for message, said in [
        ("--resume latest needs a run: pass --name or --resume RUN_DIR.",
         "resume='latest' needs a run: pass cfg.train.name or resume=RUN_DIR."),
        ("--resume 'runs/x': not a checkpoint; resume with --resume /tmp/runs/a.",
         "resume='runs/x': not a checkpoint; resume with resume='/tmp/runs/a'."),
        ("--n 4 differs; pass --upsampler none, or --skip-existing to keep them.",
         "n=4 differs; pass upsampler='none', or skip_existing=True to keep them."),
        # a command to run keeps its flags; a flag the table lacks stays as it is
        ("write one with glidectl fit-steps MODEL --n 3 --out FILE, or pass --out FILE.",
         "write one with glidectl fit-steps MODEL --n 3 --out FILE, or pass out=FILE."),
        ("pass --precision fp32 or --n to go on.", "pass --precision fp32 or n to go on."),
        # a file name without a folder is a value too; prose after a flag is not
        ("--low-res photo.png: not an image; pass --low-res e.g. in.png, i.e. an image.",
         "low_res='photo.png': not an image; pass low_res e.g. in.png, i.e. an image."),
        ("apply it with --upsampler lora_v2.safetensors:0.5, or --out FILE.json.",
         "apply it with upsampler='lora_v2.safetensors:0.5', or out=FILE.json."),
        ("--out results is a file; pass --out DIR.", "out results is a file; pass out=DIR."),
    ]:
        assert in_keywords(message, names) == said
    # a bare word is a value where the caller passed it
    assert in_keywords("--out results is a file; pass --out DIR or --n to go on.", names,
                       values=["results", "a cat"]) == \
        "out='results' is a file; pass out=DIR or n to go on."


def test_the_outermost_library_call_names_the_keywords_once():
    from glidectl.errors import flags_named, keyword_errors

    @keyword_errors({"--steps": "steps"})
    def inner() -> None:
        raise GlidectlError("raise --steps.")

    @keyword_errors({"--steps": "cfg.train.steps"})
    def outer() -> None:
        inner()

    for call, said in [(inner, "raise steps."), (outer, "raise cfg.train.steps.")]:
        with pytest.raises(GlidectlError) as err:
            call()
        assert str(err.value) == said
    with flags_named(), pytest.raises(GlidectlError, match=r"^raise --steps\.$"):
        outer()
