"""glidectl eval: prompts files, fixed batches and seeds, outputs, resume after SIGKILL, metrics."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from glidectl.errors import GlidectlError
from glidectl.evaluation import (
    EvalSettings,
    Plan,
    RunOptions,
    Stage,
    image_seed,
    image_stems,
    next_eval_dir,
    read_prompts,
    run_eval,
    slugify,
)

FAST = Stage("euler", 2, 3.0)
PROMPTS = [
    "a red circle on a white background",
    "a blue square on a black background",
    "a green triangle on a white background",
    "a yellow circle on a black background",
    "a purple square on a white background",
]



@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A 32 px tiny base model with random weights, saved like a user's weights file."""
    import torch
    from tiny_configs import fill_zero_layers

    from glidectl.glide import create_model, preset_options, save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny-base.safetensors"
    model = fill_zero_layers(create_model(preset_options("base", "tiny").replace(image_size=32)))
    save_weights(model, path)
    return path


@pytest.fixture(scope="module")
def stack(tiny_base):
    from glidectl.pipeline import GlidePipeline

    return GlidePipeline.from_specs(str(tiny_base), device="cpu", precision="fp32")


def write_prompts(path: Path, prompts: list[str]) -> Path:
    path.write_text("# demo prompts\n\n" + "\n\n".join(prompts) + "\n", encoding="utf-8")
    return path


def outputs(out: Path) -> dict[str, bytes]:
    """Every image and caption file of a run, by name."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.suffix in (".png", ".txt") and not p.name.startswith(".")
            and p.name != "grid.png"}


# --------------------------------------------------------------------------- pure parts
def test_prompts_file_skips_blank_lines_and_comments(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# header\n\n  a cat  \n   \n# another\na dog\n", encoding="utf-8")
    assert read_prompts(f) == ["a cat", "a dog"]
    (tmp_path / "empty.txt").write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(GlidectlError, match="has no prompts"):
        read_prompts(tmp_path / "empty.txt")
    with pytest.raises(GlidectlError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt")
    with pytest.raises(GlidectlError, match="is a folder; pass a text file with one prompt"):
        read_prompts(tmp_path)


def test_prompts_file_from_a_windows_editor_reads_like_any_other(tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes("# header\r\na cat\r\n\r\nun chat \u00e9t\u00e9\r\n".encode("utf-8-sig"))
    assert read_prompts(f) == ["a cat", "un chat \u00e9t\u00e9"]  # the BOM is no prompt


def test_names_are_numbered_slugs_with_an_index_for_several_images():
    assert slugify("A Red  Circle, on white!") == "a-red-circle-on-white"
    assert image_stems(["a cat"], 0, 1) == ["000_a-cat"]
    assert image_stems(["a cat", "x"], 1, 3) == ["001_x_1", "001_x_2", "001_x_3"]
    assert image_stems(["p"] * 1200, 7, 1) == ["0007_p"]


def test_a_prompts_file_grown_past_1000_keeps_the_images_already_made(tmp_path, tiny_base,
                                                                       stack):
    prompts = [f"shape {i}" for i in range(1000)]
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST, batch_size=1)
    out = tmp_path / "o"
    out.mkdir()
    made = Plan.make(prompts, settings)
    for i in range(1000):  # a finished 1,000-prompt run: 000_ … 999_
        (stem,) = made.stems(i)
        (out / f"{stem}.txt").write_text(prompts[i] + "\n")
        Image.new("RGB", (32, 32), (i % 256, 0, 0)).save(out / f"{stem}.png")
    before = outputs(out)
    grown = write_prompts(tmp_path / "p.txt", [*prompts, "a cat"])
    report = run_eval(grown, settings, RunOptions(out=out, device="cpu", skip_existing=True),
                      pipeline=stack)
    assert report.metadata["counts"]["generated"] == 1  # only the new prompt
    after = outputs(out)
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 2
    assert {"1000_a-cat.png", "1000_a-cat.txt"} < set(after)
    wide = tmp_path / "wide"  # a folder numbered 0000_ …, now with 10 prompts
    wide.mkdir()
    for ext in ("png", "txt"):
        (wide / f"0003_shape-3.{ext}").write_bytes(after[f"003_shape-3.{ext}"])
    shrunk = Plan.make(prompts[:10], settings)
    shrunk.mark_done(wide)
    assert shrunk.done == {3} and shrunk.stems(3) == ["0003_shape-3"]


def test_image_seeds_depend_on_seed_prompt_and_image_only():
    seeds = {image_seed(s, i, j) for s in (0, 1) for i in range(3) for j in range(3)}
    assert len(seeds) == 18
    assert image_seed(5, 2, 1) == image_seed(5, 2, 1)
    assert all(0 <= s < 2**63 for s in seeds)


def test_batches_are_fixed_and_only_unfinished_ones_rerun(tmp_path):
    settings = EvalSettings(n=2, batch_size=3)
    plan = Plan.make(["a", "b", "c"], settings)
    assert plan.batches == [[(0, 0), (0, 1), (1, 0)], [(1, 1), (2, 0), (2, 1)]]
    for stem in plan.stems(0):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{stem}.png")
        (tmp_path / f"{stem}.txt").write_text("a")
    Image.new("RGB", (4, 4)).save(tmp_path / f"{plan.stems(1)[0]}.png")  # prompt 1 half done
    plan.mark_done(tmp_path)
    assert plan.done == {0}
    assert plan.pending_batches == plan.batches  # both batches still hold unfinished prompts


def test_an_images_batch_length_is_found_without_searching_the_batches():
    class Counted(list):  # counts the walks through the batches
        walks = 0

        def __iter__(self):
            Counted.walks += 1
            return super().__iter__()

    plan = Plan.make([f"p{i}" for i in range(2001)], EvalSettings(n=2, rerank=3, batch_size=4))
    plan.batches = Counted(plan.batches)
    lengths = {(i, j): plan.batch_length(i, j) for i in range(2001) for j in range(3)}
    assert Counted.walks <= 1  # was one walk per image: quadratic in the prompts
    assert lengths == {item: len(b) for b in list.__iter__(plan.batches) for item in b}
    assert set(lengths.values()) == {4, 3}  # 6,003 items: the last batch holds 3


def test_output_folders_are_numbered(tmp_path):
    assert next_eval_dir(tmp_path) == tmp_path / "0001"
    (tmp_path / "0001").mkdir()
    (tmp_path / "0007").mkdir()
    assert next_eval_dir(tmp_path) == tmp_path / "0008"


def test_settings_are_checked():
    with pytest.raises(GlidectlError, match="^rerank=2 must be at least n=4"):  # its fields
        EvalSettings(n=4, rerank=2)
    with pytest.raises(GlidectlError, match="precision"):
        EvalSettings(precision="fp8")
    assert EvalSettings(precision="no").precision == "fp32"


def test_settings_for_names_a_key_it_does_not_take_and_the_nearest(tmp_path):
    """``{"steps": 2}`` as ``generate`` takes it (was: TypeError "EvalSettings.__init__() got
    an unexpected keyword argument 'steps'"): one sentence naming the FLAG_NAMES key."""
    from glidectl.evaluation import RunOptions, settings_for

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    for flags, said in [
        ({"steps": 2}, "settings_for(): unknown setting 'steps' (did you mean "
                       "'base_stage.steps'?); its keys are those of "
                       "glidectl.eval_settings.FLAG_NAMES."),
        ({"nn": 4}, "settings_for(): unknown setting 'nn' (did you mean 'n'?); its keys are "
                    "those of glidectl.eval_settings.FLAG_NAMES."),
    ]:
        with pytest.raises(GlidectlError) as error:
            settings_for(prompts, {"base": "openai:base", **flags},
                         RunOptions(out=tmp_path / "e"))
        assert str(error.value) == said


# --------------------------------------------------------------------------- a real run
def test_run_writes_pairs_grid_and_metadata(tmp_path, tiny_base, stack):
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS)
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST, n=1, batch_size=2, seed=3)
    events: list[tuple[str, dict]] = []
    report = run_eval(prompts, settings, RunOptions(out=tmp_path / "out", device="cpu"),
                      on_event=lambda kind, **info: events.append((kind, info)), pipeline=stack)
    out = report.out
    names = sorted(outputs(out))
    assert names == sorted(f"{s}.{ext}" for i in range(5) for s in image_stems(PROMPTS, i, 1)
                           for ext in ("png", "txt"))
    assert (out / "000_a-red-circle-on-a-white-background.txt").read_text() == PROMPTS[0] + "\n"
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "complete" and meta["glidectl_version"]
    model = meta["models"]["base"]
    assert model["sha256"] == hashlib.sha256(tiny_base.read_bytes()).hexdigest()
    assert meta["settings"]["base_stage"] == {"sampler": "euler", "steps": 2, "guidance": 3.0,
                                              "schedule": "karras"}
    assert [r["seed"] for r in meta["images"]] == [image_seed(3, i, 0) for i in range(5)]
    assert meta["timings"]["base_s"] > 0 and meta["timings"]["total_s"] > 0
    # euler, 2 steps: 2 calls a batch (cond and uncond rows share one); 5 prompts in 3 batches
    assert meta["model_calls"] == {"per_batch": {"base": 2}, "this_session": {"base": 6}}
    assert meta["sessions"][-1]["model_calls"] == {"base": 6}
    with Image.open(out / "000_a-red-circle-on-a-white-background.png") as im:
        assert im.size == (32, 32) and im.text["seed"] == str(image_seed(3, 0, 0))
    # ceil-sqrt grid: 5 images → 3 columns × 2 rows, the sixth cell empty; each 32 px image
    # enlarged to 128 px with its caption under it, 4 px apart
    with Image.open(out / "grid.png") as grid:
        cell_h = (grid.height - 4) // 2
        assert grid.width == 3 * 128 + 2 * 4 and grid.height == 2 * cell_h + 4
        assert cell_h > 128
        last = Image.open(out / f"{image_stems(PROMPTS, 4, 1)[0]}.png").convert("RGB")
        cell = grid.crop((132, cell_h + 4, 132 + 128, cell_h + 4 + 128))
        assert cell.tobytes() == last.resize((128, 128), Image.Resampling.NEAREST).tobytes()
        caption = grid.crop((132, cell_h + 4 + 128, 132 + 128, 2 * cell_h + 4)).convert("L")
        assert caption.getextrema()[0] < 128  # its caption is printed (dark text on white)
        assert grid.crop((2 * 132, cell_h + 4, 3 * 132 - 4, 2 * cell_h + 4)).convert(
            "L").getextrema() == (255, 255)  # the sixth cell stays white
    kinds = [k for k, _ in events if k != "note"]
    assert kinds[0] == "start" and kinds.count("images") == 5 and "step" in kinds
    assert any("CLIP" in info["text"] for k, info in events if k == "note")
    # demo metric: every prompt names a colour and a shape → a value per image, never a fake 0
    pf = meta["metrics"]["prompt_following"]
    assert pf["count"] == 5 and 0.0 <= pf["mean"] <= 1.0
    clip = meta["metrics"]["clip_score"]
    assert "absent" in clip and "mean" not in clip and "CLIP" in clip["absent"]


def test_metrics_that_do_not_apply_are_absent_not_zero(tmp_path, tiny_base, stack):
    prompts = write_prompts(tmp_path / "p.txt", ["an oil painting of a corgi", "hello",
                                                 "a red car parked in the rain"])
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST, batch_size=2)
    report = run_eval(prompts, settings, RunOptions(out=tmp_path / "o", device="cpu"),
                      pipeline=stack)
    metrics = report.metadata["metrics"]
    assert set(metrics["prompt_following"]) == {"absent"}  # a photo prompt's "red" too
    assert "no prompt names a demo colour or shape" in metrics["prompt_following"]["absent"]
    assert all(r["metrics"] == {} for r in report.metadata["images"])


def test_seeds_make_images_independent_of_batch_size(tmp_path, tiny_base, stack):
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:3])
    runs = []
    for bs in (1, 4):
        s = EvalSettings(base=str(tiny_base), base_stage=FAST, n=2, batch_size=bs, seed=11)
        runs.append(run_eval(prompts, s, RunOptions(out=tmp_path / f"b{bs}", device="cpu"),
                             pipeline=stack).out)
    import numpy as np

    for name in outputs(runs[0]):
        if name.endswith(".png"):
            a = np.asarray(Image.open(runs[0] / name), dtype=np.int16)
            b = np.asarray(Image.open(runs[1] / name), dtype=np.int16)
            assert np.abs(a - b).max() <= 1, name  # same noise; float sums may differ by 1 ulp


def test_rerank_keeps_the_best_candidates_by_clip_score(tmp_path, tiny_base, stack, monkeypatch):
    import numpy as np

    from glidectl import evaluation

    class Brightness:
        """Stands in for CLIP: brighter is better."""

        def score(self, images, texts):
            return [float(np.asarray(im).mean()) for im in images]

    monkeypatch.setattr(evaluation, "_load_clip", lambda *a: (Brightness(), None))
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST, n=2, rerank=4, batch_size=3)
    meta = run_eval(prompts, s, RunOptions(out=tmp_path / "r", device="cpu"),
                    pipeline=stack).metadata
    plain = run_eval(prompts, EvalSettings(base=str(tiny_base), base_stage=FAST, n=4,
                                           batch_size=3),
                     RunOptions(out=tmp_path / "all", device="cpu"), pipeline=stack).metadata
    for i in range(2):
        scores = {r["candidate"]: np.asarray(Image.open(tmp_path / "all" / r["file"])).mean()
                  for r in plain["images"] if r["prompt_index"] == i}
        best = sorted(scores, key=lambda j: -scores[j])[:2]
        kept = [r["candidate"] for r in meta["images"] if r["prompt_index"] == i]
        assert kept == best
        assert [r["seed"] for r in meta["images"] if r["prompt_index"] == i] == [
            image_seed(0, i, j) for j in best]


def test_rerank_ranks_a_nan_clip_score_last_and_keeps_the_best():
    """A NaN score compares with nothing: sorted() left 1.0 before 2.0 beside one."""
    from glidectl.eval_metrics import rerank

    nan = float("nan")
    assert rerank([1.0, nan, 2.0], 1) == [2]
    assert rerank([nan, 1.0, 3.0, 2.0], 3) == [2, 3, 1]
    assert rerank([nan, nan], 1) == [0]


def test_rerank_without_clip_is_one_clear_error(tmp_path, tiny_base):
    pytest.importorskip("torch")
    prompts = write_prompts(tmp_path / "p.txt", ["a cat"])
    out = subprocess.run(
        [sys.executable, "-m", "glidectl", "eval", str(prompts), "--base", str(tiny_base),
         "--rerank", "2", "--out", str(tmp_path / "o"), "--clip-weights",
         str(tmp_path / "nope.pt")],
        capture_output=True, text=True, timeout=120, env={**_env(), "GLIDECTL_CLIP_WEIGHTS": ""},
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("Error: ") and len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


def test_a_dry_run_of_rerank_without_clip_is_refused_as_the_run_is(tmp_path, tiny_base,
                                                                  stack, monkeypatch):
    """--dry-run --rerank K without CLIP printed a plan ("best of K by CLIP") and exited 0,
    where the run itself refuses it."""
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip fails
    prompts = write_prompts(tmp_path / "p.txt", ["a cat"])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST, rerank=2)
    for dry in (False, True):
        with pytest.raises(GlidectlError, match="rerank needs CLIP, but CLIP metrics off: "
                                                "open_clip is not installed"):
            run_eval(prompts, s, RunOptions(out=tmp_path / "o", device="cpu", dry_run=dry),
                     pipeline=stack)
    plain = EvalSettings(base=str(tiny_base), base_stage=FAST)
    report = run_eval(prompts, plain, RunOptions(out=tmp_path / "o", device="cpu",
                                                 dry_run=True), pipeline=stack)
    assert report.dry_run and not (tmp_path / "o").exists()


