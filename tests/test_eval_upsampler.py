"""``glidectl eval --upsampler SPEC --low-res DIR``: an upsampler scored on its own, and the
PSNR/SSIM it scores with."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline import tiny_glide
from test_sample_cmd import in_process

from glidectl.image_quality import gaussian_window, psnr, ssim

CAPTIONS = ["a red circle", "a blue square", "a green triangle"]
FAST = ("--upsample-sampler", "euler", "--upsample-steps", "2", "--device", "cpu",
        "--precision", "fp32")


@pytest.fixture(scope="module")
def upsampler(tmp_path_factory) -> Path:
    """A tiny random 8 → 32 px upsampler saved as a user's weights file."""
    from glidectl.glide import save_weights

    return save_weights(tiny_glide("upsample", 1), tmp_path_factory.mktemp("w") / "up.safetensors")


def captioned_folder(folder: Path, sizes: list[tuple[int, int]] | None = None) -> Path:
    """Random RGB images (default 40×36 px), each with a .txt caption beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, caption in enumerate(CAPTIONS):
        w, h = (sizes or [(40, 36)] * len(CAPTIONS))[k]
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"{k}.png")
        (folder / f"{k}.txt").write_text(caption + "\n", encoding="utf-8")
    return folder


# --------------------------------------------------------------------------- PSNR, SSIM
def test_an_image_against_itself_scores_ssim_one_and_infinite_psnr():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert torch.isinf(psnr(x, x)).all()


def test_psnr_of_a_uniform_error_is_its_closed_form():
    x = torch.full((1, 3, 12, 12), 0.5)
    assert psnr(x, x + 0.1).item() == pytest.approx(20.0)  # 10·log10(1 / 0.01)


def test_ssim_matches_a_hand_computation():
    # two flat images: no variance, so SSIM is the luminance term alone
    a, b, c1, c2 = 0.5, 0.25, 0.01 ** 2, 0.03 ** 2
    flat = ssim(torch.full((1, 3, 11, 11), a), torch.full((1, 3, 11, 11), b)).item()
    assert flat == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-12)
    # a flat image against a 0/1 pattern, one 11×11 window: its Gaussian-weighted mean μ and
    # variance μ(1 − μ) (a binary image) in Wang et al.'s formula
    pattern = (np.add.outer(np.arange(11), np.arange(11)) % 3 == 0).astype(np.float64)
    k = np.arange(11) - 5.0
    g = np.exp(-k ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    mu = float((w * pattern).sum())
    var = mu - mu ** 2
    expected = ((2 * a * mu + c1) * c2) / ((a * a + mu * mu + c1) * (var + c2))
    y = torch.from_numpy(pattern).expand(1, 3, 11, 11)
    assert ssim(torch.full((1, 3, 11, 11), a), y).item() == pytest.approx(expected, rel=1e-9)
    assert torch.allclose(gaussian_window(), torch.from_numpy(w))


# --------------------------------------------------------------------------- the command
def test_an_upsampler_eval_writes_scored_images_that_sample_makes_again(
        capsys, tmp_path, upsampler):
    refs, out = captioned_folder(tmp_path / "refs"), tmp_path / "out"
    res = in_process(capsys, "eval", "--upsampler", upsampler, "--low-res", refs, "--out", out,
                     "--batch-size", "2", *FAST)
    assert res.returncode == 0, res.stderr
    assert "bicubic_psnr" in res.stdout and "ssim" in res.stdout
    pngs = sorted(p.name for p in out.glob("0*.png"))
    assert pngs == ["000_a-red-circle.png", "001_a-blue-square.png", "002_a-green-triangle.png"]
    for name, caption in zip(pngs, CAPTIONS, strict=True):
        with Image.open(out / name) as im:
            assert im.size == (32, 32) and im.text["prompt"] == caption
        assert (out / name).with_suffix(".txt").read_text(encoding="utf-8") == caption + "\n"
    assert (out / "grid.png").is_file()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["settings"]["base"] is None and meta["prompts"] == CAPTIONS
    assert [r["source"] for r in meta["images"]] == ["0.png", "1.png", "2.png"]
    for name in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim"):
        values = [r["metrics"][name] for r in meta["images"]]
        assert meta["metrics"][name] == {"mean": pytest.approx(sum(values) / 3), "count": 3}
    # the scores are those of the files on disk against the reference training would use
    from glidectl.data.transforms import ImageTransform, LowResTransform

    with Image.open(refs / "0.png") as im:
        reference = ImageTransform(32, random_crop=False)(im.convert("RGB"), random.Random(0))
    low = LowResTransform(8)(reference, random.Random(0))
    with Image.open(out / "inputs" / "000_a-red-circle.png") as im:
        assert np.array_equal(np.asarray(im), np.asarray(low))  # training's downscale
    unit = torch.from_numpy(np.asarray(reference, dtype=np.float64)).permute(2, 0, 1)[None] / 255
    with Image.open(out / pngs[0]) as im:
        made = torch.from_numpy(np.asarray(im, dtype=np.float64)).permute(2, 0, 1)[None] / 255
    assert meta["images"][0]["metrics"]["psnr"] == pytest.approx(psnr(made, unit).item())
    # an SSIM near 0 (random weights): float sums in another order move its last digits
    assert meta["images"][0]["metrics"]["ssim"] == pytest.approx(ssim(made, unit).item(),
                                                                 abs=1e-9)
    bicubic = low.resize((32, 32), Image.Resampling.BICUBIC)
    b = torch.from_numpy(np.asarray(bicubic, dtype=np.float64)).permute(2, 0, 1)[None] / 255
    assert meta["images"][0]["metrics"]["bicubic_psnr"] == pytest.approx(psnr(b, unit).item())
    # the PNG records what made it: sample --from-png makes the same pixels
    again = tmp_path / "again"
    res = in_process(capsys, "sample", "--from-png", out / pngs[2], "--out", again)
    assert res.returncode == 0, res.stderr
    with Image.open(out / pngs[2]) as a, Image.open(next(again.glob("*.png"))) as b2:
        assert np.array_equal(np.asarray(a), np.asarray(b2))


def test_an_image_smaller_than_the_upsampler_is_left_out_with_a_note(capsys, tmp_path,
                                                                     upsampler):
    refs = captioned_folder(tmp_path / "refs", [(40, 36), (20, 20), (36, 36)])
    (refs / "3.heic").write_bytes(b"not read")  # what the folder scan leaves out is said too
    (refs / "metadata.jsonl").write_text('{"file_name": "0.png", "text": "a red\n', "utf-8")
    out = tmp_path / "out"
    res = in_process(capsys, "eval", "--upsampler", upsampler, "--low-res", refs, "--out", out,
                     *FAST)
    assert res.returncode == 0, res.stderr
    assert "Note: 1 image of" in res.stdout and "'1.png'" in res.stdout
    assert "2/2" in res.stdout and "2/3" not in res.stdout  # the progress bar ends full
    said = " ".join(res.stdout.split())
    assert "1 image file of kinds glidectl does not read left out (.heic 1)" in said, said
    assert "1 metadata row or file could not be read ('metadata.jsonl' line 1, not JSON)" in said
    meta = json.loads((out / "metadata.json").read_text())
    assert [r["source"] for r in meta["images"]] == ["0.png", "2.png"]


def test_an_upsampler_lora_is_scored_with_it_and_made_again_from_its_png(capsys, tmp_path,
                                                                         upsampler):
    import shutil

    from tiny_configs import random_attention_adapter

    shutil.copy(upsampler, tmp_path / "up.safetensors")
    adapter = random_attention_adapter(tmp_path, "up.safetensors", std=0.5)
    refs = captioned_folder(tmp_path / "refs")
    outs = {}
    for name, extra in (("plain", []), ("lora", ["--lora", str(adapter)])):
        outs[name] = tmp_path / name
        res = in_process(capsys, "eval", "--upsampler", tmp_path / "up.safetensors", "--low-res",
                         refs, "--out", outs[name], *extra, *FAST)
        assert res.returncode == 0, res.stderr
    meta = json.loads((outs["lora"] / "metadata.json").read_text())
    assert [lo["path"] for lo in meta["models"]["upsample"]["loras"]] == [str(adapter)]
    png = outs["lora"] / "000_a-red-circle.png"
    pixels = {k: np.asarray(Image.open(v / png.name)) for k, v in outs.items()}
    assert not np.array_equal(pixels["plain"], pixels["lora"])  # the adapter is applied
    again = tmp_path / "again"
    res = in_process(capsys, "sample", "--from-png", png, "--out", again)
    assert res.returncode == 0, res.stderr
    assert np.array_equal(np.asarray(Image.open(next(again.glob("*.png")))), pixels["lora"])


def test_a_greyscale_trained_upsampler_lora_is_scored_grey(capsys, tmp_path, upsampler):
    """An upsampler adapter recording grey (trained on greyscale data) was run in colour by
    `eval --low-res DIR --lora ADAPTER`, where `sample --lora` draws it grey."""
    import shutil

    from tiny_configs import random_attention_adapter

    shutil.copy(upsampler, tmp_path / "up.safetensors")
    adapter = random_attention_adapter(tmp_path, "up.safetensors", std=0.5)
    meta = json.loads((adapter / "glidectl.json").read_text())
    (adapter / "glidectl.json").write_text(json.dumps({**meta, "grey": True}))
    res = in_process(capsys, "eval", "--upsampler", tmp_path / "up.safetensors", "--low-res",
                     captioned_folder(tmp_path / "refs"), "--out", tmp_path / "o",
                     "--lora", adapter, *FAST)
    assert res.returncode == 0, res.stderr
    assert "the upsampler's recommended sampling settings (grey)" in res.stdout
    assert json.loads((tmp_path / "o" / "metadata.json").read_text())["settings"]["grey"]
    rgb = np.asarray(Image.open(tmp_path / "o" / "000_a-red-circle.png").convert("RGB"))
    assert not (rgb.max(axis=2).astype(int) - rgb.min(axis=2)).any()


def _refusal(capsys, tmp_path: Path, upsampler: Path, case: str) -> list[str]:
    refs = captioned_folder(tmp_path / "refs")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n", encoding="utf-8")
    up = ["--upsampler", str(upsampler)]
    if case in ("base model", "base lora"):
        from tiny_configs import random_attention_adapter

        from glidectl.glide import save_weights

        save_weights(tiny_glide("base", 0), tmp_path / "base.safetensors")
        if case == "base model":
            up = ["--upsampler", str(tmp_path / "base.safetensors")]
        else:
            up += ["--lora", str(random_attention_adapter(tmp_path, "base.safetensors", 0.5))]
    if case == "out holds files":
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.md").write_text("my own notes", encoding="utf-8")
        up += ["--out", str(tmp_path / "mine")]
    if case == "no captions":
        (refs / "1.txt").unlink()
    if case == "caption is a folder":
        (refs / "1.txt").unlink()
        (refs / "1.txt").mkdir()
    if case == "caption read fails":  # a file there that fails to read (EIO), root or not
        (refs / "2.txt").unlink()
        (refs / "2.txt").symlink_to("/proc/self/mem")
    if case == "caption not permitted":
        (refs / "0.txt").chmod(0)
    if case == "latin-1 caption":
        (refs / "2.txt").write_bytes("a caf\xe9 table".encode("latin-1"))
    if case == "no images":
        for p in refs.glob("*.png"):
            p.unlink()
    if case == "too small":
        captioned_folder(refs, [(20, 20)] * 3)
    return {
        "no prompts": [],
        "no upsampler": ["--low-res", str(refs)],
        "upsampler none": ["--low-res", str(refs), "--upsampler", "none"],
        "prompts": [str(prompts), "--low-res", str(refs), *up],
        "base": ["--low-res", str(refs), *up, "--base", "openai:base"],
        "base sampling": ["--low-res", str(refs), *up, "--steps", "5", "--guidance", "2"],
        "rerank": ["--low-res", str(refs), *up, "--rerank", "2"],
        "resume": ["--low-res", str(refs), *up, "--resume"],
        "clip": ["--low-res", str(refs), *up, "--clip-weights", "w.pt"],
        "wandb entity": ["--low-res", str(refs), *up, "--wandb-entity", "me"],
        "missing folder": ["--low-res", str(tmp_path / "nowhere"), *up],
        "no images": ["--low-res", str(refs), *up],
        "no captions": ["--low-res", str(refs), *up],
        "too small": ["--low-res", str(refs), *up],
        "latin-1 caption": ["--low-res", str(refs), *up],
        "caption is a folder": ["--low-res", str(refs), *up],
        "caption read fails": ["--low-res", str(refs), *up],
        "caption not permitted": ["--low-res", str(refs), *up],
        "base model": ["--low-res", str(refs), *up],
        "base lora": ["--low-res", str(refs), *up],
        "out holds files": ["--low-res", str(refs), *up],
    }[case]


@pytest.mark.parametrize("case, sentence", [
    ("no prompts", "eval needs a PROMPTS file (one prompt a line), or --upsampler"),
    ("no upsampler", "--low-res DIR scores an upsampler on its own; name it with --upsampler"),
    ("upsampler none", "--low-res DIR scores an upsampler on its own; name it with"),
    ("prompts", "--low-res DIR takes its captions from DIR, so the PROMPTS file"),
    ("base", "--low-res DIR upsamples DIR's images, so no base model runs; drop --base"),
    ("base sampling", "--steps, --guidance set the base model's sampling"),
    ("rerank", "--rerank sets the base model's sampling"),
    ("resume", "--resume cannot be used with --low-res DIR"),
    ("clip", "--clip-weights cannot be used with --low-res DIR"),
    ("wandb entity", "--wandb-entity cannot be used with --low-res DIR"),  # was ignored
    # each refusal gives its own reason (all said 'an upsampler eval runs whole')
    ("resume", "(an upsampler eval runs whole, into a new --out); drop it."),
    ("clip", "(an upsampler eval computes no CLIP score: the reference picture is known)"),
    ("wandb entity", "(an upsampler eval logs nothing to W&B); drop it."),
    ("missing folder", "nowhere' is not a folder; pass a folder of reference images"),
    ("no images", "holds no images (.jpg"),
    ("no captions", "1 of 3 images have no caption (first: '"),
    ("no captions", "refs/1.png'); write each one's caption into a UTF-8 .txt file beside it "
                    "('"),
    ("no captions", "refs/1.txt'), or a metadata.jsonl"),
    ("too small", "none of its 3 images could be used (too_small 3); pass readable images of "
                  "at least 32 px"),
    ("latin-1 caption", "refs': 1 of 3 images have a caption file that is not UTF-8 text "
                        "(first: '"),
    ("latin-1 caption", "refs/2.png'); save each caption as UTF-8."),
    ("caption is a folder", "refs': 1 of 3 images have a caption file that cannot be read "
                            "(first: '"),
    ("caption is a folder", "refs/1.txt': a folder); make each one's caption a readable "
                            "UTF-8 text file."),
    pytest.param("caption read fails", "refs/2.txt': Input/output error); make each one's",
                 marks=pytest.mark.skipif(not Path("/proc/self/mem").exists(),
                                          reason="no /proc")),
    pytest.param("caption not permitted", "refs/0.txt': Permission denied); make each one's",
                 marks=pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")),
    ("base model", "base.safetensors' is a 'base' model, and --low-res upsamples with an "
                   "upsample model; pass one (a glidectl upsample run or openai:upsample) as "
                   "--upsampler, or drop --low-res to sample this model as the base (--base)."),
    ("base lora", "my-lora' was trained for a 'base' model, and with --low-res DIR only the "
                  "upsampler runs; drop this --lora"),
    ("out holds files", "mine' already holds files, and an upsampler eval neither resumes "
                        "nor adds to a folder; pass a new or empty --out"),
])
def test_what_an_upsampler_eval_cannot_use_is_one_sentence_and_leaves_no_folder(
        capsys, tmp_path, upsampler, monkeypatch, case, sentence):
    monkeypatch.chdir(tmp_path)
    args = _refusal(capsys, tmp_path, upsampler, case)
    res = in_process(capsys, "eval", *args, *FAST)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert sentence in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "eval").exists()
    if case == "out holds files":  # the user's files are left as they were, alone
        assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.md"]


def test_the_input_is_downscaled_with_the_filter_the_run_trained_with(capsys, tmp_path,
                                                                       upsampler):
    import shutil

    from glidectl.data.transforms import ImageTransform, LowResTransform

    run = tmp_path / "run"
    step = run / "checkpoints" / "step-00000004"
    step.mkdir(parents=True)
    shutil.copy(upsampler, step / "ema.safetensors")
    (run / "config.toml").write_text('[data]\nlow_res_resample = "box"\n', encoding="utf-8")
    refs, out = captioned_folder(tmp_path / "refs"), tmp_path / "out"
    res = in_process(capsys, "eval", "--upsampler", step / "ema.safetensors", "--low-res", refs,
                     "--out", out, *FAST)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "metadata.json").read_text())["low_res_resample"] == "box"
    with Image.open(refs / "1.png") as im:
        reference = ImageTransform(32, random_crop=False)(im.convert("RGB"), random.Random(0))
    box, bicubic = (LowResTransform(8, f)(reference, random.Random(0)) for f in ("box", "bicubic"))
    assert not np.array_equal(np.asarray(box), np.asarray(bicubic))
    with Image.open(out / "inputs" / "001_a-blue-square.png") as im:
        assert np.array_equal(np.asarray(im), np.asarray(box))
    # its export records the filter, so the same weights exported are scored alike
    assert in_process(capsys, "export", step, "-o", tmp_path / "up.safetensors").returncode == 0
    res = in_process(capsys, "eval", "--upsampler", tmp_path / "up.safetensors", "--low-res",
                     refs, "--out", tmp_path / "out2", *FAST)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "out2" / "metadata.json").read_text())[
        "low_res_resample"] == "box"


def test_an_upsampler_lora_downscales_with_the_filter_its_run_trained_with(capsys, tmp_path,
                                                                          upsampler):
    """`eval --upsampler UP --low-res DIR --lora ADAPTER` downscaled with UP's filter, not the
    data.low_res_resample ADAPTER's run trained with."""
    import shutil

    from tiny_configs import random_attention_adapter

    from glidectl.data.transforms import ImageTransform, LowResTransform
    from glidectl.eval_upsampler_inputs import RESAMPLE_KEY
    from glidectl.glide.checkpoints import read_metadata

    shutil.copy(upsampler, tmp_path / "up.safetensors")  # records no filter: bicubic
    adapter = random_attention_adapter(tmp_path, "up.safetensors", std=0.5)
    meta = json.loads((adapter / "glidectl.json").read_text())
    (adapter / "glidectl.json").write_text(json.dumps({**meta, "low_res_resample": "box"}))
    # an adapter from before adapters recorded it: its LoRA run's config.toml
    old = tmp_path / "run" / "checkpoints" / "step-000004" / "lora"
    shutil.copytree(adapter, old)
    (old / "glidectl.json").write_text(json.dumps(meta))
    (tmp_path / "run" / "config.toml").write_text('[data]\nlow_res_resample = "box"\n')
    refs = captioned_folder(tmp_path / "refs")
    with Image.open(refs / "1.png") as im:
        reference = ImageTransform(32, random_crop=False)(im.convert("RGB"), random.Random(0))
    box = np.asarray(LowResTransform(8, "box")(reference, random.Random(0)))
    for k, lora in enumerate((adapter, old)):
        out = tmp_path / f"out{k}"
        res = in_process(capsys, "eval", "--upsampler", tmp_path / "up.safetensors",
                         "--low-res", refs, "--out", out, "--lora", lora, *FAST)
        assert res.returncode == 0, res.stderr
        assert json.loads((out / "metadata.json").read_text())["low_res_resample"] == "box"
        with Image.open(out / "inputs" / "001_a-blue-square.png") as im:
            assert np.array_equal(np.asarray(im), box)
    # merged into its upsampler, the adapter's filter goes with it
    merged = tmp_path / "merged.safetensors"
    res = in_process(capsys, "lora", "merge", adapter, "--base", tmp_path / "up.safetensors",
                     "-o", merged)
    assert res.returncode == 0, res.stderr
    assert read_metadata(merged)[RESAMPLE_KEY] == "box"
    # adapters that disagree: one sentence, no folder
    other = tmp_path / "other-lora"
    shutil.copytree(adapter, other)
    (other / "glidectl.json").write_text(json.dumps({**meta, "low_res_resample": "bicubic"}))
    res = in_process(capsys, "eval", "--upsampler", tmp_path / "up.safetensors", "--low-res",
                     refs, "--out", tmp_path / "both", "--lora", adapter, "--lora", other, *FAST)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "downscaled with 'box' (data.low_res_resample) and LoRA" in res.stderr
    assert "with 'bicubic'" in res.stderr and not (tmp_path / "both").exists()


