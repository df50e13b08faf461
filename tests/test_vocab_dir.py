"""A GPT-2 vocabulary folder that cannot be used says who named it (--vocab-dir, vocab_dir=,
model.vocab_dir, $GLIDECTL_GPT2_VOCAB, a run's record); one no model reads is a warning."""

from __future__ import annotations

import shutil

import pytest
from test_pipeline import tiny_glide
from test_sample_cmd import in_process

from glidectl import tokenizer
from glidectl.errors import GlidectlError


@pytest.fixture
def gpt2_base(tmp_path, gpt2_vocab, monkeypatch):
    """A tiny GPT-2 base model's file, with this machine's default vocabulary set."""
    from glidectl.glide import save_weights

    monkeypatch.setenv(tokenizer.VOCAB_ENV, str(gpt2_vocab))
    return save_weights(tiny_glide("base", 3, tokenizer="gpt2"), tmp_path / "base.safetensors")


def test_sample_names_vocab_dir_for_a_folder_missing_or_lacking_files(capsys, tmp_path,
                                                                      gpt2_base):
    common = ("--base", gpt2_base, "--upsampler", "none", "--steps", 2, "--device", "cpu",
              "--out", tmp_path / "s")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "encoder.json").write_text("{}")
    for folder, problem in ((tmp_path / "none", "does not exist"),
                            (tmp_path / "half", "lacks vocab.bpe")):
        res = in_process(capsys, "sample", "a cat", *common, "--vocab-dir", folder)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert (f"The GPT-2 vocabulary folder {str(folder)!r} given with --vocab-dir {problem}; "
                "pass --vocab-dir DIR with GPT-2's encoder.json and vocab.bpe, or leave it out "
                "for the default vocabulary.") in res.stderr
    assert not (tmp_path / "s").exists()


def test_a_library_caller_is_told_the_vocab_dir_keyword(tmp_path, gpt2_base):
    from glidectl import generate

    with pytest.raises(GlidectlError) as caught:
        generate("a cat", gpt2_base, None, device="cpu", vocab_dir=str(tmp_path / "none"))
    assert str(caught.value) == (
        f"The GPT-2 vocabulary folder {str(tmp_path / 'none')!r} given with vocab_dir does not "
        "exist; pass vocab_dir=DIR with GPT-2's encoder.json and vocab.bpe, or leave it out "
        "for the default vocabulary.")


def test_the_environment_variable_is_named_where_it_set_the_folder(tmp_path, monkeypatch):
    from glidectl.pipeline import GlidePipeline

    monkeypatch.setenv(tokenizer.VOCAB_ENV, str(tmp_path / "gone"))
    with pytest.raises(GlidectlError, match=(
            rf"^The GPT-2 vocabulary folder '.*gone' \(\${tokenizer.VOCAB_ENV}\) does not exist; "
            rf"set {tokenizer.VOCAB_ENV} to a folder holding GPT-2's encoder\.json and "
            r"vocab\.bpe, or unset it to use tiktoken's\.$")):
        GlidePipeline(tiny_glide("base", tokenizer="gpt2"))  # not said as vocab_dir's


def test_no_default_vocabulary_names_the_flag_or_keyword_that_gives_one(capsys, tmp_path,
                                                                       monkeypatch):
    """Offline, without tiktoken's cache, `sample --base FINETUNE.safetensors` said "Set
    model.vocab_dir", a config key sample has not; it names --vocab-dir (vocab_dir= to a
    library caller)."""
    import tiktoken

    from glidectl import generate
    from glidectl.glide import save_weights

    def offline(name: str) -> None:
        raise ConnectionError(name)

    base = save_weights(tiny_glide("base", 3, tokenizer="gpt2"), tmp_path / "ft.safetensors")
    monkeypatch.delenv(tokenizer.VOCAB_ENV, raising=False)
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    tokenizer.clear_cache()
    res = in_process(capsys, "sample", "a cat", "--base", base, "--upsampler", "none",
                     "--steps", 2, "--device", "cpu", "--out", tmp_path / "s")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "(ConnectionError). Pass --vocab-dir DIR, a folder with encoder.json and vocab.bpe " \
           f"(or set the {tokenizer.VOCAB_ENV} environment variable to one)" in res.stderr
    with pytest.raises(GlidectlError, match=r"\. Pass vocab_dir=DIR, a folder with"):
        generate("a cat", base, None, device="cpu")
    tokenizer.clear_cache()