def test_busy_output_folder_and_changed_settings_are_refused(tmp_path, tiny_base, stack):
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    run_eval(prompts, s, RunOptions(out=tmp_path / "o", device="cpu"), pipeline=stack)
    with pytest.raises(GlidectlError, match="already holds files"):
        run_eval(prompts, s, RunOptions(out=tmp_path / "o", device="cpu"), pipeline=stack)
    other = EvalSettings(base=str(tiny_base), base_stage=Stage("euler", 3, 3.0))
    with pytest.raises(GlidectlError,
                       match="resume=True: base_stage.steps=3 differs from 2, which made"):
        run_eval(prompts, other, RunOptions(out=tmp_path / "o", resume=True, device="cpu"),
                 pipeline=stack)


def test_a_running_record_is_a_killed_run_s_only_once_no_process_holds_the_folder(tmp_path):
    """metadata.json says "running" while an eval writes the folder and after one was
    killed; the folder's lock tells them apart (a dry run, which takes no lock, is not told
    that a run being written was killed)."""
    from glidectl.eval_outputs import killed_run

    out = tmp_path / "o"
    out.mkdir()
    (out / "metadata.json").write_text(json.dumps({"status": "running", "sessions": []}))
    holder = subprocess.Popen(  # the writing eval, as far as the lock goes: until stdin ends
        [sys.executable, "-c", "import sys; from glidectl.atomic import lock_file; "
         f"h = lock_file({str(out / '.lock')!r}, 'busy'); print('held', flush=True); "
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert killed_run(out) is None
        with pytest.raises(GlidectlError, match="already holds files; pass resume=True"):
            run_eval(write_prompts(tmp_path / "p.txt", PROMPTS[:1]),
                     EvalSettings(base="no.safetensors"), RunOptions(out=out, dry_run=True))
    finally:
        holder.communicate("", timeout=30)
    assert killed_run(out) == {"status": "running", "sessions": []}
    assert killed_run(out, held=True) is not None  # this process holds it: no one else writes
    (out / "metadata.json").write_text(json.dumps({"status": "interrupted", "sessions": []}))
    assert killed_run(out) is None


def test_skip_existing_keeps_images_only_under_the_settings_that_made_them(tmp_path, tiny_base,
                                                                           stack):
    """metadata.json describes every image in the folder: --skip-existing with other
    settings would record the new ones for the images it keeps."""
    out = tmp_path / "o"
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    run_eval(write_prompts(tmp_path / "p.txt", PROMPTS[:1]), s,
             RunOptions(out=out, device="cpu"), pipeline=stack)
    before = outputs(out), (out / "metadata.json").read_bytes()
    more = write_prompts(tmp_path / "more.txt", PROMPTS[:2])
    other = EvalSettings(base=str(tiny_base), base_stage=Stage("euler", 3, 3.0))
    with pytest.raises(GlidectlError) as info:
        run_eval(more, other, RunOptions(out=out, skip_existing=True, device="cpu"),
                 pipeline=stack)
    assert str(info.value).startswith(
        "skip_existing=True: base_stage.steps=3 differs from 2, which made ")
    assert str(info.value).endswith("; pass the same options or use another out for a new run.")
    assert (outputs(out), (out / "metadata.json").read_bytes()) == before
    report = run_eval(more, s, RunOptions(out=out, skip_existing=True, device="cpu"),
                      pipeline=stack)  # the same settings: the first prompt is kept
    assert report.metadata["counts"]["generated"] == 1 and len(outputs(out)) == 4
    # the session that made the kept image stays in the history (it was replaced)
    assert [x["generated"] for x in report.metadata["sessions"]] == [1, 1]
    # another --n names every image differently, so none is kept: the old ones would stay
    # beside the new, described by no metadata.json
    with pytest.raises(GlidectlError, match="skip_existing=True: n=2 differs from 1"):
        run_eval(more, EvalSettings(base=str(tiny_base), base_stage=FAST, n=2),
                 RunOptions(out=out, skip_existing=True, device="cpu"), pipeline=stack)
    assert len(outputs(out)) == 4
    # prompts that moved (one put first) or went: their images stayed beside the new ones,
    # listed nowhere; refused, the real run and the dry run, before anything is made
    before = outputs(out), (out / "metadata.json").read_bytes()
    for prompts, said in ([PROMPTS[2], *PROMPTS[:2]], f"prompt 1 of these is {PROMPTS[2]!r}"),\
                         ([PROMPTS[0]], "these 1 prompts have no prompt 2"):
        for dry in (False, True):
            with pytest.raises(GlidectlError) as info:
                run_eval(write_prompts(tmp_path / "moved.txt", prompts), s,
                         RunOptions(out=out, skip_existing=True, dry_run=dry, device="cpu"),
                         pipeline=stack)
            assert str(info.value).startswith(f"skip_existing=True: {str(out)!r} holds '00"), \
                str(info.value)
            assert f"of its earlier prompts, but {said}, so it would stay" in str(info.value)
        assert (outputs(out), (out / "metadata.json").read_bytes()) == before


def test_skip_existing_refuses_an_edited_prompt_whose_images_have_the_same_name(
        tmp_path, tiny_base, stack):
    """Names keep only a-z and 0-9 of a prompt, cut at 48: an edited prompt of the same name
    (any change to a Chinese prompt, or past the 48th character) kept the earlier prompt's
    image as its own, in metadata.json, the grid and the scores."""
    out = tmp_path / "o"
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    run_eval(write_prompts(tmp_path / "p.txt", [PROMPTS[0], "红色圆形"]), s,
             RunOptions(out=out, device="cpu"), pipeline=stack)
    before = outputs(out), (out / "metadata.json").read_bytes()
    for edited in ("蓝色方形", "红色圆形!"):
        with pytest.raises(GlidectlError) as info:
            run_eval(write_prompts(tmp_path / "q.txt", [PROMPTS[0], edited]), s,
                     RunOptions(out=out, skip_existing=True, device="cpu"), pipeline=stack)
        assert str(info.value).startswith(
            f"skip_existing=True: {str(out)!r} holds '001_prompt.png' of the earlier prompt "
            f"'红色圆形', but prompt 2 is now {edited!r} (its file would have that name)")
        assert (outputs(out), (out / "metadata.json").read_bytes()) == before
    report = run_eval(write_prompts(tmp_path / "r.txt", [PROMPTS[0], "红色圆形", "绿色"]), s,
                      RunOptions(out=out, skip_existing=True, device="cpu"), pipeline=stack)
    assert report.metadata["counts"]["generated"] == 1  # the same two kept, the third made


def test_a_continued_eval_runs_as_its_images_were_made_or_is_refused(tmp_path, tiny_base,
                                                                      stack):
    """--skip-existing / --resume with --compile over images made without it (or on another
    device type) was taken, and metadata.json then said one for all: a remake of an earlier
    image came out a level off."""
    out = tmp_path / "o"
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    run_eval(write_prompts(tmp_path / "p.txt", PROMPTS[:1]), s,
             RunOptions(out=out, device="cpu"), pipeline=stack)
    before = outputs(out), (out / "metadata.json").read_bytes()
    for resume in (False, True):
        with pytest.raises(GlidectlError, match=r"was made on cpu, but this run would run on "
                                                r"cpu with compile=True; kernels and so pixels"):
            run_eval(write_prompts(tmp_path / "q.txt", PROMPTS[:1 + (not resume)]), s,
                     RunOptions(out=out, skip_existing=not resume, resume=resume,
                                device="cpu", compile=True), pipeline=stack)
    assert (outputs(out), (out / "metadata.json").read_bytes()) == before


def test_an_alias_of_the_sampler_or_schedule_that_made_the_images_is_the_same_setting(
        tmp_path, tiny_base, stack):
    """A run made with --sampler dpm++ refused `--resume --sampler dpmpp_2m` ("would change
    the images") and `--skip-existing --sampler dpm++2m`: aliases of one sampler (or
    schedule) were compared as different settings."""
    from glidectl.evaluation import settings_for

    out, prompts = tmp_path / "o", write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    made = run_eval(prompts, EvalSettings(base=str(tiny_base),
                                          base_stage=Stage("dpm++", 2, 3.0, "LogSNR")),
                    RunOptions(out=out, device="cpu"), pipeline=stack)
    assert made.metadata["settings"]["base_stage"] == {
        "sampler": "dpm++2m", "steps": 2, "guidance": 3.0, "schedule": "exponential"}
    flags = {"base_stage.sampler": "dpmpp_2m", "base_stage.schedule": "logsnr"}
    resumed, _ = settings_for(prompts, flags, RunOptions(out=out, resume=True), "fp32")
    assert resumed.base_stage == Stage("dpm++2m", 2, 3.0, "exponential")
    more = write_prompts(tmp_path / "q.txt", PROMPTS[:2])
    report = run_eval(more, EvalSettings(base=str(tiny_base), base_stage=Stage("DPM++2M", 2, 3.0)),
                      RunOptions(out=out, device="cpu", skip_existing=True), pipeline=stack)
    assert report.metadata["counts"] == {"prompts": 2, "images": 2, "generated": 1, "kept": 1}


def test_a_long_prompt_cut_by_the_model_is_done_on_resume_and_skip_existing(
        tmp_path, tiny_base, stack):
    """A prompt's caption file holds what the model read of it: a long prompt's never
    equalled the prompt, so --skip-existing refused the unchanged prompts file and --resume
    made its image again."""
    long = "a red circle on a white background " + " ".join(f"word{i}" for i in range(60))
    prompts = write_prompts(tmp_path / "p.txt", [long, PROMPTS[1]])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    out = tmp_path / "o"
    run_eval(prompts, s, RunOptions(out=out, device="cpu"), pipeline=stack)
    before = outputs(out)
    for again in (dict(resume=True), dict(skip_existing=True)):
        report = run_eval(prompts, s, RunOptions(out=out, device="cpu", **again),
                          pipeline=stack)
        assert report.metadata["counts"]["generated"] == 0, again
    assert outputs(out) == before


def test_skip_existing_without_metadata_keeps_only_images_made_with_its_settings(
        tmp_path, tiny_base, stack):
    """Without a metadata.json, --skip-existing kept images made with any settings and then
    recorded its own for them (euler, 3 steps, seed 5 recorded as dpm++2m, 8 steps, seed
    0); each PNG records what made it."""
    out = tmp_path / "o"
    made = EvalSettings(base=str(tiny_base), base_stage=FAST, seed=5)
    run_eval(write_prompts(tmp_path / "p.txt", PROMPTS[:1]), made,
             RunOptions(out=out, device="cpu"), pipeline=stack)
    (out / "metadata.json").unlink()
    more = write_prompts(tmp_path / "more.txt", PROMPTS[:2])
    for other, said in ((EvalSettings(base=str(tiny_base), base_stage=Stage("euler", 3, 3.0),
                                      seed=5), "base_stage "),
                        (EvalSettings(base=str(tiny_base), base_stage=FAST), "another seed "
                                                                             "than 0")):
        with pytest.raises(GlidectlError, match=rf"has no metadata.json, and '000_a-red-circle"
                                                rf"-on-a-white-background.png' was made with "
                                                rf"{said}"):
            run_eval(more, other, RunOptions(out=out, skip_existing=True, device="cpu"),
                     pipeline=stack)
    report = run_eval(more, made, RunOptions(out=out, skip_existing=True, device="cpu"),
                      pipeline=stack)
    assert report.metadata["counts"]["generated"] == 1


def test_skip_existing_refuses_a_folder_of_someone_elses_files(tmp_path, tiny_base, stack,
                                                               capsys):
    """A folder without metadata.json that holds files no eval writes is no eval's output:
    --skip-existing refuses it, as plain eval refuses a folder that holds files (its images
    would land among them)."""
    from test_sample_cmd import in_process

    out, prompts = tmp_path / "photos", write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    out.mkdir()
    (out / "000_holiday.png").write_bytes(b"mine")
    (out / "notes.txt").write_text("mine")
    before = outputs(out)
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    with pytest.raises(GlidectlError) as info:
        run_eval(prompts, s, RunOptions(out=out, skip_existing=True, device="cpu"),
                 pipeline=stack)
    assert str(info.value) == (
        f"skip_existing=True: out={str(out)!r} holds files no eval writes ('notes.txt') and "
        "no metadata.json, so it is no eval's output; pass an eval's folder, or an empty or "
        "new out.")
    res = in_process(capsys, "eval", prompts, "--base", tiny_base, "--upsampler", "none",
                     "--device", "cpu", "--out", out, "--skip-existing")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert f"--skip-existing: --out {str(out)!r} holds files no eval writes" in res.stderr
    # a plain eval offered --resume and --skip-existing, which refuse the folder in turn
    res = in_process(capsys, "eval", prompts, "--base", tiny_base, "--upsampler", "none",
                     "--device", "cpu", "--out", out)
    assert res.returncode == 2 and res.stderr == (
        f"Error: --out {str(out)!r} holds files no eval writes ('notes.txt') and no "
        "metadata.json, so it is no eval's output; pass an empty or new --out.\n")
    assert outputs(out) == before and sorted(p.name for p in out.iterdir()) == [
        "000_holiday.png", "notes.txt"]


def test_a_folder_with_another_programs_metadata_json_is_no_evals(tmp_path, tiny_base, stack):
    """A metadata.json another program wrote (a JSON object with no eval's settings or
    status) passed for an eval's: --skip-existing wrote its images among the folder's files
    and replaced that file, and --resume said the prompts differ."""
    out, prompts = tmp_path / "dataset", write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    out.mkdir()
    (out / "metadata.json").write_text('{"name": "my dataset", "splits": ["train"]}')
    (out / "data.csv").write_text("a,b\n")
    before = outputs(out)
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    for flag, said in (("skip_existing", r"holds files no eval writes \('data.csv', "
                                         r"'metadata.json'\) and no eval's metadata.json"),
                       ("resume", r"is no eval's metadata.json \(it records no eval's settings "
                                  r"or status\)")):
        with pytest.raises(GlidectlError, match=said):
            run_eval(prompts, s, RunOptions(out=out, device="cpu", **{flag: True}),
                     pipeline=stack)
    assert outputs(out) == before


def test_resuming_a_run_whose_plugin_sampler_is_gone_names_it_not_a_typo(
        tmp_path, tiny_base, stack, register_plugin):
    """--resume of a run on a plugin's sampler after the plugin went said "Unknown sampler
    'mine'. Did you mean ...?", as for a typo in a flag no one passed."""
    from glidectl import plugins
    from glidectl.hookspecs import hookimpl
    from glidectl.samplers import sample_euler

    class Mine:
        @hookimpl
        def register_samplers(self, register):
            register("mine", sample_euler)

    register_plugin(Mine(), "mine-plugin")
    out, prompts = tmp_path / "o", write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    s = EvalSettings(base=str(tiny_base), base_stage=Stage("mine", 2, 3.0))
    run_eval(prompts, s, RunOptions(out=out, device="cpu"), pipeline=stack)
    plugins.unregister_plugin("mine-plugin")
    with pytest.raises(GlidectlError) as info:
        run_eval(prompts, s, RunOptions(out=out, resume=True, device="cpu"), pipeline=stack)
    assert str(info.value).startswith(  # said as keywords: the CLI says --resume
        f"resume=True: the run in {str(out)!r} was made with the sampler 'mine', which no "
        "loaded plugin registers (not installed, or left out by GLIDECTL_LOAD_PLUGINS); "
        "install it to continue the run, or ")


def test_a_dry_run_refuses_what_the_run_would_refuse(tmp_path, tiny_base, stack):
    """--dry-run with --skip-existing or --resume checks the folder's run as the real run
    does, instead of planning to keep images the run would refuse to keep."""
    out = tmp_path / "o"
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    run_eval(write_prompts(tmp_path / "p.txt", PROMPTS[:1]), s,
             RunOptions(out=out, device="cpu"), pipeline=stack)
    more = write_prompts(tmp_path / "more.txt", PROMPTS[:2])
    other = EvalSettings(base=str(tiny_base), base_stage=Stage("euler", 3, 3.0))
    plan = RunOptions(out=out, skip_existing=True, dry_run=True, device="cpu")
    with pytest.raises(GlidectlError,
                       match="skip_existing=True: base_stage.steps=3 differs from 2"):
        run_eval(more, other, plan, pipeline=stack)
    report = run_eval(more, s, plan, pipeline=stack)
    assert report.metadata["plan"]["prompts_done"] == 1
    with pytest.raises(GlidectlError, match="resume=True: the prompts differ"):
        run_eval(more, s, RunOptions(out=out, resume=True, dry_run=True, device="cpu"),
                 pipeline=stack)


def test_a_damaged_image_is_made_again_and_damaged_metadata_is_one_line(tmp_path, tiny_base,
                                                                      stack):
    """A truncated PNG in --out is not a finished image: --skip-existing / --resume remake
    it (the same bytes); a metadata.json that is not what eval writes is one line."""
    out, prompts = tmp_path / "o", write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    run_eval(prompts, s, RunOptions(out=out, device="cpu"), pipeline=stack)
    before = outputs(out)
    damaged = sorted(out.glob("001_*.png"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    report = run_eval(prompts, s, RunOptions(out=out, resume=True, device="cpu"),
                      pipeline=stack)
    assert report.metadata["counts"]["generated"] == 1 and outputs(out) == before
    for text in (b"\xff\xfe", b"[]", b'{"settings": "x"}', b'{"models": {"base": 1}}',
                 b'{"plugins": 5}', b'{"plugins": [1]}', b'{"settings": {"loras": 5}}',
                 b'{"models": {"base": {"loras": 5}}}', b'{"paths": []}'):
        (out / "metadata.json").write_bytes(text)
        with pytest.raises(GlidectlError, match="is not a metadata.json glidectl wrote"):
            run_eval(prompts, s, RunOptions(out=out, skip_existing=True, device="cpu"),
                     pipeline=stack)


@pytest.mark.parametrize("change, said", [
    ({"n": "two"}, "n must be a whole number, got 'two' (str)"),
    ({"batch_size": 0}, "batch_size must be at least 1 (got 0)"),
    ({"loras": 5}, "'int' object is not iterable")])
def test_recorded_settings_glidectl_cannot_take_name_the_metadata_json(tmp_path, change,
                                                                      said):
    """--resume with a metadata.json edited by hand blamed a flag never given (``--n must be
    a whole number``), or was a TypeError traceback; the file and its keys are named, also
    under the CLI (flags_named)."""
    from glidectl.errors import flags_named
    from glidectl.eval_settings import resolve_settings

    recorded = {**EvalSettings(base="tiny.safetensors").fingerprint(), **change}
    with pytest.raises(GlidectlError) as info, flags_named():
        resolve_settings({}, None, recorded=recorded, out=tmp_path / "o")
    assert str(info.value) == (
        f"{str(tmp_path / 'o' / 'metadata.json')!r} records settings glidectl cannot take "
        f"({said}), so it is not a metadata.json glidectl wrote (damaged or edited); delete "
        "it or pick another --out.")


def test_a_recommended_sampler_no_plugin_registers_is_said_so_not_unknown(monkeypatch):
    """eval of a run that previewed with a plugin's sampler, that plugin gone or left out,
    said "Unknown sampler 'he'. Did you mean 'heun'?" for a --sampler nobody passed (sample
    said what happened); a --sampler given leaves the recommendation unused."""
    from glidectl import plugins
    from glidectl.eval_settings import resolve_settings

    plugins.load_plugins()  # it sets left_out
    monkeypatch.setattr(plugins, "left_out", ["hunt"])
    rec = {"sampler": "he", "steps": 2, "guidance": 3.0}
    with pytest.raises(GlidectlError) as info:
        resolve_settings({}, "fp32", recommended=rec)
    assert str(info.value) == (
        "The base model recommends the sampler 'he' (it previewed with it in training), which "
        "no loaded plugin registers; load the plugin that provides it (GLIDECTL_LOAD_PLUGINS "
        "leaves out the installed hunt) or install it, or pass --sampler NAME.")
    settings, _ = resolve_settings({"base_stage.sampler": "euler"}, "fp32", recommended=rec)
    assert (settings.base_stage.sampler, settings.base_stage.steps) == ("euler", 2)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, tiny_base):
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS)
    out = subprocess.run(
        [sys.executable, "-m", "glidectl", "eval", str(prompts), "--base", str(tiny_base),
         "--n", "2", "--batch-size", "4", "--sampler", "heun", "--steps", "3", "--dry-run",
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, env={**_env(), "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "tiny-base.safetensors" in text and "10 (2 per prompt)" in text
    assert "3 of 3 to run" in text
    assert "base model calls" in text and " 15 " in text  # heun: 2·3−1 calls × 3 batches
    assert "estimated time" in text
    assert not (tmp_path / "o").exists()


def test_dry_run_says_the_schedule_file_warnings_the_run_would(tmp_path, tiny_base):
    """--dry-run on a schedule file fitted for another sampler and guidance, by a fit that
    stopped before the count asked for, planned in silence; the run warned of all three."""
    from glidectl.samplers import get_sigmas
    from glidectl.samplers.tuned import write_schedule_file

    schedule = tmp_path / "stopped.json"
    write_schedule_file(schedule, {4: get_sigmas("exponential", 4, 0.01, 80.0)}, 0.01, 80.0,
                        "test", sampler="unipc", guidance=3.0, not_fitted=[7])
    settings = EvalSettings(base=str(tiny_base), base_stage=Stage("euler", 7, 2.0,
                                                                  str(schedule)))
    notes: list[str] = []
    run_eval(write_prompts(tmp_path / "p.txt", PROMPTS[:1]), settings,
             RunOptions(out=tmp_path / "o", dry_run=True, device="cpu"),
             on_event=lambda kind, **info: notes.append(info.get("text", "")))
    said = [n for n in notes if n.startswith(f"Warning: Schedule file {str(schedule)!r}")]
    assert [w in said[i] for i, w in enumerate(
        ("tuned for the unipc sampler, not euler", "fitted at guidance 3, and these images "
         "sample at 2", "holds no σ's for 7 steps"))] == [True] * 3 and len(said) == 3, notes
    assert not (tmp_path / "o").exists()


def test_grid_labels_number_each_image_as_its_file(tmp_path, tiny_base, stack, monkeypatch):
    from glidectl import evaluation

    seen: list[list[str]] = []
    real = evaluation.grid
    monkeypatch.setattr(evaluation, "grid", lambda im, labels, n: seen.append(labels) or real(
        im, labels, n))
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST, n=2, batch_size=2)
    run_eval(write_prompts(tmp_path / "p.txt", PROMPTS[:2]), settings,
             RunOptions(out=tmp_path / "o", device="cpu"), pipeline=stack)
    assert [label.split(" ", 1)[0] for label in seen[0]] == ["000_1", "000_2", "001_1", "001_2"]


def test_grid_max_shows_the_first_prompts_and_says_which(tmp_path, tiny_base, stack):
    """A grid of every image is unusable at 10,000 images: grid.png shows the first prompts'
    images, at most --grid-max (whole prompts, at least one), and metadata.json's
    grid_holds and the summary say which; the metrics still cover every image."""
    import io

    from rich.console import Console

    from glidectl.cli.eval_cmd import _print_summary
    from glidectl.eval_outputs import grid_prompts

    assert [grid_prompts(6, 1, 4), grid_prompts(3, 2, 5), grid_prompts(3, 2, 1),
            grid_prompts(5, 1, 256)] == [4, 2, 1, 5]
    prompts = write_prompts(tmp_path / "p.txt", [*PROMPTS, "a red square on a black background"])
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST, batch_size=3)
    report = run_eval(prompts, settings, RunOptions(out=tmp_path / "o", device="cpu",
                                                    grid_max=4), pipeline=stack)
    meta, out = report.metadata, report.out
    assert meta["grid_holds"] == {"first_prompts": 4, "images": 4, "of_images": 6}
    assert meta["metrics"]["prompt_following"]["count"] == 6 and len(meta["images"]) == 6
    with Image.open(out / "grid.png") as grid:  # 4 images: 2 × 2 cells of 128 px
        assert json.loads(grid.text["glidectl"])["prompts"] == PROMPTS[:4]
        cell_h = (grid.height - 4) // 2
        assert grid.width == 2 * 128 + 4 and grid.height == 2 * cell_h + 4
        fourth = Image.open(out / meta["images"][3]["file"]).convert("RGB")
        assert grid.crop((132, cell_h + 4, 260, cell_h + 132)).tobytes() == fourth.resize(
            (128, 128), Image.Resampling.NEAREST).tobytes()
    shown = io.StringIO()
    _print_summary(Console(file=shown, width=250), meta, out)
    assert (f"{out / 'grid.png'} (the first 4 prompts: 4 of 6 images; --grid-max changes it)"
            in shown.getvalue())
    with pytest.raises(GlidectlError, match=r"^grid_max must be from 1 to 1000000; got 0\.$"):
        RunOptions(grid_max=0)


def test_a_resume_keeps_the_grid_max_the_run_recorded(tmp_path, tiny_base, stack):
    """--grid-max is recorded from the first session on; a resume without it keeps the
    run's, and one with another value says so and records that."""
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS)
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST, batch_size=5)
    out = tmp_path / "o"
    first = run_eval(prompts, settings, RunOptions(out=out, device="cpu", grid_max=2),
                     pipeline=stack).metadata
    assert first["grid_max"] == 2 and first["grid_holds"]["first_prompts"] == 2
    (out / first["images"][-1]["file"]).unlink()  # a prompt left to do
    resumed = run_eval(prompts, settings, RunOptions(out=out, device="cpu", resume=True),
                       pipeline=stack).metadata
    assert resumed["counts"]["generated"] == 1
    assert resumed["grid_max"] == 2 and resumed["grid_holds"] == first["grid_holds"]
    notes: list[str] = []
    again = run_eval(prompts, settings, RunOptions(out=out, device="cpu", resume=True,
                                                   grid_max=3), pipeline=stack,
                     on_event=lambda kind, **info: notes.append(info.get("text", "")))
    assert again.metadata["grid_max"] == 3
    assert again.metadata["grid_holds"]["first_prompts"] == 3
    assert ("--resume: grid.png shows at most 3 images (--grid-max), not the 2 the run "
            "recorded.") in notes


def test_dry_run_stage_lines_read_as_words():
    from glidectl.cli.eval_cmd import _stage_text

    assert _stage_text({"sampler": "ddpm", "steps": "fast27", "guidance": None}) == (
        "ddpm, fast27, no guidance")
    assert _stage_text({"sampler": "unipc", "steps": 15, "guidance": 2.0,
                        "schedule": "exponential"}) == (
        "unipc, 15 steps on exponential σ's, guidance 2.0")


def test_dry_run_of_a_local_model_with_a_timestep_cut_off_times_one_call(tmp_path):
    """A trained run's model keeps only the slow timestep features (time_embed_max_freq);
    counting its FLOPs on fake tensors must not hand a fake feature mask to the timed call."""
    import torch
    from tiny_configs import fill_zero_layers

    from glidectl.glide import create_model, preset_options, save_weights

    torch.manual_seed(0)
    path = tmp_path / "cut-off.safetensors"
    opts = preset_options("base", "tiny").replace(image_size=32, time_embed_max_freq=0.01)
    save_weights(fill_zero_layers(create_model(opts)), path)
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    out = subprocess.run(
        [sys.executable, "-m", "glidectl", "eval", str(prompts), "--base", str(path),
         "--batch-size", "2", "--sampler", "euler", "--steps", "2", "--dry-run",
         "--device", "cpu", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, env={**_env(), "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    text = out.stdout
    assert "cut-off.safetensors" in text and "on disk" in text
    assert "base model calls" in text and "TFLOP" in text
    assert "estimated time" in text and "one timed call per stage" in text
    assert not (tmp_path / "o").exists()


def test_the_kept_feature_mask_serves_fake_and_real_passes_in_either_order():
    import torch

    from glidectl.glide import create_model, preset_options
    from glidectl.model_cost import model_cost

    def real_forward(opts):
        with torch.no_grad():
            return create_model(opts)(torch.zeros(2, 3, 32, 32), torch.zeros(2),
                                      torch.zeros(2, 64, dtype=torch.long),
                                      torch.ones(2, 64, dtype=torch.bool))

    tiny = preset_options("base", "tiny").replace(image_size=32)
    fake_first = tiny.replace(time_embed_max_freq=0.0123)  # cut-offs no other test caches
    assert model_cost(fake_first, batch=2, guided=False)["flops_per_call"] > 0
    assert torch.isfinite(real_forward(fake_first)).all()

    real_first = tiny.replace(time_embed_max_freq=0.0234)
    assert torch.isfinite(real_forward(real_first)).all()
    assert model_cost(real_first, batch=2, guided=False)["flops_per_call"] > 0


def test_a_wandb_mode_wandb_has_not_is_refused_before_any_image(tmp_path, tiny_base, stack):
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    with pytest.raises(GlidectlError) as info:
        run_eval(prompts, s, RunOptions(out=tmp_path / "w", device="cpu", wandb_project="t",
                                        wandb_mode="ofline"), pipeline=stack)
    assert str(info.value) == ("wandb_mode='ofline' is not a W&B mode; use auto, online, "
                               "offline, disabled.")
    assert not (tmp_path / "w").exists()  # it failed at the end, after every image
    with pytest.raises(GlidectlError, match="is not a W&B mode"):  # with no project too
        run_eval(prompts, s, RunOptions(out=tmp_path / "w", device="cpu", wandb_mode="ofline"),
                 pipeline=stack)
    assert not (tmp_path / "w").exists()
    # a project name W&B refuses failed after every image, with advice to go offline
    with pytest.raises(GlidectlError) as info:
        run_eval(prompts, s, RunOptions(out=tmp_path / "w", device="cpu", wandb_project="a/b",
                                        wandb_mode="offline"), pipeline=stack)
    assert str(info.value) == (
        "wandb_project='a/b' holds '/', which W&B does not take in a project's name (/ \\ # ? "
        "% :); name it without (wandb_entity sets the team or user).")
    assert not (tmp_path / "w").exists()


def test_an_online_wandb_run_without_a_key_is_refused_before_any_image(tmp_path, tiny_base,
                                                                        stack, monkeypatch):
    """No W&B login was found only after every image was made and scored (hours with FID);
    metadata.json then said "failed", without the metrics it had just measured."""
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc of the machine's
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    with pytest.raises(GlidectlError, match=r"logs to W&B's servers, but no W&B API key is set "
                                            r"up here; run `wandb login`"):
        run_eval(prompts, s, RunOptions(out=tmp_path / "w", device="cpu", wandb_mode="online",
                                        wandb_project="glidectl-test"), pipeline=stack)
    assert not (tmp_path / "w").exists()


def test_eval_takes_the_wandb_modes_training_takes():
    """`eval --wandb-mode` and `log.wandb_mode` are one list: eval refused `auto`, training's
    default (W&B's own WANDB_MODE or `wandb offline` decides)."""
    from dataclasses import fields

    from typer.testing import CliRunner

    from glidectl.cli.app import build_app
    from glidectl.config import WANDB_MODES, LogConfig
    from glidectl.eval_outputs import check_wandb

    pytest.importorskip("wandb")
    train = next(f for f in fields(LogConfig) if f.name == "wandb_mode")
    assert train.metadata["choices"] == WANDB_MODES == ("auto", "online", "offline", "disabled")
    assert RunOptions().wandb_mode == train.default == "auto"
    for mode in WANDB_MODES:
        check_wandb(mode)
    shown = CliRunner().invoke(build_app(), ["eval", "--help"], env={"COLUMNS": "250"}).output
    assert "auto/online/offline/disabled; auto: WANDB_MODE" in shown


def test_wandb_offline_logs_a_table(tmp_path, tiny_base, stack, monkeypatch):
    """The table's images are the run's PNG files (W&B copies them; eval never holds every
    image), in tables of at most wandb.Table.MAX_ROWS rows: W&B cut a longer one to that."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # its staged files
    monkeypatch.setattr(wandb.Table, "MAX_ROWS", 2)  # as 10,000 would, without 10,001 images
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:3])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST, batch_size=3)
    report = run_eval(prompts, s, RunOptions(out=tmp_path / "w", device="cpu",
                                             wandb_project="glidectl-test"), pipeline=stack)
    assert report.metadata["wandb_run_id"]
    assert report.notes[-1].endswith("; its images in the tables eval/images (2), "
                                     "eval/images_2 (1).")
    tables = sorted((tmp_path / "w" / "wandb").rglob("*.table.json"))
    assert [t.name.split("_0_")[0] for t in tables] == ["images", "images_2"]
    rows = [row for t in tables for row in json.loads(t.read_text())["data"]]
    assert json.loads(tables[0].read_text())["columns"][:2] == ["prompt", "image"]
    assert [row[0] for row in rows] == PROMPTS[:3]
    staged = [json.loads(p.read_text()) for p in (tmp_path / "wandb-data").rglob("*")
              if p.is_file() and p.read_bytes().startswith(b'{"_type": "table"')]
    cells = {row[1]["sha256"] for table in staged for row in table["data"]}
    assert cells == {hashlib.sha256((tmp_path / "w" / rec["file"]).read_bytes()).hexdigest()
                     for rec in report.metadata["images"]}  # the files, not re-encoded


def test_an_offline_wandb_run_that_cannot_start_is_not_told_to_log_in(tmp_path, tiny_base,
                                                                       stack, monkeypatch):
    """An offline W&B run that failed to start (its folder read-only) was told to run `wandb
    login` and pass --wandb-mode offline, which it already was."""
    wandb = pytest.importorskip("wandb")

    def read_only(**kwargs):
        raise OSError(30, "Read-only file system", f"{kwargs['dir']}/wandb/offline-run-x")

    monkeypatch.setattr(wandb, "init", read_only)
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST, batch_size=1)
    with pytest.raises(GlidectlError) as info:
        run_eval(prompts, s, RunOptions(out=tmp_path / "w", device="cpu", wandb_mode="offline",
                                        wandb_project="glidectl-test"), pipeline=stack)
    assert str(info.value) == (
        f"Could not start a W&B run in project 'glidectl-test': [Errno 30] Read-only file "
        f"system: '{tmp_path / 'w'}/wandb/offline-run-x'; check wandb_entity and that out can "
        "be written, or drop wandb_project.")


def test_wandb_mode_disabled_logs_nothing_and_says_so(tmp_path, tiny_base, stack):
    """It said "W&B run … logged to project" and recorded a run id for a run W&B never had."""
    pytest.importorskip("wandb")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST, batch_size=1)
    report = run_eval(prompts, s, RunOptions(out=tmp_path / "w", device="cpu",
                                             wandb_project="glidectl-test",
                                             wandb_mode="disabled"), pipeline=stack)
    assert "wandb_run_id" not in report.metadata and not (tmp_path / "w" / "wandb").exists()
    assert report.notes[-1] == ("Nothing logged to W&B project 'glidectl-test': --wandb-mode "
                                "disabled.")


# --------------------------------------------------------------------------- killed and resumed
CLI_ARGS = ["--n", "2", "--batch-size", "3", "--sampler", "euler", "--steps", "3",
            "--seed", "7"]


def _cli(prompts: Path, base: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "glidectl", "eval", str(prompts), "--base", str(base),
            "--out", str(out), "--device", "cpu", *CLI_ARGS, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _kill_after_first_images(cmd: list[str], out: Path) -> None:
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            pngs = [p for p in out.glob("*.png") if not p.name.startswith(".")] \
                if out.is_dir() else []
            if len(pngs) >= 2:  # the first prompt's two images are there
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


@pytest.fixture
def reference(tmp_path_factory, tiny_base, capsys) -> tuple[Path, Path]:
    """An uninterrupted run of 7 prompts × 2 images in batches of 3 (in this process at one
    thread, as the killed run's subprocess)."""
    from test_sample_cmd import in_process

    root = tmp_path_factory.mktemp("eval-ref")
    prompts = write_prompts(root / "p.txt", PROMPTS + ["a cyan circle", "a red square"])
    done = in_process(capsys, *_cli(prompts, tiny_base, root / "ref", "--grid-max", "6")[3:])
    assert done.returncode == 0, done.stderr
    # euler, 3 steps: 3 calls a batch; 14 images in 5 batches of 3
    assert "base model calls" in done.stdout and "15 (3 a batch of 3)" in done.stdout, done.stdout
    return prompts, root / "ref"


def test_killed_run_continues_to_the_same_bytes(capsys, tmp_path, tiny_base, reference):
    """One run killed after its first images, continued by --resume and (from a copy of the
    killed folder) by --skip-existing: both end with the uninterrupted run's bytes and
    metrics (scored from images two sessions made), and the same grid of the first 3. A
    plain eval into the killed folder is told it was killed, and to --resume it."""
    from test_sample_cmd import in_process

    prompts, ref = reference
    ref_meta = json.loads((ref / "metadata.json").read_text())
    assert ref_meta["grid_holds"] == {"first_prompts": 3, "images": 6, "of_images": 14}
    assert ref_meta["metrics"]["prompt_following"]["count"] == 10  # "a cyan circle": none
    killed = tmp_path / "killed"
    _kill_after_first_images(_cli(prompts, tiny_base, killed), killed)
    partial = outputs(killed)
    assert 0 < sum(n.endswith(".png") for n in partial) < 14
    assert json.loads((killed / "metadata.json").read_text())["status"] == "running"
    # "running", but no eval holds the folder: the next eval says the run was killed
    plain = in_process(capsys, *_cli(prompts, tiny_base, killed)[3:])
    assert plain.returncode == 2 and plain.stderr.endswith(
        f"Error: --out {str(killed)!r} holds an eval that stopped without recording "
        "(killed?); continue it with --resume, keep its finished prompts with "
        "--skip-existing, or pass another --out.\n"), plain.stderr
    assert outputs(killed) == partial
    for flag in ("--resume", "--skip-existing"):
        out = tmp_path / flag.strip("-")
        shutil.copytree(killed, out)
        # a new session, in this process at one thread as the subprocesses (their start-up
        # is the CLI tests'): only the killed run needs a process of its own
        done = in_process(capsys, *_cli(prompts, tiny_base, out, flag, "--grid-max", "6")[3:])
        assert done.returncode == 0, (flag, done.stderr)
        final, expected = outputs(out), outputs(ref)
        assert sorted(final) == sorted(expected), flag
        assert all(final[name] == expected[name] for name in expected), f"images differ ({flag})"
        assert (out / "grid.png").read_bytes() == (ref / "grid.png").read_bytes(), flag
        meta = json.loads((out / "metadata.json").read_text())
        assert meta["status"] == "complete", flag
        assert meta["metrics"] == ref_meta["metrics"], flag
        assert [r["metrics"] for r in meta["images"]] == [r["metrics"] for r in
                                                          ref_meta["images"]], flag
        assert meta["grid_holds"] == ref_meta["grid_holds"], flag
        assert meta["counts"]["kept"] > 0 and meta["counts"]["generated"] < 14, flag
        assert not list(out.glob(".*.tmp")), flag
    with Image.open(ref / "grid.png") as grid:  # 3 prompts × 2 images: a row per prompt
        cell_h = (grid.height - 2 * 4) // 3
        assert grid.width == 2 * 128 + 4 and grid.height == 3 * cell_h + 2 * 4


# --------------------------------------------------------------------------- LoRA, upsampler
def make_adapter(base_file: Path, directory: Path, seed: int = 3) -> Path:
    """A LoRA adapter with random (non-zero) weights for the model in ``base_file``."""
    import torch

    from glidectl.config import LoraConfig
    from glidectl.glide import load_model
    from glidectl.lora import inject_lora, save_adapter, weights_sha256

    model = load_model(base_file)
    sha = weights_sha256(model)
    cfg = LoraConfig(targets=["all"], rank=4, alpha=8.0)
    names = inject_lora(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return save_adapter(model, directory, cfg=cfg, target_names=names,
                        base_spec=str(base_file), base_sha256=sha)


def test_lora_is_merged_into_the_network_and_recorded(tmp_path, tiny_base):
    import torch

    from glidectl.pipeline import GlidePipeline

    adapter = make_adapter(tiny_base, tmp_path / "adapter")
    plain = GlidePipeline.from_specs(str(tiny_base), device="cpu")
    tuned = GlidePipeline.from_specs(str(tiny_base), device="cpu", loras=[f"{adapter}:0.5"])
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([500.0])
    tokens, mask = torch.zeros(1, 64, dtype=torch.long), torch.ones(1, 64, dtype=torch.bool)
    with torch.no_grad():
        diff = (plain.base(x, t, tokens, mask) - tuned.base(x, t, tokens, mask))
    assert diff.abs().max() > 1e-4
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    report = run_eval(prompts, EvalSettings(base=str(tiny_base), base_stage=FAST,
                                            loras=(f"{adapter}:0.5",)),
                      RunOptions(out=tmp_path / "tuned", device="cpu"))
    (lora,) = report.metadata["models"]["base"]["loras"]
    assert lora["scale"] == 0.5 and lora["modules"] > 0
    weights = adapter / "adapter_model.safetensors"
    assert lora["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert report.metadata["settings"]["loras"] == [f"{adapter}:0.5"]


def test_a_lora_without_base_evaluates_on_the_base_the_adapter_records(tmp_path, capsys):
    """`eval --lora RUN` without --base loaded openai:base (a download, or OpenAI's weights
    missing) where `sample --lora RUN` loads the base the adapter was trained on."""
    from test_lora import lora_config
    from test_sample_cmd import in_process

    from glidectl.evaluation import settings_for
    from glidectl.lora import train_lora

    train_lora(lora_config(tmp_path, train=dict(steps=1)), quiet=True)  # a scratch base
    run, base = tmp_path / "runs" / "lora", tmp_path / "runs" / "lora" / "base.safetensors"
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    fast = ["--sampler", "euler", "--steps", "2", "--device", "cpu", "--precision", "fp32"]
    res = in_process(capsys, "eval", prompts, "--lora", run, *fast, "--out", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    assert f"Base: {base} (recorded by --lora {run}; --base chooses another)." in res.stdout
    meta = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert meta["settings"]["base"] == str(base) and meta["settings"]["upsampler"] is None
    other = shutil.copy(base, tmp_path / "other.safetensors")  # --base given: that one
    res = in_process(capsys, "eval", prompts, "--lora", run, "--base", other, *fast,
                     "--out", tmp_path / "given")
    assert res.returncode == 0 and "recorded by" not in res.stdout, res.stderr
    meta = json.loads((tmp_path / "given" / "metadata.json").read_text())
    assert meta["settings"]["base"] == str(other)
    # the library's settings_for chooses the same way; --resume keeps the run's record
    options = RunOptions(out=tmp_path / "lib", device="cpu")
    settings, notes = settings_for(prompts, {"loras": [f"{run}:0.5"]}, options, "fp32")
    assert settings.base == str(base) and f"recorded by --lora {run};" in notes[-1]
    settings, notes = settings_for(prompts, {"loras": [str(run)]},
                                   RunOptions(out=tmp_path / "given", resume=True), None)
    assert settings.base == str(other) and not any("recorded by" in n for n in notes)


def test_eval_draws_a_greyscale_trained_lora_grey_as_sample_does(tmp_path, tiny_base, capsys):
    """An adapter recording grey (its LoRA run trained on greyscale data) was drawn grey by
    `sample --lora` but in colour by `eval --lora`, whose settings came from the base's
    recommendation only; --no-grey still draws colour."""
    import numpy as np
    from test_sample_cmd import in_process

    adapter = make_adapter(tiny_base, tmp_path / "adapter")
    meta = json.loads((adapter / "glidectl.json").read_text())
    (adapter / "glidectl.json").write_text(json.dumps({**meta, "grey": True}))
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    fast = ["--base", tiny_base, "--lora", adapter, "--sampler", "euler", "--steps", "2",
            "--device", "cpu", "--precision", "fp32"]
    for flags, grey in (([], True), (["--no-grey"], False)):
        out = tmp_path / f"grey-{grey}"
        res = in_process(capsys, "eval", prompts, *fast, *flags, "--out", out)
        assert res.returncode == 0, res.stderr
        assert json.loads((out / "metadata.json").read_text())["settings"]["grey"] is grey
        assert ("recommended sampling settings (grey)" in res.stdout) is grey
        rgb = np.asarray(Image.open(next(out.glob("000_*.png"))).convert("RGB")).astype(int)
        assert bool((rgb.max(axis=2) - rgb.min(axis=2)).max() == 0) is grey


def test_resume_refuses_a_lora_file_changed_under_the_same_path(tmp_path, tiny_base):
    """Only the models' own weights were compared: a retrained adapter at the same path
    resumed and mixed two adapters' images in one folder."""
    import shutil

    adapter = make_adapter(tiny_base, tmp_path / "adapter")
    shutil.copytree(adapter, tmp_path / "kept")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST, loras=(f"{adapter}:0.5",))
    run_eval(prompts, settings, RunOptions(out=tmp_path / "o", device="cpu"))
    next((tmp_path / "o").glob("000_*.png")).unlink()
    shutil.rmtree(adapter)
    make_adapter(tiny_base, adapter, seed=9)  # retrained: other weights, same path
    with pytest.raises(GlidectlError, match="a LoRA adapter of the base model changed"):
        run_eval(prompts, settings, RunOptions(out=tmp_path / "o", resume=True, device="cpu"))
    # the same weights with other settings (lora_alpha) make other pictures too
    shutil.rmtree(adapter)
    shutil.copytree(tmp_path / "kept", adapter)
    run_eval(prompts, settings, RunOptions(out=tmp_path / "o", resume=True, device="cpu"))
    next((tmp_path / "o").glob("000_*.png")).unlink()
    config = adapter / "adapter_config.json"
    raw = json.loads(config.read_text())
    config.write_text(json.dumps({**raw, "lora_alpha": raw["lora_alpha"] * 3}))
    with pytest.raises(GlidectlError, match=r"changed since .* \(the sha256 of its weights or "
                                            r"settings differs\)"):
        run_eval(prompts, settings, RunOptions(out=tmp_path / "o", resume=True, device="cpu"))


def test_resume_of_a_run_folder_that_trained_on_continues_with_the_file_that_made_it(
        tmp_path, tiny_base):
    """--resume of images of a training run folder after its latest step moved on: the run
    folder was refused (weights changed) and so was the step's own file (another --base);
    the recorded file, still there unchanged, finishes the images as the first session would
    have, with a note, and metadata.json keeps the spec. Gone, it is refused as before."""
    import shutil

    import torch
    from tiny_configs import fill_zero_layers

    from glidectl.evaluation import settings_for
    from glidectl.glide import create_model, preset_options, save_weights

    run = tmp_path / "run"
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    shutil.copy(tiny_base, run / "checkpoints" / "step-000001" / "ema.safetensors")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:3])
    settings = EvalSettings(base=str(run), base_stage=FAST)
    run_eval(prompts, settings, RunOptions(out=tmp_path / "o", device="cpu"))
    whole = outputs(tmp_path / "o")
    next((tmp_path / "o").glob("002_*.png")).unlink()
    torch.manual_seed(5)  # the run trains on: a later step with other weights
    (run / "checkpoints" / "step-000002").mkdir()
    save_weights(fill_zero_layers(create_model(preset_options("base", "tiny").replace(
        image_size=32))), run / "checkpoints" / "step-000002" / "ema.safetensors")
    events = []
    options = RunOptions(out=tmp_path / "o", resume=True, device="cpu")
    again, notes = settings_for(prompts, {}, options)
    run_eval(prompts, again, RunOptions(out=tmp_path / "o", resume=True, device="cpu",
                                        dry_run=True))  # its plan is not refused either
    run_eval(prompts, again, options, notes=notes,
             on_event=lambda kind, **info: events.append(info.get("text")))
    assert outputs(tmp_path / "o") == whole
    first = run / "checkpoints" / "step-000001" / "ema.safetensors"
    assert f"--resume: {str(run)!r} names other weights now; continuing with " \
           f"{str(first)!r}, which made the images." in events
    models = json.loads((tmp_path / "o" / "metadata.json").read_text())["models"]["base"]
    assert (models["spec"], models["path"]) == (str(run), str(first))
    next((tmp_path / "o").glob("002_*.png")).unlink()
    shutil.rmtree(run / "checkpoints" / "step-000001")  # pruned: nothing made them is left
    with pytest.raises(GlidectlError, match="the base model's weights changed since"):
        run_eval(prompts, again, options)


def test_resume_of_images_of_a_training_run_moved_elsewhere_takes_its_new_path(
        tmp_path, tiny_base):
    """Images made from a training run folder that was then moved (another disk, renamed):
    --resume said "Model ... not found" and refused --base at its new path ("would change
    the images"), so the eval could not be finished. It names the recorded path now, takes
    --base where the run is, with the same weights (sha256), and records that path; other
    weights there are still refused."""
    import torch

    from glidectl.evaluation import settings_for
    from glidectl.glide import load_model, save_weights

    run = tmp_path / "run"
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    shutil.copy(tiny_base, run / "checkpoints" / "step-000001" / "ema.safetensors")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:3])
    run_eval(prompts, EvalSettings(base=str(run), base_stage=FAST),
             RunOptions(out=tmp_path / "o", device="cpu"))
    whole = outputs(tmp_path / "o")
    next((tmp_path / "o").glob("002_*.png")).unlink()
    moved = run.rename(tmp_path / "moved")
    options = RunOptions(out=tmp_path / "o", resume=True, device="cpu")
    with pytest.raises(GlidectlError, match=rf"^resume=True: the model {str(run)!r} \(base\) "
                       r"that made the images in .* is not there \(moved or deleted\); pass "
                       r"its new path to base \(the same weights\)"):
        settings_for(prompts, {}, options)
    again, _ = settings_for(prompts, {"base": str(moved)}, options)
    report = run_eval(prompts, again, options)
    assert report.metadata["counts"]["generated"] == 1 and outputs(tmp_path / "o") == whole
    assert report.metadata["paths"]["base"] == str(moved)
    next((tmp_path / "o").glob("002_*.png")).unlink()
    assert settings_for(prompts, {}, options)[0].where("base") == str(moved)
    other = tmp_path / "other" / "checkpoints" / "step-000001"
    other.mkdir(parents=True)
    model = load_model(tiny_base)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_weights(model, other / "ema.safetensors")
    shutil.rmtree(moved)  # gone too: another run's weights at a new path are refused
    again, _ = settings_for(prompts, {"base": str(tmp_path / "other")}, options)
    with pytest.raises(GlidectlError, match="the base model's weights changed since"):
        run_eval(prompts, again, options)


def test_resume_of_a_lora_run_that_trained_on_continues_with_the_step_that_made_it(
        tmp_path, tiny_base):
    """--resume with --lora RUN after the LoRA run wrote a later step: "a LoRA adapter
    changed" though the step that made the images was there; it goes on with that step."""
    import shutil

    step = tmp_path / "lrun" / "checkpoints" / "step-000001" / "lora-ema"
    make_adapter(tiny_base, step)
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:3])
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST,
                            loras=(f"{tmp_path / 'lrun'}:0.5",))
    run_eval(prompts, settings, RunOptions(out=tmp_path / "o", device="cpu"))
    whole = outputs(tmp_path / "o")
    next((tmp_path / "o").glob("002_*.png")).unlink()
    make_adapter(tiny_base, tmp_path / "lrun" / "checkpoints" / "step-000002" / "lora-ema",
                 seed=9)  # the LoRA run trains on
    events = []
    run_eval(prompts, settings, RunOptions(out=tmp_path / "o", resume=True, device="cpu"),
             on_event=lambda kind, **info: events.append(info.get("text")))
    assert outputs(tmp_path / "o") == whole
    assert f"--resume: LoRA {str(tmp_path / 'lrun')!r} holds another adapter now; continuing " \
           f"with {str(step)!r}, which made the images." in events
    loras = json.loads((tmp_path / "o" / "metadata.json").read_text())["models"]["base"]["loras"]
    assert [(x["path"], x["dir"]) for x in loras] == [(str(tmp_path / "lrun"), str(step))]
    next((tmp_path / "o").glob("002_*.png")).unlink()
    shutil.rmtree(step.parent)  # pruned: what made them is gone
    with pytest.raises(GlidectlError, match="a LoRA adapter of the base model changed"):
        run_eval(prompts, settings, RunOptions(out=tmp_path / "o", resume=True, device="cpu"))


