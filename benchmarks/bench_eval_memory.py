"""Peak memory of glidectl eval's last stage (reading the images back, prompt-following and
FID/KID, grid.png, metadata.json) by the number of images: it should not grow with them.

Writes N demo pictures (shapes on plain backgrounds, their captions as prompts) into an eval
folder as eval names them, then runs ``run_eval`` with ``skip_existing`` in a fresh process
per size and repeat: every image is there, so no sampling runs and the real metrics and grid
code does all the work. Prints the process's peak RSS (``ru_maxrss``) before the stage (torch,
the tiny model) and at its end, with the stage's time and the grid's size.

    python benchmarks/bench_eval_memory.py                        # 500, 2,000, 8,000 at 256 px
    python benchmarks/bench_eval_memory.py --sizes 500 --fid      # with FID/KID against N refs
    python benchmarks/bench_eval_memory.py --work /tmp/bem        # keep (and reuse) the images

The prompts are ``a photo of`` + each picture's caption, which the demo prompt-following
metric does not score: it takes about 0.1 s an image at 256 px on a CPU (a 2-core VM), which
would make the benchmark hours long; ``--demo-prompts`` gives it the demo captions.

``--fid`` scores FID/KID against a reference folder of N plain colour pictures with a
stand-in feature network of Inception's width (2048 features an image, as FID keeps) at a
fraction of its cost: Inception-v3 on thousands of 299 px images takes hours on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_args import positive_int, positive_ints


def _write_images(folder: Path, count: int, size: int, demo_prompts: bool) -> None:
    """``count`` demo pictures and a prompts file of their captions (``a photo of`` each
    unless ``demo_prompts``), the pictures named as eval names them; and ``count`` plain
    colour pictures (``demo:colors``) as the FID reference."""
    from glidectl.data.demo import make_demo_sample
    from glidectl.eval_outputs import image_stems, index_width

    out, ref = folder / "out", folder / "ref"
    if not (folder / "prompts.txt").is_file():
        out.mkdir(parents=True, exist_ok=True)
        prompts = []
        for i in range(count):
            sample = make_demo_sample("shapes", i, size)
            prompts.append(sample.caption if demo_prompts else f"a photo of {sample.caption}")
            stem = image_stems(prompts, i, 1, index_width(count))[0]
            sample.image.save(out / f"{stem}.png")
            (out / f"{stem}.txt").write_text(prompts[-1] + "\n")
        (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    if not ref.is_dir():
        ref.mkdir()
        for i in range(count):
            make_demo_sample("colors", i, size).image.save(ref / f"{i:06d}.png")


def _model(work: Path, size: int) -> Path:
    import torch

    from glidectl.glide import create_model, preset_options, save_weights

    path = work / f"tiny-{size}.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        save_weights(create_model(preset_options("base", "tiny").replace(image_size=size)), path)
    return path


def _child(folder: Path, model: Path, fid: bool) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch

    from glidectl import fid as fid_module
    from glidectl.evaluation import EvalSettings, RunOptions, Stage, run_eval
    from glidectl.pipeline import GlidePipeline

    class Wide(torch.nn.Module):
        """2048 features an image from an 8 px average pool and one strided conv."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 2048, 8, stride=8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(torch.nn.functional.avg_pool2d(x.float() / 255, 8)).mean((2, 3))

    out = folder / "out"
    for name in ("metadata.json", "grid.png"):  # the last measurement's
        (out / name).unlink(missing_ok=True)
    if fid:
        network = Wide()
        fid_module.inception_features = lambda weights: fid_module.Features(network)
    stack = GlidePipeline.from_specs(str(model), device="cpu", precision="fp32")
    settings = EvalSettings(base=str(model), base_stage=Stage("euler", 2, 3.0), batch_size=4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    report = run_eval(folder / "prompts.txt", settings, RunOptions(
        out=out, skip_existing=True, device="cpu",
        fid_reference=str(folder / "ref") if fid else None), pipeline=stack)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # a grid of every image passed PIL's bomb limit at 8,000
    with Image.open(out / "grid.png") as grid:
        grid_size = grid.size
    meta = report.metadata
    print(json.dumps({"before_kib": before, "peak_kib": peak, "seconds": seconds,
                      "grid": grid_size, "images": meta["counts"]["images"],
                      "generated": meta["counts"]["generated"],
                      "fid": meta["metrics"].get("fid", {}).get("fid"),
                      "kid": meta["metrics"].get("fid", {}).get("kid")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=positive_ints, default="500,2000,8000",
                        help="Image counts (comma list).")
    parser.add_argument("--size", type=positive_int, default=256, help="Image side in pixels.")
    parser.add_argument("--repeats", type=positive_int, default=2,
                        help="Fresh processes per count.")
    parser.add_argument("--fid", action="store_true", help="Also FID/KID against N references.")
    parser.add_argument("--demo-prompts", action="store_true",
                        help="The demos' captions, which prompt-following scores (slow).")
    parser.add_argument("--work", default=None, help="Folder for the images (default: temp).")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(Path(args.child), Path(args.model), args.fid)
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-eval-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    model = _model(work, args.size)
    import glidectl

    print(f"glidectl {glidectl.__version__} from {Path(glidectl.__file__).parent}; "
          f"{os.cpu_count()} CPUs; images in {work}")
    print(f"{'images':>7} {'px':>4} {'fid':>4} {'RSS before':>11} {'peak RSS':>9} "
          f"{'stage':>8} grid")
    for count in args.sizes:
        folder = work / f"{count}-{args.size}{'-demo' if args.demo_prompts else ''}"
        _write_images(folder, count, args.size, args.demo_prompts)
        for _ in range(args.repeats):
            cmd = [sys.executable, __file__, "--child", str(folder), "--model", str(model)]
            done = subprocess.run(cmd + (["--fid"] if args.fid else []), capture_output=True,
                                  text=True, env={**os.environ, "GLIDECTL_LOAD_PLUGINS": ""})
            if done.returncode != 0:
                sys.exit(f"the measurement of {count} images failed:\n{done.stderr[-3000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            assert r["images"] == count and r["generated"] == 0, r
            print(f"{count:>7} {args.size:>4} {'yes' if args.fid else 'no':>4} "
                  f"{r['before_kib'] / 1024:>7.0f} MiB {r['peak_kib'] / 1024:>5.0f} MiB "
                  f"{r['seconds']:>6.1f} s {r['grid'][0]} x {r['grid'][1]} px"
                  + (f", FID {r['fid']:.6f}, KID {r['kid']:.6f}" if args.fid else ""),
                  flush=True)


if __name__ == "__main__":
    main()