def test_fid_scores_the_upsampled_images_against_a_reference_folder(capsys, tmp_path,
                                                                    upsampler, monkeypatch):
    from test_fid import ColourStats

    from glidectl import fid

    monkeypatch.setattr(fid, "inception_features", lambda weights: fid.Features(ColourStats()))
    refs, out = captioned_folder(tmp_path / "refs"), tmp_path / "out"
    res = in_process(capsys, "eval", "--upsampler", upsampler, "--low-res", refs, "--out", out,
                     "--fid", refs, "--n", "2", *FAST)
    assert res.returncode == 0, res.stderr
    metric = json.loads((out / "metadata.json").read_text())["metrics"]["fid"]
    assert (metric["fid_fake"], metric["fid_real"]) == (6, 3) and metric["fid"] > 0
    assert "FID" in res.stdout


def test_files_written_into_out_while_the_models_load_are_left_alone(capsys, tmp_path,
                                                                      upsampler, monkeypatch):
    """--out is checked again once this eval holds it (as eval PROMPTS does): another eval
    that wrote there meanwhile kept its images, which this one would have written over."""
    from glidectl.pipeline import GlidePipeline

    refs, out = captioned_folder(tmp_path / "refs"), tmp_path / "out"
    load = GlidePipeline.from_specs

    def load_while_another_eval_writes(*args, **kwargs):
        out.mkdir()
        (out / "000_a-red-circle.png").write_bytes(b"theirs")
        return load(*args, **kwargs)

    monkeypatch.setattr(GlidePipeline, "from_specs", load_while_another_eval_writes)
    res = in_process(capsys, "eval", "--upsampler", upsampler, "--low-res", refs, "--out", out,
                     *FAST)
    assert res.returncode == 2 and "already holds files, and an upsampler eval" in res.stderr
    assert (out / "000_a-red-circle.png").read_bytes() == b"theirs"
    assert not (out / "inputs").exists() and not (out / "metadata.json").exists()