def test_resume_refuses_images_made_by_other_plugin_code(tmp_path, tiny_base):
    """metadata.json records the plugins whose sampler or schedule made the images (null for
    glidectl's own); --resume with other plugin code would mix two samplers' pictures."""
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST)
    run_eval(prompts, settings, RunOptions(out=tmp_path / "o", device="cpu"))
    meta_file = tmp_path / "o" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    assert meta["plugins"] is None  # FAST's sampler and schedule are glidectl's own
    next((tmp_path / "o").glob("000_*.png")).unlink()
    meta_file.write_text(json.dumps({**meta, "plugins": ["glidectl-fancy 1.0"]}))
    with pytest.raises(GlidectlError, match=r"was made with glidectl-fancy 1\.0, but this run "
                       "would use glidectl's own samplers and schedules, so resume=True would mix "
                       "their images"):
        run_eval(prompts, settings, RunOptions(out=tmp_path / "o", resume=True, device="cpu"))
    del meta["plugins"]  # a run from before plugins were recorded resumes as before
    meta_file.write_text(json.dumps(meta))
    run_eval(prompts, settings, RunOptions(out=tmp_path / "o", resume=True, device="cpu"))


def tiny_pair(directory: Path) -> tuple[Path, Path]:
    """A 16 px tiny base and a 16 → 64 px tiny upsampler with random weights."""
    import torch

    from glidectl.glide import create_model, preset_options, save_weights

    torch.manual_seed(0)
    base = save_weights(create_model(preset_options("base", "tiny").replace(image_size=16)),
                        directory / "b16.safetensors")
    up = save_weights(create_model(preset_options("upsample", "tiny").replace(
        image_size=64, channel_mult="1,2,2")), directory / "u64.safetensors")
    return base, up


