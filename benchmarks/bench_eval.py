"""glidectl eval and ui figures: images/s by --batch-size, resume overhead, UI cache hit.

Uses a small random model (default 64 px "small"-ish tiny preset) so it runs on a CPU; pass
--base to measure a real checkpoint (e.g. openai:base) on a GPU.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench_args import positive_int, positive_ints, run


def _model(folder: Path, size: int) -> Path:
    import torch

    from glidectl.glide import create_model, preset_options, save_weights

    torch.manual_seed(0)
    model = create_model(preset_options("base", "tiny").replace(image_size=size))
    return save_weights(model, folder / f"tiny{size}.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default=None, help="Model spec (default: a random tiny one).")
    parser.add_argument("--size", type=positive_int, default=64)
    parser.add_argument("--prompts", type=positive_int, default=8)
    parser.add_argument("--steps", type=positive_int, default=10)
    parser.add_argument("--batch-sizes", type=positive_ints, default="1,4,8")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    try:
        measure(args, tmp)
    finally:  # the tiny model and the outputs go, also when a run fails
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, tmp: Path) -> None:
    """Eval at each batch size, a resume, and the web UI's requests, in ``tmp``."""
    from glidectl.evaluation import EvalSettings, RunOptions, Stage, run_eval
    from glidectl.pipeline import GlidePipeline
    from glidectl.ui.backend import UiBackend

    base = args.base or str(_model(tmp, args.size))
    prompts = tmp / "prompts.txt"
    prompts.write_text("\n".join(f"a red circle number {i}" for i in range(args.prompts)))
    stack = GlidePipeline.from_specs(base, None, device=args.device, precision="fp32")
    print(f"model {base} on {stack.base.options.image_size} px, {args.prompts} prompts, "
          f"euler {args.steps} steps, guidance 3")
    for bs in args.batch_sizes:
        s = EvalSettings(base=base, base_stage=Stage("euler", args.steps, 3.0), batch_size=bs)
        t0 = time.perf_counter()
        report = run_eval(prompts, s, RunOptions(out=tmp / f"bs{bs}", device=args.device),
                          pipeline=stack)
        wall = time.perf_counter() - t0
        t = report.metadata["timings"]
        print(f"batch {bs:>2}: {t['images_per_s']:.2f} images/s sampling, "
              f"{args.prompts / wall:.2f} images/s end to end ({wall:.1f} s)")
    t0 = time.perf_counter()
    run_eval(prompts, s, RunOptions(out=tmp / f"bs{bs}", resume=True, device=args.device),
             pipeline=stack)
    print(f"resume of a finished run (nothing to do): {time.perf_counter() - t0:.2f} s")

    models = tmp / "models"
    models.mkdir()
    if args.base is None:
        (models / "m.safetensors").write_bytes(Path(base).read_bytes())
        ui = UiBackend(models, device=args.device)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            r = ui.generate("a red circle", n=1, sampler="euler", base_steps=1,
                            base="m.safetensors", seed=1)
            times.append((time.perf_counter() - t0, r.settings["load_s"]))
        (first, first_load), (second, _), (third, third_load) = times
        print(f"ui request (1 image, 1 step): first {first:.2f} s (load {first_load:.2f} s), "
              f"then {second:.2f} s / {third:.2f} s (load {third_load:.4f} s, cache hits)")


if __name__ == "__main__":
    run(main)