def _interrupted_meta(out: Path) -> dict:
    """metadata.json of a stopped run, after checking each image it lists is whole."""
    from glidectl.eval_outputs import is_whole_png

    meta = json.loads((out / "metadata.json").read_text())
    for record in meta["images"]:
        assert is_whole_png(out / record["file"]) and is_whole_png(out / record["input_file"])
        assert (out / record["caption_file"]).read_text(encoding="utf-8").strip()
    return meta


def test_ctrl_c_keeps_the_finished_images_and_says_the_run_does_not_resume(
        capsys, tmp_path, upsampler, monkeypatch):
    """An upsampler eval stopped mid-run: exit 130, its metadata.json says it was interrupted
    (not "running", which only a killed run leaves) and lists the images finished (and no
    input of another), and the line says to run it again into a new --out, not to --resume
    it."""
    from glidectl import eval_upsampler
    from glidectl.pipeline import GlidePipeline

    refs, out = captioned_folder(tmp_path / "refs"), tmp_path / "out"
    real, written = eval_upsampler.write_pair, []

    def ctrl_c_at_the_second_image(*args, **kwargs):
        if written:
            raise KeyboardInterrupt
        written.append(real(*args, **kwargs))

    monkeypatch.setattr(eval_upsampler, "write_pair", ctrl_c_at_the_second_image)
    res = in_process(capsys, "eval", "--upsampler", upsampler, "--low-res", refs, "--out", out,
                     "--batch-size", "1", *FAST)
    assert res.returncode == 130 and "Traceback" not in res.stdout + res.stderr
    said = " ".join((res.stdout + res.stderr).split())
    assert "--resume" not in said, said
    assert (f"Interrupted; the finished images are kept in {str(out)!r}, but an upsampler "
            "eval does not resume: run it again into a new or empty --out.") in said, said
    meta = _interrupted_meta(out)
    assert meta["status"] == "interrupted" and "error" not in meta
    assert [r["file"] for r in meta["images"]] == ["000_a-red-circle.png"]
    # the input of the image it stopped at is not kept without it
    assert sorted(p.name for p in (out / "inputs").iterdir()) == ["000_a-red-circle.png"]
    assert meta["counts"] == {"prompts": 1, "images": 1, "generated": 1, "kept": 0}
    assert [s["generated"] for s in meta["sessions"]] == [1]
    # a prompts eval pointed at it is told it holds an upsampler eval, not to --resume it
    from glidectl.glide import save_weights

    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(CAPTIONS) + "\n")
    base = save_weights(tiny_glide("base", 1), tmp_path / "base.safetensors")
    res = in_process(capsys, "eval", prompts, "--base", base, "--out", out, "--device", "cpu")
    assert res.returncode == 2 and res.stderr == (
        f"Error: --out {str(out)!r} holds an upsampler eval (eval --low-res) that was "
        "interrupted, whose images a prompts eval neither continues nor reuses; pass a new "
        "or empty --out.\n")
    # stopped before its folder holds anything: nothing is kept, and no folder is left
    monkeypatch.setattr(GlidePipeline, "from_specs", ctrl_c_at_the_second_image)
    res = in_process(capsys, "eval", "--upsampler", upsampler, "--low-res", refs, "--out",
                     tmp_path / "early", *FAST)
    assert res.returncode == 130
    assert res.stderr == "Interrupted before any image was written.\n"
    assert not (tmp_path / "early").exists()