def test_resume_finds_relative_paths_from_any_working_directory(tmp_path, tiny_base,
                                                                 monkeypatch):
    import shutil

    import torch

    from glidectl.evaluation import settings_for
    from glidectl.samplers.tuned import write_schedule_file

    (tmp_path / "models").mkdir()
    shutil.copy(tiny_base, tmp_path / "models" / "b.safetensors")
    make_adapter(tiny_base, tmp_path / "adapter")
    write_schedule_file(tmp_path / "fit.json", {2: torch.tensor([80.0, 1.0, 0.0])}, 0.002,
                        80.0, "test", sampler="unipc")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    monkeypatch.chdir(tmp_path)
    flags = {"base": "models/b.safetensors", "base_stage.schedule": "fit.json",
             "base_stage.sampler": "unipc", "base_stage.steps": 2, "loras": ["adapter:0.5"]}
    settings, _ = settings_for("p.txt", flags, RunOptions(out=Path("o"), device="cpu"), "fp32")
    report = run_eval("p.txt", settings, RunOptions(out=Path("o"), device="cpu"))
    assert report.metadata["settings"]["base"] == "models/b.safetensors"  # as typed
    assert report.metadata["paths"] == {
        "base": str(tmp_path / "models" / "b.safetensors"),
        "base_stage.schedule": str(tmp_path / "fit.json"),
        "loras": [f"{tmp_path / 'adapter'}:0.5"]}
    made = outputs(tmp_path / "o")
    (first,) = (tmp_path / "o").glob("000_*.png")
    first.unlink()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    resumed = RunOptions(out=tmp_path / "o", resume=True, device="cpu")
    again, _ = settings_for(prompts, {}, resumed)
    assert again == settings
    report = run_eval(prompts, again, resumed)
    assert report.metadata["counts"]["generated"] == 1 and outputs(tmp_path / "o") == made
    same = {"base": "../models/b.safetensors", "base_stage.schedule": str(tmp_path / "fit.json"),
            "loras": [f"{tmp_path / 'adapter'}:0.5"]}  # the same files, spelled otherwise
    assert settings_for(prompts, same, resumed)[0] == settings
    with pytest.raises(GlidectlError, match="base='.*' would change the images"):
        settings_for(prompts, {"base": str(tiny_base)}, resumed)
    meta_file = tmp_path / "o" / "metadata.json"  # a run from before paths were recorded
    meta = json.loads(meta_file.read_text())
    del meta["paths"]
    meta_file.write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)
    old, _ = settings_for(prompts, {}, resumed)
    assert run_eval(prompts, old, resumed).metadata["counts"]["generated"] == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    skip = RunOptions(out=tmp_path / "o", skip_existing=True, device="cpu")
    moved, _ = settings_for(prompts, {**flags, **same}, skip, "fp32")
    assert run_eval(prompts, moved, skip).metadata["counts"]["generated"] == 0
    other, _ = settings_for(prompts, {**flags, **same, "base": str(tiny_base)}, skip, "fp32")
    with pytest.raises(GlidectlError, match="skip_existing=True: base='.*' differs"):
        run_eval(prompts, other, skip)