def test_a_training_config_names_model_vocab_dir(tmp_path):
    from tiny_configs import tiny_config

    from glidectl.training.model_setup import build_model

    (tmp_path / "v").mkdir()
    cfg = tiny_config(tmp_path, model={"tokenizer": "gpt2", "vocab_dir": str(tmp_path / "v")})
    with pytest.raises(GlidectlError, match=(
            r"folder '.*v' set as model\.vocab_dir lacks encoder\.json, vocab\.bpe; set "
            r"model\.vocab_dir to a folder holding GPT-2's encoder\.json and vocab\.bpe, or "
            r"leave it empty for the default vocabulary\.$")):
        build_model(cfg.model)


@pytest.mark.parametrize("damage, problem", [
    (shutil.rmtree, "does not exist"),
    (lambda v: (v / "encoder.json").write_text("{not json", encoding="utf-8"),
     "holds files that are not GPT-2's matching encoder.json and vocab.bpe ("),
])
def test_eval_resume_names_the_recorded_folder_that_is_gone_or_bad(capsys, tmp_path, gpt2_base,
                                                                   gpt2_vocab, damage, problem):
    vocab = shutil.copytree(gpt2_vocab, tmp_path / "vocab")
    (tmp_path / "p.txt").write_text("a cat\n", encoding="utf-8")
    out = tmp_path / "e"
    run = ("eval", tmp_path / "p.txt", "--base", gpt2_base, "--upsampler", "none", "--steps",
           2, "--device", "cpu", "--out", out)
    res = in_process(capsys, *run, "--vocab-dir", vocab)
    assert res.returncode == 0 and "--vocab-dir not used" not in res.stderr, res.stderr
    damage(vocab)
    tokenizer.clear_cache()
    res = in_process(capsys, *run, "--resume")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert (f"The GPT-2 vocabulary folder {str(vocab)!r} that the run in {str(out)!r} "
            f"recorded (metadata.json) {problem}") in res.stderr
    assert res.stderr.rstrip().endswith(
        "; pass --vocab-dir DIR with that vocabulary (GPT-2's encoder.json and vocab.bpe), or "
        "use another --out for a new run."), res.stderr


def test_vocab_dir_for_byte_models_is_a_warning_in_sample_and_eval(capsys, tmp_path,
                                                                   gpt2_vocab):
    from glidectl.glide import save_weights

    base = save_weights(tiny_glide("base", 3), tmp_path / "base.safetensors")  # byte
    said = ("Warning: --vocab-dir not used: the base model reads UTF-8 bytes (tokenizer "
            "\"byte\"), not GPT-2's vocabulary.")
    common = ("--base", base, "--upsampler", "none", "--steps", 2, "--device", "cpu",
              "--vocab-dir", gpt2_vocab)
    res = in_process(capsys, "sample", "a cat", *common, "--out", tmp_path / "s")
    assert res.returncode == 0 and said in res.stderr, res.stderr
    (tmp_path / "p.txt").write_text("a cat\n", encoding="utf-8")
    res = in_process(capsys, "eval", tmp_path / "p.txt", *common, "--out", tmp_path / "e")
    assert res.returncode == 0, res.stderr
    assert said in " ".join(res.stdout.split())  # with eval's other notes, wrapped as they are


def test_from_png_with_a_missing_vocab_dir_names_the_flag(capsys, tmp_path, gpt2_base):
    common = ("--device", "cpu", "-q", "--upsampler", "none", "--steps", 2)
    res = in_process(capsys, "sample", "a cat", "--base", gpt2_base, *common,
                     "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    res = in_process(capsys, "sample", "--from-png", tmp_path / "s" / "00000.png", *common[:3],
                     "--vocab-dir", tmp_path / "none", "--out", tmp_path / "a")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert (f"folder {str(tmp_path / 'none')!r} given with --vocab-dir does not exist; pass "
            "--vocab-dir DIR") in res.stderr