def test_a_failure_mid_run_is_recorded_and_its_line_does_not_offer_resume(
        capsys, tmp_path, upsampler, monkeypatch):
    """A full disk at the second image: exit 1, one line that keeps the cause and says the
    finished images stay but the run does not resume; metadata.json says it failed."""
    from glidectl import eval_upsampler
    from glidectl.errors import WriteError

    refs, out = captioned_folder(tmp_path / "refs"), tmp_path / "out"
    real, written = eval_upsampler.write_pair, []

    def disk_full_at_the_second_image(*args, **kwargs):
        if written:
            raise WriteError("Could not write 'x.png': No space left on device.")
        written.append(real(*args, **kwargs))

    monkeypatch.setattr(eval_upsampler, "write_pair", disk_full_at_the_second_image)
    res = in_process(capsys, "eval", "--upsampler", upsampler, "--low-res", refs, "--out", out,
                     "--batch-size", "1", *FAST)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr == (
        "Error: Could not write 'x.png': No space left on device; the finished images are "
        f"kept in {str(out)!r}, but an upsampler eval does not resume: run it again into a "
        "new or empty --out.\n")
    meta = _interrupted_meta(out)
    assert meta["status"] == "failed"
    assert meta["error"] == "Could not write 'x.png': No space left on device."
    assert [r["file"] for r in meta["images"]] == ["000_a-red-circle.png"]