def test_a_run_from_before_paths_were_recorded_resumes_from_another_directory(
        tmp_path, tiny_base, monkeypatch):
    """Folders written before metadata.json kept ``paths`` name their files relative to the
    folder eval was started in; the recorded relative ``out`` tells which folder that was."""
    import shutil

    import torch

    from glidectl.evaluation import settings_for
    from glidectl.samplers.tuned import write_schedule_file

    (tmp_path / "models").mkdir()
    shutil.copy(tiny_base, tmp_path / "models" / "b.safetensors")
    make_adapter(tiny_base, tmp_path / "adapter")
    write_schedule_file(tmp_path / "fit.json", {2: torch.tensor([80.0, 1.0, 0.0])}, 0.002,
                        80.0, "test", sampler="unipc")
    write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    monkeypatch.chdir(tmp_path)
    flags = {"base": "models/b.safetensors", "base_stage.schedule": "fit.json",
             "base_stage.sampler": "unipc", "base_stage.steps": 2, "loras": ["adapter:0.5"]}
    first = RunOptions(out=Path("evals/o"), device="cpu")
    settings, _ = settings_for("p.txt", flags, first, "fp32")
    run_eval("p.txt", settings, first)
    made = outputs(tmp_path / "evals" / "o")
    meta_file = tmp_path / "evals" / "o" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    del meta["paths"]  # as glidectl wrote it then: the specs as typed, out as typed
    assert meta["out"] == "evals/o" and meta["settings"]["base"] == "models/b.safetensors"
    meta_file.write_text(json.dumps(meta))
    next((tmp_path / "evals" / "o").glob("001_*.png")).unlink()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    resumed = RunOptions(out=tmp_path / "evals" / "o", resume=True, device="cpu")
    again, _ = settings_for(tmp_path / "p.txt", {}, resumed)
    report = run_eval(tmp_path / "p.txt", again, resumed)
    assert report.metadata["counts"]["generated"] == 1 and outputs(tmp_path / "evals" / "o") == made
    assert report.metadata["paths"]["base"] == str(tmp_path / "models" / "b.safetensors")


def test_base_and_upsampler_stages(tmp_path, tiny_base):
    base, up = tiny_pair(tmp_path)
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    s = EvalSettings(base=str(base), upsampler=str(up), base_stage=FAST,
                     upsample_stage=Stage("euler", 2, None), batch_size=2)
    stages: set[str] = set()
    report = run_eval(prompts, s, RunOptions(out=tmp_path / "o", device="cpu"),
                      on_event=lambda kind, **i: stages.add(i["stage"]) if kind == "stage"
                      else None)
    assert stages == {"base", "upsample"}
    meta = report.metadata
    assert set(meta["models"]) == {"base", "upsample"}
    assert meta["models"]["upsample"]["image_size"] == 64
    assert meta["timings"]["base_s"] > 0 and meta["timings"]["upsample_s"] > 0
    with Image.open(report.out / meta["images"][0]["file"]) as im:
        assert im.size == (64, 64)
    with pytest.raises(GlidectlError, match="takes 16 px input but the base model"):
        run_eval(prompts, EvalSettings(base=str(tiny_base), upsampler=str(up)),
                 RunOptions(out=tmp_path / "bad", device="cpu"))
    with pytest.raises(GlidectlError, match="The base model '.*' is an 'upsample' model"):
        run_eval(prompts, EvalSettings(base=str(up)),
                 RunOptions(out=tmp_path / "bad", device="cpu"))


def test_compile_flag_compiles_the_networks(tiny_base, monkeypatch):
    import torch

    from glidectl.pipeline import GlidePipeline

    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, *a, **k: compiled.append(self.options.kind))
    GlidePipeline.from_specs(str(tiny_base), device="cpu", compile=True)
    assert compiled == ["base"]
    GlidePipeline.from_specs(str(tiny_base), device="cpu")
    assert compiled == ["base"]


# --------------------------------------------------------------------------- CLIP wiring
def fake_open_clip():
    """A stand-in for the optional open_clip package: a deterministic tiny 'CLIP' whose image
    embedding is the mean colour and whose text embedding is fixed, read from a weights file."""
    import types

    import numpy as np
    import torch

    class TinyClip(torch.nn.Module):
        def __init__(self, text_direction: torch.Tensor):
            super().__init__()
            self.register_buffer("direction", text_direction)

        def encode_image(self, pixels):
            return pixels.mean(dim=(2, 3)) + 1e-3

        def encode_text(self, tokens):
            return self.direction.expand(tokens.shape[0], 3)

    def create_model_and_transforms(name, pretrained=None, device="cpu"):
        state = torch.load(pretrained, weights_only=True)
        model = TinyClip(state["direction"])

        def preprocess(image):
            arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
            return torch.from_numpy(arr).permute(2, 0, 1)

        return model, None, preprocess

    def get_tokenizer(name):
        return lambda texts: torch.zeros(len(texts), 4, dtype=torch.long)

    return types.SimpleNamespace(create_model_and_transforms=create_model_and_transforms,
                                 get_tokenizer=get_tokenizer)


def test_clip_score_and_rerank_with_local_weights(tmp_path, tiny_base, stack, monkeypatch):
    import numpy as np
    import torch

    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip())
    weights = tmp_path / "clip.pt"
    torch.save({"direction": torch.tensor([1.0, 0.0, 0.0])}, weights)  # "likes red"
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST, n=1, rerank=3, batch_size=3)
    report = run_eval(prompts, s, RunOptions(out=tmp_path / "c", device="cpu",
                                             clip_weights=str(weights)), pipeline=stack)
    clip = report.metadata["metrics"]["clip_score"]
    assert clip["count"] == 2 and "absent" not in clip
    for rec in report.metadata["images"]:
        rgb = np.asarray(Image.open(report.out / rec["file"]), dtype=np.float64).mean((0, 1))
        rgb = rgb / 255.0 + 1e-3
        assert rec["metrics"]["clip_score"] == pytest.approx(100 * rgb[0] / np.linalg.norm(rgb),
                                                             rel=1e-4)
    all3 = run_eval(prompts, EvalSettings(base=str(tiny_base), base_stage=FAST, n=3,
                                          batch_size=3),
                    RunOptions(out=tmp_path / "all", device="cpu"), pipeline=stack).metadata
    for i in range(2):
        redness = {}
        for rec in all3["images"]:
            if rec["prompt_index"] == i:
                rgb = np.asarray(Image.open(tmp_path / "all" / rec["file"]), float).mean((0, 1))
                rgb = rgb / 255.0 + 1e-3
                redness[rec["candidate"]] = rgb[0] / np.linalg.norm(rgb)
        kept = [r["candidate"] for r in report.metadata["images"] if r["prompt_index"] == i]
        assert kept == [max(redness, key=redness.get)]


def test_missing_clip_weights_file_is_a_user_error(tmp_path, tiny_base, stack, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip())
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    with pytest.raises(GlidectlError, match="CLIP weights file .* does not exist"):
        run_eval(prompts, EvalSettings(base=str(tiny_base), base_stage=FAST),
                 RunOptions(out=tmp_path / "x", device="cpu",
                            clip_weights=str(tmp_path / "nope.pt")), pipeline=stack)
    monkeypatch.delenv("GLIDECTL_CLIP_WEIGHTS", raising=False)
    report = run_eval(prompts, EvalSettings(base=str(tiny_base), base_stage=FAST),
                      RunOptions(out=tmp_path / "y", device="cpu"), pipeline=stack)
    assert "no local CLIP weights" in report.metadata["metrics"]["clip_score"]["absent"]


def test_default_folder_is_numbered_and_resume_picks_the_latest(tmp_path, tiny_base, stack):
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    s = EvalSettings(base=str(tiny_base), base_stage=FAST)
    first = run_eval(prompts, s, RunOptions(eval_root=tmp_path / "eval", device="cpu"),
                     pipeline=stack)
    second = run_eval(prompts, s, RunOptions(eval_root=tmp_path / "eval", device="cpu"),
                      pipeline=stack)
    assert (first.out.name, second.out.name) == ("0001", "0002")
    again = run_eval(prompts, s, RunOptions(eval_root=tmp_path / "eval", resume=True,
                                            device="cpu"), pipeline=stack)
    assert again.out == second.out and again.metadata["counts"]["generated"] == 0
    assert len(again.metadata["sessions"]) == 2


# --------------------------------------------------------------------------- offline plans, resume
@pytest.mark.parametrize("given, warning", [
    ({"fid_weights": "inception.pth"},
     "Warning: --fid-weights not used: there is no --fid reference to score against."),
    ({"wandb_entity": "me", "wandb_mode": "offline"},
     "Warning: --wandb-entity, --wandb-mode not used: nothing is logged to W&B without "
     "--wandb-project."),
])
def test_options_that_need_another_are_warned_of_without_it(tmp_path, monkeypatch, given,
                                                            warning):
    # --fid-weights without --fid, --wandb-entity/--wandb-mode without --wandb-project did
    # nothing without a word
    from glidectl.eval_upsampler_inputs import upsampler_settings
    from glidectl.evaluation import settings_for

    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "empty-cache"))
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    options = RunOptions(out=tmp_path / "o", dry_run=True, device="cpu", **given)
    _, notes = settings_for(prompts, {"base": "openai:base", "upsampler": "none"}, options,
                            "fp32")
    assert warning in notes
    _, notes = upsampler_settings({"upsampler": "openai:upsample"}, options, "fp32")
    assert warning in notes
    needed = {"fid_weights": {"fid_reference": "ref"}, "wandb_entity": {"wandb_project": "p"}}
    with_it = RunOptions(out=tmp_path / "o", dry_run=True, device="cpu", **given,
                         **needed[next(iter(given))])
    _, notes = settings_for(prompts, {"base": "openai:base", "upsampler": "none"}, with_it,
                            "fp32")
    assert not [n for n in notes if "not used" in n]


def test_dry_run_plans_openai_models_offline_without_downloading(tmp_path, monkeypatch):
    from glidectl.evaluation import settings_for

    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("GLIDECTL_OPENAI_URL", "http://127.0.0.1:9/unreachable")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:3])
    options = RunOptions(out=tmp_path / "o", dry_run=True, device="cpu")
    settings, _ = settings_for(prompts, {"base": "openai:base"}, options, "fp32")
    assert settings.upsampler == "openai:upsample"  # the same default as `sample`
    assert settings.upsample_stage == Stage("ddpm", "fast27", None, "respaced")
    settings, _ = settings_for(prompts, {"base": "openai:base", "upsample_stage.sampler": "euler",
                                         "upsample_stage.schedule": "respaced"}, options, "fp32")
    assert settings.upsample_stage == Stage("euler", "fast27", None, "respaced")
    settings, notes = settings_for(prompts, {"base": "openai:base", "upsampler": "none",
                                             "upsample_stage.steps": 50}, options,
                                   "fp32")  # one official network keeps this test short
    assert "Warning: --upsample-steps not used: this run has no upsampler." in notes
    report = run_eval(prompts, settings, options)
    models, plan = report.metadata["models"], report.metadata["plan"]
    assert models["base"]["local"] is False and models["base"]["image_size"] == 64
    assert 380e6 < models["base"]["parameters"] < 390e6  # GLIDE's 385 M base
    assert plan["model_calls"] == {"base": 25}  # dpm++2m, 25 steps
    assert plan["flops"]["base"] > 0 and plan["estimated_s"] is None
    assert "not on disk" in plan["estimate_basis"]
    assert not (tmp_path / "empty-cache").exists() and not (tmp_path / "o").exists()


def test_flops_counted_without_weights_match_a_real_forward():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from glidectl.glide import create_model, preset_options
    from glidectl.model_cost import model_cost

    opts = preset_options("base", "tiny").replace(image_size=32)
    cost = model_cost(opts, batch=2, guided=True)
    model = create_model(opts)
    assert cost["parameters"] == sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(4, 3, 32, 32), torch.zeros(4), torch.zeros(4, 64, dtype=torch.long),
              torch.ones(4, 64, dtype=torch.bool))
    assert cost["flops_per_call"] == counter.get_total_flops() > 0


def test_resume_reuses_the_recorded_settings_and_refuses_changes(tmp_path, tiny_base, stack):
    from glidectl.evaluation import settings_for

    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    first = {"base": str(tiny_base), "base_stage.sampler": "euler", "base_stage.steps": 2,
             "seed": 3, "n": 1}
    settings, _ = settings_for(prompts, first, RunOptions(out=tmp_path / "o", device="cpu"),
                               "fp32")
    run_eval(prompts, settings, RunOptions(out=tmp_path / "o", device="cpu"), pipeline=stack)
    options = RunOptions(out=tmp_path / "o", resume=True, device="cpu")
    again, notes = settings_for(prompts, {}, options)  # no flags: the recorded settings
    assert again == settings and "recorded" in notes[-1]
    same, _ = settings_for(prompts, {"seed": 3, "base_stage.steps": 2}, options, "fp32")
    assert same == settings  # repeating a recorded value is fine
    assert settings.upsampler is None  # --upsampler none or auto repeats it
    for upsampler in ("none", "auto"):
        assert settings_for(prompts, {"upsampler": upsampler}, options)[0] == settings
    with pytest.raises(GlidectlError, match=r"upsampler='openai:upsample' would change"):
        settings_for(prompts, {"upsampler": "openai:upsample"}, options)
    with pytest.raises(GlidectlError, match=r"resume=True: base_stage.steps=5 would change the "
                                            r"images .* recorded with 2; drop base_stage.steps"):
        settings_for(prompts, {"base_stage.steps": 5}, options)
    with pytest.raises(GlidectlError, match="seed=4 would change"):
        settings_for(prompts, {"seed": 4}, options)
    with pytest.raises(GlidectlError, match=r"precision='bf16' would change the images .* "
                                            r"recorded with fp32; drop precision"):
        settings_for(prompts, {}, options, "bf16")  # was ignored: the run went on in fp32


def test_a_run_records_its_schedule_and_older_runs_resume_with_theirs(tmp_path, tiny_base,
                                                                       stack):
    from glidectl.evaluation import settings_for

    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    options = RunOptions(out=tmp_path / "o", device="cpu")
    flags = {"base": str(tiny_base), "base_stage.sampler": "dpm++2m", "base_stage.steps": 2}
    settings, _ = settings_for(prompts, flags, options, "fp32")
    assert settings.base_stage.schedule == "exponential"  # dpm++2m's own, by name
    assert settings.upsample_stage.schedule == "respaced"
    assert settings.stage_options()["base"].schedule == "exponential"
    run_eval(prompts, settings, options, pipeline=stack)
    meta_file = tmp_path / "o" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    assert meta["settings"]["base_stage"]["schedule"] == "exponential"
    # a run recorded before schedules were: dpm++2m then sampled on karras σ's
    for stage in ("base_stage", "upsample_stage"):
        del meta["settings"][stage]["schedule"]
    meta_file.write_text(json.dumps(meta))
    resumed = RunOptions(out=tmp_path / "o", resume=True, device="cpu")
    again, _ = settings_for(prompts, {}, resumed)
    assert again.base_stage.schedule == "karras" and again.upsample_stage.schedule == "respaced"
    run_eval(prompts, again, resumed, pipeline=stack)  # the resume check accepts it


def test_a_schedule_file_is_used_and_a_changed_one_refuses_resume(tmp_path, tiny_base,
                                                                    stack):
    import torch

    from glidectl.evaluation import settings_for
    from glidectl.samplers.tuned import write_schedule_file

    path = tmp_path / "fit.json"
    write_schedule_file(path, {3: torch.tensor([80.0, 2.0, 0.1, 0.0])}, 0.002, 80.0, "test",
                        sampler="unipc")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    options = RunOptions(out=tmp_path / "o", device="cpu")
    flags = {"base": str(tiny_base), "base_stage.sampler": "unipc", "base_stage.steps": 3,
             "base_stage.schedule": str(path)}
    settings, _ = settings_for(prompts, flags, options, "fp32")
    assert settings.base_stage.schedule == str(path)
    run_eval(prompts, settings, options, pipeline=stack)
    meta = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert meta["schedule_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["prompts"] and meta["counts"]["images"] == 1
    resumed = RunOptions(out=tmp_path / "o", resume=True, device="cpu")
    with pytest.raises(GlidectlError, match="base_stage.schedule='karras' would change the images"):
        settings_for(prompts, {"base_stage.schedule": "karras"}, resumed)
    again, _ = settings_for(prompts, {}, resumed)
    run_eval(prompts, again, resumed, pipeline=stack)  # the same file: accepted
    write_schedule_file(path, {3: torch.tensor([80.0, 3.0, 0.2, 0.0])}, 0.002, 80.0, "refit",
                        sampler="unipc")
    with pytest.raises(GlidectlError,
                       match=r"the schedule file .*fit.json' \(base_stage.schedule\) "
                             r"changed since"):
        run_eval(prompts, again, resumed, pipeline=stack)
    fresh = RunOptions(out=tmp_path / "typo", device="cpu")
    typo, _ = settings_for(prompts, {**flags, "base_stage.schedule": "karas"}, fresh, "fp32")
    with pytest.raises(GlidectlError, match="Did you mean 'karras'"):
        run_eval(prompts, typo, fresh, pipeline=stack)
    assert not (tmp_path / "typo").exists()  # nothing written for a run that cannot start


def test_an_upsample_schedule_file_is_hashed_and_a_changed_one_refuses_resume(tmp_path):
    import torch

    from glidectl.samplers.tuned import write_schedule_file

    base, up = tiny_pair(tmp_path)
    path = tmp_path / "up-fit.json"
    write_schedule_file(path, {2: torch.tensor([80.0, 1.0, 0.0])}, 0.002, 80.0, "test",
                        sampler="unipc")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    settings = EvalSettings(base=str(base), upsampler=str(up), base_stage=FAST,
                            upsample_stage=Stage("unipc", 2, None, str(path)))
    report = run_eval(prompts, settings, RunOptions(out=tmp_path / "o", device="cpu"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.metadata["upsample_schedule_sha256"] == digest
    assert "schedule_sha256" not in report.metadata  # the base samples on a named schedule
    resumed = RunOptions(out=tmp_path / "o", resume=True, device="cpu")
    write_schedule_file(path, {2: torch.tensor([80.0, 2.0, 0.0])}, 0.002, 80.0, "refit",
                        sampler="unipc")
    with pytest.raises(GlidectlError, match=r"the schedule file .*up-fit.json' "
                                            r"\(upsample_stage.schedule\) changed since"):
        run_eval(prompts, settings, resumed)
    skip = RunOptions(out=tmp_path / "o", skip_existing=True, device="cpu")
    with pytest.raises(GlidectlError, match="skip_existing=True: the schedule file"):
        run_eval(prompts, settings, skip)
    meta_file = tmp_path / "o" / "metadata.json"  # a run from before the file was hashed
    meta = json.loads(meta_file.read_text())
    del meta["upsample_schedule_sha256"]
    meta_file.write_text(json.dumps(meta))
    assert run_eval(prompts, settings, resumed).metadata["upsample_schedule_sha256"] != digest


def test_a_models_recommended_sampling_is_the_default(tmp_path, tiny_base):
    from glidectl.evaluation import settings_for
    from glidectl.glide import load_model, save_weights
    from glidectl.pipeline import RECOMMENDED_KEY

    trained = save_weights(load_model(tiny_base), tmp_path / "trained.safetensors", metadata={
        RECOMMENDED_KEY: json.dumps({"sampler": "ddim", "steps": 7, "guidance": 4.0})})
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    options = RunOptions(out=tmp_path / "o", device="cpu")
    settings, notes = settings_for(prompts, {"base": str(trained)}, options, "fp32")
    assert settings.base_stage == Stage("ddim", 7, 4.0, "respaced")
    assert "recommended sampling settings (sampler ddim, steps 7, guidance 4.0)" in notes[-1]
    chosen, notes = settings_for(prompts, {"base": str(trained), "base_stage.steps": 3},
                                 options, "fp32")
    assert chosen.base_stage == Stage("ddim", 3, 4.0, "respaced") and "steps" not in notes[-1]
    plain, notes = settings_for(prompts, {"base": str(tiny_base)}, options, "fp32")
    assert plain.base_stage == Stage(schedule="exponential") and plain.upsampler is None
    assert not notes
    timed = save_weights(load_model(tiny_base), tmp_path / "timed.safetensors", metadata={
        RECOMMENDED_KEY: json.dumps({"sampler": "unipc", "steps": 9, "schedule": "karras"})})
    settings, notes = settings_for(prompts, {"base": str(timed)}, options, "fp32")
    assert settings.base_stage == Stage("unipc", 9, 3.0, "karras")  # as `sample` reads it
    assert "schedule karras" in notes[-1] and "--schedule" in notes[-1]


def test_an_unwritable_out_fails_before_any_model_loads(tmp_path, monkeypatch):
    from glidectl.glide import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "file").write_text("x")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    for out, message in ((tmp_path / "file", "is a file"),
                         (tmp_path / "file" / "sub", "is under"),
                         (tmp_path / "x.PNG", "names an image file, but out is the folder "
                          "a run's images are written to")):  # run_eval's keyword, not --out
        with pytest.raises(GlidectlError, match=message):
            run_eval(prompts, EvalSettings(base="openai:base"), RunOptions(out=out))
    assert not (tmp_path / "x.PNG").exists()


def test_a_run_that_cannot_start_says_only_why(tmp_path, tiny_base, capsys, monkeypatch):
    """A missing or damaged model, an upsampler as the base, a file as --out, a missing LoRA
    or --fid reference, an unknown W&B mode: one sentence, exit 2, and no line about the run
    before it (not its precision, not CLIP's absence)."""
    from test_sample_cmd import in_process

    from glidectl import evaluation

    monkeypatch.setattr(evaluation, "_load_clip", lambda *a: (None, "CLIP metrics off: test."))
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    (tmp_path / "bad.safetensors").write_text("not weights")
    (tmp_path / "file").write_text("x")
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 20)
    import torch

    torch.save({"w": torch.zeros(4096)}, tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:8192])
    cases = [(["--base", tmp_path / "nope.safetensors"], "not found"),
             (["--base", tmp_path / "bad.safetensors"], "Cannot read weights"),
             (["--base", tmp_path / "random.pt"], "Cannot read checkpoint"),
             (["--base", tmp_path / "cut.pt", "--dry-run"], "Cannot read checkpoint"),
             (["--base", "openai:upsample", "--dry-run"], "is an 'upsample' model"),
             (["--base", tiny_base, "--out", tmp_path / "file" / "o"], "a file; pass a folder"),
             (["--base", tiny_base, "--lora", tmp_path / "nope"], "does not exist"),
             (["--base", tiny_base, "--fid", tmp_path / "nope"], "--fid"),
             (["--base", tiny_base, "--wandb-project", "p", "--wandb-mode", "of"], "W&B mode"),
             # without a project too (it was taken in silence), and in a dry run
             (["--base", tiny_base, "--wandb-mode", "of", "--dry-run"], "W&B mode")]
    for args, reason in cases:
        res = in_process(capsys, "eval", prompts, "--device", "cpu", *args)
        assert res.returncode == 2 and res.stdout == "", (args, res.stdout)
        assert res.stderr.startswith("Error:") and res.stderr.count("\n") == 1, res.stderr
        assert reason in res.stderr, (args, res.stderr)
    seen: list[str] = []  # the library says nothing either
    settings = EvalSettings(base=str(tmp_path / "nope.safetensors"))
    with pytest.raises(GlidectlError, match="not found"):
        run_eval(prompts, settings, RunOptions(out=tmp_path / "o", device="cpu"),
                 on_event=lambda kind, **info: seen.append(kind))
    assert seen == [] and not (tmp_path / "o").exists()