def test_an_out_another_eval_is_writing_is_one_line_that_does_not_offer_resume(
        capsys, tmp_path, upsampler):
    """--out locked by another eval (still loading: only its .lock is there) is refused in
    one line before any model loads, without the --resume this mode refuses."""
    import subprocess
    import sys

    from glidectl.errors import GlidectlError
    from glidectl.eval_outputs import claim_folder

    refs, out = captioned_folder(tmp_path / "refs"), tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(  # the other eval, as far as the lock goes: held until stdin ends
        [sys.executable, "-c", "import sys; from glidectl.atomic import lock_file; "
         f"h = lock_file({str(out / '.lock')!r}, 'busy'); print('held', flush=True); "
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = in_process(capsys, "eval", "--upsampler", tmp_path / "not-loaded.safetensors",
                         "--low-res", refs, "--out", out, *FAST)
        # locked after that check, while the models load: the lock says the same
        with pytest.raises(GlidectlError) as info, claim_folder(out, False, resumes=False):
            pass
    finally:
        holder.communicate("", timeout=30)
    assert res.returncode == 2 and res.stderr == (
        f"Error: --out {str(out)!r} is being written by another glidectl eval; pass a new or "
        "empty --out (an upsampler eval writes a folder of its own).\n")
    assert f"Error: {info.value}\n" == res.stderr
    assert [p.name for p in out.iterdir()] == [".lock"]
    res = in_process(capsys, "eval", "--upsampler", upsampler, "--low-res", refs, "--out", out,
                     *FAST)  # once it has ended, the folder (holding only .lock) is free
    assert res.returncode == 0, res.stderr


def test_a_prompts_eval_neither_continues_nor_reuses_an_upsampler_eval_folder(
        capsys, tmp_path, upsampler):
    """`eval PROMPTS --resume/--skip-existing --out` an upsampler eval's folder compared its
    settings flag by flag ("--rerank 0 differs from (none)", "drop --base to continue it"),
    and a plain `eval PROMPTS --out` was told to pass --resume, which refuses it."""
    from glidectl.glide import save_weights

    refs, out = captioned_folder(tmp_path / "refs"), tmp_path / "out"
    res = in_process(capsys, "eval", "--upsampler", upsampler, "--low-res", refs, "--out", out,
                     *FAST)
    assert res.returncode == 0, res.stderr
    base = save_weights(tiny_glide("base", 1), tmp_path / "base.safetensors")
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(CAPTIONS) + "\n")
    before = sorted(p.name for p in out.iterdir())
    for flag, more in (("--resume", []), ("--resume", ["--base", base]),
                       ("--skip-existing", ["--base", base])):
        res = in_process(capsys, "eval", prompts, flag, "--out", out, "--device", "cpu", *more)
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip() == (
            f"Error: {flag}: {str(out)!r} holds an upsampler eval (eval --low-res), whose "
            "images a prompts eval neither continues nor reuses; pass a new or empty --out.")
    res = in_process(capsys, "eval", prompts, "--base", base, "--out", out, "--device", "cpu")
    assert res.returncode == 2 and res.stderr == (
        f"Error: --out {str(out)!r} holds an upsampler eval (eval --low-res) that finished, "
        "whose images a prompts eval neither continues nor reuses; pass a new or empty "
        "--out.\n")
    assert sorted(p.name for p in out.iterdir()) == before


# --------------------------------------------------------------------------- kill -9
@pytest.fixture(scope="module")
def killed(tmp_path_factory, upsampler) -> Path:
    """An upsampler eval (a real process) killed with SIGKILL while it makes its second
    image (batch size 1, about a second an image): no handler of its ran."""
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path_factory.mktemp("killed")
    refs, out = captioned_folder(root / "refs"), root / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "glidectl", "eval", "--upsampler", str(upsampler), "--low-res",
         str(refs), "--out", str(out), "--batch-size", "1", "--upsample-sampler", "euler",
         "--upsample-steps", "100", "--device", "cpu", "--precision", "fp32"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "GLIDECTL_LOAD_PLUGINS": ""},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline \
                and not (out / "000_a-red-circle.png").is_file():
            time.sleep(0.005)
        time.sleep(0.3)  # well into the second image's 100 steps
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the eval ended before it could be killed"
    assert json.loads((out / "metadata.json").read_text())["status"] == "running"
    return out