def test_a_huge_prompt_is_stored_bounded_with_its_hash(tmp_path, tiny_base, stack):
    huge = "a red circle " + "very " * 20000 + "big"
    prompts = write_prompts(tmp_path / "p.txt", [huge])
    report = run_eval(prompts, EvalSettings(base=str(tiny_base), base_stage=FAST),
                      RunOptions(out=tmp_path / "o", device="cpu"), pipeline=stack)
    meta_bytes = (report.out / "metadata.json").stat().st_size
    assert meta_bytes < 20_000
    meta = report.metadata
    assert meta["prompts"][0].endswith("...") and len(meta["prompts"][0]) == 200
    (png,) = report.out.glob("000_*.png")
    with Image.open(png) as im:
        assert im.text["prompt_sha256"] == hashlib.sha256(huge.encode()).hexdigest()
        assert len(im.text["prompt"]) == 200
    caption = png.with_suffix(".txt").read_text()
    assert caption.startswith("a red circle very") and len(caption) < 200  # what 64 tokens kept
    resumed = run_eval(prompts, EvalSettings(base=str(tiny_base), base_stage=FAST),
                       RunOptions(out=tmp_path / "o", device="cpu", resume=True),
                       pipeline=stack)
    assert resumed.metadata["counts"]["generated"] == 0


def test_a_short_prompt_the_model_cuts_stores_what_it_read(tmp_path, tiny_base, stack):
    long = "a red circle " + "dot " * 45  # under 200 characters, more tokens than read
    prompts = write_prompts(tmp_path / "p.txt", [long.strip(), "a cat"])
    report = run_eval(prompts, EvalSettings(base=str(tiny_base), base_stage=FAST),
                      RunOptions(out=tmp_path / "o", device="cpu"), pipeline=stack)
    cut, whole = (Image.open(p).text for p in sorted(report.out.glob("0*.png")))
    ctx = stack.base.options.text_ctx
    assert len(long) < 200 and stack.tokenizer.count(long) > ctx
    assert cut["prompt"] == long.strip()
    assert cut["prompt_used"].startswith("a red circle dot") and len(cut["prompt_used"]) < 150
    assert "prompt_used" not in whole


def colour_references(folder: Path, count: int) -> Path:
    """A --fid reference folder of ``count`` 40 px pictures of distinct colours."""
    folder.mkdir()
    for i in range(count):
        Image.new("RGB", (40, 40), (50 * i, 20, 200)).save(folder / f"{i}.png")
    return folder


def test_fid_against_a_reference_folder_or_absent_with_the_reason(tmp_path, tiny_base, stack,
                                                                  monkeypatch):
    from test_fid import ColourStats

    from glidectl import fid

    prompts = write_prompts(tmp_path / "p.txt", ["a red circle", "a blue square"])
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST, n=2, batch_size=2)
    ref = colour_references(tmp_path / "ref", 5)
    report = run_eval(prompts, settings, RunOptions(out=tmp_path / "a", device="cpu",
                                                    fid_reference=str(ref)), pipeline=stack)
    assert "--fid-weights" in report.metadata["metrics"]["fid"]["absent"]
    monkeypatch.setattr(fid, "inception_features", lambda weights: fid.Features(ColourStats()))
    report = run_eval(prompts, settings, RunOptions(out=tmp_path / "b", device="cpu",
                                                    fid_reference=str(ref)), pipeline=stack)
    metric = report.metadata["metrics"]["fid"]
    assert (metric["fid_fake"], metric["fid_real"]) == (4, 5) and metric["fid"] > 0
    assert metric["reference"] == str(ref)
    import io

    from rich.console import Console

    from glidectl.cli.eval_cmd import _print_summary

    shown = io.StringIO()  # the summary glidectl eval prints: it read 'absent' first
    _print_summary(Console(file=shown, width=200), report.metadata, tmp_path / "b")
    assert f"FID {metric['fid']:.2f}, KID" in shown.getvalue()
    # reference statistics: FID alone in the summary; a bad file fails before any image
    import numpy as np

    np.savez(tmp_path / "stats.npz", mu=np.zeros(6), sigma=np.eye(6))
    report = run_eval(prompts, settings, RunOptions(
        out=tmp_path / "c", device="cpu", fid_reference=str(tmp_path / "stats.npz")),
        pipeline=stack)
    assert report.metadata["metrics"]["fid"]["fid"] > 0
    shown = io.StringIO()
    _print_summary(Console(file=shown, width=300), report.metadata, tmp_path / "c")
    assert "images vs the statistics in" in shown.getvalue()
    np.savez(tmp_path / "bad.npz", arr_0=np.zeros(3))
    with pytest.raises(GlidectlError, match="not FID statistics"):
        run_eval(prompts, settings, RunOptions(out=tmp_path / "d", device="cpu",
                                               fid_reference=str(tmp_path / "bad.npz")),
                 pipeline=stack)
    assert not list((tmp_path / "d").glob("*.png"))
    (tmp_path / "one.png").write_bytes(b"")
    for reference, message in ((tmp_path / "nowhere", "does not exist; pass a folder of images"),
                               (tmp_path / "one.png", "is a file, not a kind of source")):
        with pytest.raises(GlidectlError, match=message):  # before sampling, not after
            run_eval(prompts, settings, RunOptions(out=tmp_path / "e", device="cpu",
                                                   fid_reference=str(reference)),
                     pipeline=stack)
        assert not (tmp_path / "e").exists()


def test_metrics_read_back_a_chunk_at_a_time_equal_those_of_every_image_at_once(
        tmp_path, tiny_base, stack, monkeypatch):
    """eval scores its images a chunk at a time (64; 2 here: 6 images in 3 chunks), holding
    one chunk, not every image: prompt-following, CLIP and FID/KID, per image and summed
    up, are what every image scored at once gives."""
    import torch
    from test_fid import ColourStats

    from glidectl import evaluation, fid
    from glidectl.eval_metrics import ClipScorer, clip_metric, prompt_following

    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip())
    network = ColourStats()  # one: its bias is drawn at random
    monkeypatch.setattr(fid, "inception_features", lambda weights: fid.Features(network))
    monkeypatch.setattr(evaluation, "METRICS_CHUNK", 2)
    weights = tmp_path / "clip.pt"
    torch.save({"direction": torch.tensor([1.0, 0.2, 0.0])}, weights)
    ref = tmp_path / "ref"
    ref.mkdir()
    for i in range(5):
        Image.new("RGB", (32, 32), (50 * i, 20, 200)).save(ref / f"{i}.png")
    captions = [*PROMPTS, "an oil painting of a corgi"]  # the demo metric skips the last
    report = run_eval(write_prompts(tmp_path / "p.txt", captions),
                      EvalSettings(base=str(tiny_base), base_stage=FAST, batch_size=4),
                      RunOptions(out=tmp_path / "o", device="cpu", clip_weights=str(weights),
                                 fid_reference=str(ref)), pipeline=stack)
    meta = report.metadata
    images = [Image.open(report.out / r["file"]).convert("RGB") for r in meta["images"]]
    at_once = [prompt_following(images, captions),
               clip_metric(ClipScorer.load("ViT-B-32", weights), None, images, captions)]
    for metric in at_once:
        per_image = [r["metrics"].get(metric.name) for r in meta["images"]]
        assert [v is None for v in per_image] == [v is None for v in metric.values]
        assert [v for v in per_image if v is not None] == pytest.approx(
            [v for v in metric.values if v is not None], rel=1e-6)
        assert meta["metrics"][metric.name] == pytest.approx(metric.summary(), rel=1e-6)
    assert meta["metrics"]["prompt_following"]["count"] == 5
    real = torch.cat(list(fid.reference_images(str(ref), 32, 99)))
    whole = fid.fid_kid([real], [fid.to_uint8(images)], fid.Features(network))  # one batch
    streamed = meta["metrics"]["fid"]
    assert streamed.keys() == {*whole, "reference"} and streamed["reference"] == str(ref)
    for key in whole:
        assert streamed[key] == pytest.approx(whole[key], rel=1e-6), key
    assert (whole["fid_fake"], whole["fid_real"]) == (6, 5)


def test_dry_run_refuses_pairs_the_run_would_refuse_without_downloading(tmp_path, monkeypatch,
                                                                        tiny_base):
    """Kinds and sizes are in each model's options: a dry run says what the run would."""
    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("GLIDECTL_OPENAI_URL", "http://127.0.0.1:9/unreachable")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    options = RunOptions(out=tmp_path / "o", dry_run=True, device="cpu")
    for base, up, message in [
            ("openai:upsample", None, "The base model '.*' is an 'upsample' model"),
            ("openai:base", "openai:base", "The upsampler '.*' is a 'base' model"),
            (str(tiny_base), "openai:upsample", "takes 64 px input but the base model")]:
        with pytest.raises(GlidectlError, match=message):
            run_eval(prompts, EvalSettings(base=base, upsampler=up, base_stage=FAST), options)
    assert not (tmp_path / "empty-cache").exists() and not (tmp_path / "o").exists()


def test_eval_base_none_points_to_sample(tmp_path):
    from glidectl.evaluation import settings_for

    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    with pytest.raises(GlidectlError, match="base='none' works only in glidectl sample"):
        settings_for(prompts, {"base": "none"}, RunOptions(out=tmp_path / "o"), "fp32")


def test_a_full_disk_at_the_grid_keeps_the_images_and_names_the_resume(
        tmp_path, tiny_base, capsys):
    """A file size limit (as a full disk) lets the images (1.4 kB) through but not the grid
    (6.5 kB): exit 1, one line naming the file and the command that continues, which
    finishes the run with the images kept."""
    import resource

    from test_sample_cmd import in_process

    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    out = tmp_path / "run"

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (5_000, resource.RLIM_INFINITY))

    failed = subprocess.run(_cli(prompts, tiny_base, out, "--n", "1"), env=_env(),
                            capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: Cannot write ") and "grid.png' (File too large)" in error
    assert f"`glidectl eval {prompts} --resume --out {out}`." in error
    kept = outputs(out)
    assert sum(name.endswith(".png") for name in kept) == 2
    # the continuation, in this process (no limit here): only the limited run needs its own
    done = in_process(capsys, *_cli(prompts, tiny_base, out, "--n", "1", "--resume")[3:])
    assert done.returncode == 0, done.stderr
    assert all(outputs(out)[name] == data for name, data in kept.items())
    assert (out / "grid.png").is_file()
    assert json.loads((out / "metadata.json").read_text())["counts"]["generated"] == 0


def test_eval_checks_what_a_run_needs_once(tmp_path, tiny_base, capsys, monkeypatch):
    """The models, LoRAs, W&B mode and --fid reference are checked once, before anything is
    said about the run (settings_for leaves them to run_eval)."""
    from test_sample_cmd import in_process

    from glidectl import evaluation, fid, model_cost

    calls: list[str] = []

    def counted(module, name):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, **k: (calls.append(name), real(*a, **k)))

    counted(model_cost, "check_models")
    counted(fid, "check_reference")

    def stop(*args):
        raise GlidectlError("stopped after the checks.")

    monkeypatch.setattr(evaluation, "_load_metrics", stop)
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    (tmp_path / "ref").mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "ref" / f"{i}.png")
    res = in_process(capsys, "eval", prompts, "--device", "cpu", "--base", tiny_base,
                     "--fid", tmp_path / "ref", "--out", tmp_path / "o")
    assert res.returncode == 2 and "stopped after the checks" in res.stderr, res.stderr
    assert res.stdout == "" and sorted(calls) == ["check_models", "check_reference"]