def test_a_killed_upsampler_eval_leaves_no_input_without_its_image(killed):
    """A reference's input is written just before its first image, not as soon as it is
    read: a kill -9 leaves no input of a reference whose image was never made."""
    inputs = sorted(p.name for p in (killed / "inputs").iterdir())
    made = sorted(p.name for p in killed.glob("0*.png"))
    assert inputs == made and "000_a-red-circle.png" in made


def test_the_next_eval_into_a_killed_upsampler_eval_says_it_was_killed(capsys, tmp_path,
                                                                      killed, upsampler):
    """Its metadata.json says "running", but no eval holds the folder: the next eval into
    it (this mode, or a prompts eval) names a run that stopped without recording, in one
    sentence, and changes nothing there."""
    from glidectl.glide import save_weights

    before = {p: p.read_bytes() for p in killed.rglob("*") if p.is_file()}
    refs = captioned_folder(tmp_path / "refs")
    res = in_process(capsys, "eval", "--upsampler", upsampler, "--low-res", refs, "--out",
                     killed, *FAST)
    assert res.returncode == 2 and res.stderr == (
        f"Error: --out {str(killed)!r} holds an eval that stopped without recording "
        "(killed?): its finished images are kept there, but an upsampler eval neither resumes "
        "nor adds to a folder; pass a new or empty --out (or none, for the next eval/NNNN).\n")
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(CAPTIONS) + "\n")
    base = save_weights(tiny_glide("base", 1), tmp_path / "base.safetensors")
    res = in_process(capsys, "eval", prompts, "--base", base, "--out", killed, "--device",
                     "cpu")
    assert res.returncode == 2 and res.stderr == (
        f"Error: --out {str(killed)!r} holds an upsampler eval (eval --low-res) that stopped "
        "without recording (killed?), whose images a prompts eval neither continues nor "
        "reuses; pass a new or empty --out.\n")
    assert {p: p.read_bytes() for p in killed.rglob("*") if p.is_file()} == before