def test_a_fid_reference_or_a_run_too_small_to_score_is_refused_before_any_image(
        tmp_path, tiny_base, capsys):
    """A --fid folder without 2 files that open as images (notes, truncated headers, one
    image) or a run of one image: one sentence before any model loads (it failed after every
    image was made, leaving the run 'running')."""
    from test_sample_cmd import in_process

    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    one = write_prompts(tmp_path / "one.txt", PROMPTS[:1])
    junk, single = tmp_path / "junk", tmp_path / "single"
    junk.mkdir()
    single.mkdir()
    (junk / "notes.txt").write_text("not an image")
    (junk / "a.png").write_bytes(b"not a png")
    Image.new("RGB", (8, 8)).save(single / "0.png")
    import numpy as np

    narrow = tmp_path / "dims768.npz"  # pytorch-fid --dims 768: scored after every image
    np.savez(narrow, mu=np.zeros(768), sigma=np.eye(768))
    import torch

    torch.save({"w": torch.zeros(1)}, tmp_path / "inception.pth")  # a plain state_dict
    cases = [(prompts, junk, "holds no image (1 file named as an image does not open)"),
             (prompts, single, "holds 1 file that opens as an image; FID/KID need at least 2"),
             (one, single, "--fid needs at least 2 images to score, but this run makes 1"),
             (prompts, narrow, "holds statistics of 768 features, but the feature network "
                               "gives 2048; use statistics of Inception-v3's 2048 pool")]
    for file, reference, reason in cases:
        res = in_process(capsys, "eval", file, "--base", tiny_base, "--device", "cpu",
                         "--fid", reference, "--fid-weights", tmp_path / "inception.pth",
                         "--out", tmp_path / "o")
        assert res.returncode == 2 and res.stdout == "", res.stdout
        assert res.stderr.count("\n") == 1 and reason in res.stderr, res.stderr
        assert not (tmp_path / "o").exists()


def test_an_eval_inside_its_fid_folder_is_no_reference_of_its_own(tmp_path, tiny_base, stack,
                                                                  monkeypatch):
    """--out inside the --fid folder: its images (and grid.png) were read as references, so
    they scored against themselves; an earlier eval in the folder gives its images, not its
    grid."""
    from test_fid import ColourStats

    from glidectl import fid

    monkeypatch.setattr(fid, "inception_features", lambda weights: fid.Features(ColourStats()))
    prompts = write_prompts(tmp_path / "p.txt", ["a red circle", "a blue square"])
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST, n=2, batch_size=2)
    ref = colour_references(tmp_path / "ref", 3)
    inside = run_eval(prompts, settings, RunOptions(out=ref / "gen", device="cpu",
                                                    fid_reference=str(ref)), pipeline=stack)
    assert inside.metadata["metrics"]["fid"]["fid_real"] == 3  # was 8: its 4 and grid.png
    beside = run_eval(prompts, settings, RunOptions(out=tmp_path / "b", device="cpu",
                                                    fid_reference=str(ref)), pipeline=stack)
    assert beside.metadata["metrics"]["fid"]["fid_real"] == 3 + 4  # ref/gen's, no grid


def test_fid_that_fails_as_the_references_are_read_is_absent_and_the_run_complete(
        tmp_path, tiny_base, stack, monkeypatch):
    """References whose headers open but whose pixels do not: FID is absent with the
    reason and metadata.json says the run is complete (it stayed 'running', so --resume
    failed the same way)."""
    from test_fid import ColourStats

    from glidectl import fid

    monkeypatch.setattr(fid, "inception_features", lambda weights: fid.Features(ColourStats()))
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    ref = tmp_path / "ref"
    ref.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 40), (i, 9, 9)).save(ref / f"{i}.png")
        data = (ref / f"{i}.png").read_bytes()
        (ref / f"{i}.png").write_bytes(data[:len(data) // 2])  # cut in its pixel data
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST)
    report = run_eval(prompts, settings, RunOptions(out=tmp_path / "o", device="cpu",
                                                    fid_reference=str(ref)), pipeline=stack)
    meta = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert meta["status"] == "complete" and meta["counts"]["images"] == 2
    assert "no images found" in meta["metrics"]["fid"]["absent"]
    assert report.metadata["metrics"]["fid"] == meta["metrics"]["fid"]


def test_a_resume_or_skip_existing_of_another_run_says_only_why(tmp_path, tiny_base, stack,
                                                                capsys):
    """Other prompts under --resume, other settings under --skip-existing: one sentence,
    with no line about the run before it and no model loaded (it said the run's notes and
    loaded its models first)."""
    from test_sample_cmd import in_process

    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    other = write_prompts(tmp_path / "q.txt", PROMPTS[1:2])
    settings = EvalSettings(base=str(tiny_base), base_stage=FAST)
    run_eval(prompts, settings, RunOptions(out=tmp_path / "o", device="cpu"), pipeline=stack)
    before = outputs(tmp_path / "o")
    meta = (tmp_path / "o" / "metadata.json").read_bytes()
    cases = [([other, "--resume"], "--resume: the prompts differ from the run in"),
             ([prompts, "--skip-existing", "--base", tiny_base, "--sampler", "euler",
               "--steps", "3", "--precision", "fp32"],
              "--skip-existing: --steps 3 differs from 2")]
    for args, reason in cases:
        res = in_process(capsys, "eval", *args, "--device", "cpu", "--out", tmp_path / "o")
        assert res.returncode == 2 and res.stdout == "", res.stdout
        assert res.stderr.startswith("Error:") and res.stderr.count("\n") == 1, res.stderr
        assert reason in res.stderr, res.stderr
    assert outputs(tmp_path / "o") == before
    assert (tmp_path / "o" / "metadata.json").read_bytes() == meta


def test_a_resume_that_cannot_continue_names_a_way_out_that_works(tmp_path, tiny_base,
                                                                     stack, capsys):
    """--resume refused (a flag that changes the images; a folder of images without
    metadata.json) names what to run instead, and running it succeeds: "drop --resume" led
    to "--out already holds files; pass --resume", a circle."""
    from test_sample_cmd import in_process

    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    run_eval(prompts, EvalSettings(base=str(tiny_base), base_stage=FAST),
             RunOptions(out=tmp_path / "o", device="cpu"), pipeline=stack)
    run = ("eval", prompts, "--base", tiny_base, "--sampler", "euler", "--device", "cpu",
           "--precision", "fp32", "-q")
    res = in_process(capsys, *run, "--steps", 3, "--resume", "--out", tmp_path / "o")
    assert res.returncode == 2 and res.stderr.rstrip().endswith(
        "recorded with 2; drop --steps to continue it, or use another --out for a new run "
        "with it."), res.stderr
    res = in_process(capsys, *run, "--steps", 3, "--out", tmp_path / "new")
    assert res.returncode == 0, res.stderr
    bare = tmp_path / "bare"  # an eval's images, no metadata.json
    bare.mkdir()
    for png in (tmp_path / "o").glob("000_*"):
        shutil.copy(png, bare / png.name)
    for flag in ("--resume", None):
        res = in_process(capsys, *run, "--steps", 2, *([flag] if flag else []), "--out", bare)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert "pass --resume" not in res.stderr and res.stderr.rstrip().endswith(
            "with --skip-existing instead of --resume, or pass another --out." if flag else
            "keep them with --skip-existing, or pass another --out."), res.stderr
    res = in_process(capsys, *run, "--steps", 2, "--skip-existing", "--out", bare)
    assert res.returncode == 0 and (bare / "metadata.json").is_file(), res.stderr
    (bare / "metadata.json").write_text("{damaged")  # offered --resume, which refuses it
    res = in_process(capsys, *run, "--steps", 2, "--out", bare)
    assert res.returncode == 2 and res.stderr.rstrip().endswith(
        "holds a metadata.json glidectl cannot read (damaged or edited), so there is no run "
        f"to continue; delete {str(bare / 'metadata.json')!r} to keep its images with "
        "--skip-existing, or pass another --out."), res.stderr
    (bare / "metadata.json").unlink()
    res = in_process(capsys, *run, "--steps", 2, "--skip-existing", "--out", bare)
    assert res.returncode == 0, res.stderr


def test_resume_continues_the_run_whose_settings_it_read(tmp_path, tiny_base, stack):
    """settings_for reads the latest run's settings; an eval that starts a newer folder
    before run_eval does leaves that run the one continued (run_eval picked the latest
    again: the other folder, under the first one's settings)."""
    from glidectl.evaluation import settings_for

    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    root = tmp_path / "eval"
    made = run_eval(prompts, EvalSettings(base=str(tiny_base), base_stage=FAST),
                    RunOptions(eval_root=root, device="cpu"), pipeline=stack)
    options = RunOptions(eval_root=root, resume=True, device="cpu")
    settings, _ = settings_for(prompts, {}, options)
    shutil.copytree(made.out, root / "0002")  # another eval's folder, started meanwhile
    (root / "0002" / "metadata.json").write_text(json.dumps({"settings": {}}))
    again = run_eval(prompts, settings, options, pipeline=stack)
    assert again.out == made.out and again.metadata["counts"]["kept"] == 1


def test_ctrl_c_keeps_finished_prompts_and_names_the_resume_that_ends_the_same(
        tmp_path, tiny_base, capsys, monkeypatch):
    """Ctrl-C after the first prompt's images: exit 130, metadata.json says "interrupted",
    the line names the --resume command, and that command ends with an uninterrupted run's
    bytes."""
    import shlex

    from test_sample_cmd import in_process

    from glidectl import evaluation

    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:3])
    args = ("--base", tiny_base, "--sampler", "euler", "--steps", 2, "--batch-size", 1,
            "--device", "cpu", "--precision", "fp32")
    res = in_process(capsys, "eval", prompts, *args, "--out", tmp_path / "whole")
    assert res.returncode == 0, res.stderr
    real, written = evaluation.write_pair, []

    def interrupted(*a, **k):
        if written:
            raise KeyboardInterrupt
        written.append(real(*a, **k))

    monkeypatch.setattr(evaluation, "write_pair", interrupted)
    res = in_process(capsys, "eval", prompts, *args, "--out", tmp_path / "cut")
    assert res.returncode == 130 and "Traceback" not in res.stderr + res.stdout
    said = " ".join((res.stdout + res.stderr).split())
    resume = said.split("Continue with `")[1].split("`")[0]
    assert resume == shlex.join(["glidectl", "eval", str(prompts), "--resume", "--out",
                                 str(tmp_path / "cut")])
    assert len([p for p in (tmp_path / "cut").glob("*.png")]) == 1
    # recorded as interrupted: only a killed run leaves "running" (and is said to be killed)
    cut = json.loads((tmp_path / "cut" / "metadata.json").read_text())
    assert cut["status"] == "interrupted"
    # its session is kept, with the image it wrote (the history left it out)
    assert [(x["generated"], x["resumed"]) for x in cut["sessions"]] == [(1, False)]
    res = in_process(capsys, "eval", prompts, *args, "--out", tmp_path / "cut")
    assert res.returncode == 2 and "already holds files; pass --resume" in res.stderr, \
        res.stderr
    monkeypatch.setattr(evaluation, "write_pair", real)
    res = in_process(capsys, *shlex.split(resume)[1:])
    assert res.returncode == 0, res.stderr
    assert outputs(tmp_path / "cut") == outputs(tmp_path / "whole")
    sessions = json.loads((tmp_path / "cut" / "metadata.json").read_text())["sessions"]
    assert [x["generated"] for x in sessions] == [1, 2]  # the two add up to the three


def test_the_interrupted_line_is_one_line_on_stderr(tmp_path, tiny_base, capsys, monkeypatch):
    """A stopped eval (a scheduler's SIGTERM) said its resume command on stdout, folded at
    80 columns as rich folds for a log: a long --out was cut mid-path over two lines."""
    import shlex

    from test_sample_cmd import in_process

    from glidectl import evaluation

    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    out = tmp_path / ("job-" + "x" * 90)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "write_pair", interrupted)
    res = in_process(capsys, "eval", prompts, "--base", tiny_base, "--sampler", "euler",
                     "--steps", 1, "--device", "cpu", "--out", out, "-q")
    assert res.returncode == 130
    resume = shlex.join(["glidectl", "eval", str(prompts), "--resume", "--out", str(out)])
    assert res.stderr == f"Interrupted; finished prompts are kept. Continue with `{resume}`.\n"
    assert "Interrupted" not in res.stdout


def test_ctrl_c_while_scoring_keeps_the_session_that_made_the_images(
        tmp_path, tiny_base, capsys, monkeypatch):
    """Ctrl-C (or SIGTERM) once every image was written but while they were read back and
    scored (minutes for FID on many images) recorded "interrupted" without the session
    that made them: its images were nobody's, and the resumed session made 0."""
    from test_sample_cmd import in_process

    from glidectl import eval_metrics

    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    args = ("--base", tiny_base, "--sampler", "euler", "--steps", 2, "--device", "cpu",
            "--precision", "fp32", "--out", tmp_path / "o")
    real = eval_metrics.prompt_following

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_metrics, "prompt_following", ctrl_c)
    res = in_process(capsys, "eval", prompts, *args)
    assert res.returncode == 130, res.stderr
    cut = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert cut["status"] == "interrupted"
    assert [(x["generated"], x["resumed"]) for x in cut["sessions"]] == [(2, False)]
    monkeypatch.setattr(eval_metrics, "prompt_following", real)
    res = in_process(capsys, "eval", prompts, *args, "--resume")
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert [x["generated"] for x in meta["sessions"]] == [2, 0]


def test_eval_quiet_shows_no_progress_bars(capsys, tmp_path, tiny_base):
    """-q as sample's: no bars (a script's log stays readable); the summary still comes."""
    from test_sample_cmd import in_process

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    args = ("eval", prompts, "--base", tiny_base, "--upsampler", "none", "--steps", "2",
            "--device", "cpu")
    loud = in_process(capsys, *args, "--out", tmp_path / "loud")
    quiet = in_process(capsys, *args, "--out", tmp_path / "quiet", "-q")
    assert loud.returncode == quiet.returncode == 0, quiet.stderr
    assert "img/s" in loud.stdout + loud.stderr  # the bar's rate
    assert "img/s" not in quiet.stdout + quiet.stderr and "2/2 100%" not in quiet.stdout
    assert (tmp_path / "quiet" / "metadata.json").is_file()


def test_a_folder_or_schedule_with_brackets_is_printed_as_written(tmp_path, tiny_base, capsys,
                                                                   monkeypatch):
    """The dry run's and the summary's tables went through rich markup: an --out folder
    ``eval [v2]`` was titled ``eval /…``, and a schedule file in it lost its ``[v2]``."""
    import torch
    from test_sample_cmd import in_process

    from glidectl.samplers.tuned import write_schedule_file

    monkeypatch.setenv("COLUMNS", "300")
    folder = tmp_path / "fits [v2]"
    folder.mkdir()
    schedule = folder / "s.json"
    write_schedule_file(schedule, {2: torch.tensor([80.0, 1.0, 0.0])}, 0.01, 80.0, "test")
    prompts = write_prompts(tmp_path / "p.txt", PROMPTS[:1])
    args = ("eval", prompts, "--base", tiny_base, "--upsampler", "none", "--n", "1",
            "--sampler", "euler", "--schedule", schedule, "--out", tmp_path / "eval [v2]", "-q")
    res = in_process(capsys, *args, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"→ {tmp_path / 'eval [v2]'}" in res.stdout.replace("\n", ""), res.stdout
    assert f"on {schedule} σ's" in res.stdout, res.stdout
    res = in_process(capsys, *args)
    assert res.returncode == 0, res.stderr
    assert f"glidectl eval → {tmp_path / 'eval [v2]'}" in res.stdout.replace("\n", ""), \
        res.stdout
