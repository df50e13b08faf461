"""``glidectl sample PROMPT``: text → numbered PNGs (and a grid) through the pipeline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer


def _next_index(out: Path) -> int:
    """First free image number in ``out`` (so repeated runs never overwrite)."""
    stems = (p.stem for p in out.glob("*.png"))
    numbers = [int(m.group(1)) for s in stems if (m := re.fullmatch(r"(\d{5})", s))]
    return max(numbers, default=-1) + 1


def _device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def register(app: typer.Typer) -> None:
    @app.command("sample")
    def sample_command(
        prompts: list[str] = typer.Argument(..., help="Prompt(s); each gives --n images."),
        sampler: str = typer.Option("dpm++2m", "--sampler", help="Base sampler (see "
                                    "`glidectl plugins --all`: ddpm, ddim, plms, euler, ...)."),
        steps: str = typer.Option("25", "--steps", help="Base steps (σ's visited, not model "
                                  "calls: heun's 10 steps are 19 calls; the progress bar and "
                                  "PNGs count calls), or a GLIDE respacing string (ddim50, "
                                  "fast27) with --schedule respaced."),
        schedule: str = typer.Option("auto", "--schedule", help="Step schedule: auto (the "
                                     "sampler's own), respaced, karras, exponential, logsnr, "
                                     "polyexponential, optimised or a plugin's."),
        guidance: float = typer.Option(3.0, "--guidance", help="Classifier-free guidance "
                                       "scale (1 = none)."),
        guidance_interval: str | None = typer.Option(None, "--guidance-interval", help="Guide "
                                                     "only for σ in LO,HI (e.g. 0.3,5)."),
        guidance_rescale: float = typer.Option(0.0, "--guidance-rescale", help="Rescale the "
                                               "guided x0 to the conditional std, φ in [0, 1]."),
        dynamic_threshold: float | None = typer.Option(None, "--dynamic-threshold", help="Clip "
                                                       "x0 at this percentile of |x0| (Imagen: "
                                                       "99.5) instead of at 1."),
        eta: float | None = typer.Option(None, "--eta", help="Noise amount for samplers "
                                         "that take η (ddim, ancestral ones)."),
        n: int = typer.Option(1, "--n", "-n", help="Images per prompt."),
        batch_size: int = typer.Option(4, "--batch-size", "-b", help="Images per forward."),
        seed: int = typer.Option(0, "--seed", help="Image i (of all) uses seed + i."),
        base: str = typer.Option("openai:base", "--base", help="Base model: openai:base, a "
                                 ".pt/.safetensors file or a run folder ('none' with "
                                 "--low-res)."),
        upsampler: str = typer.Option("auto", "--upsampler", help="Upsampler model spec, "
                                      "'none', or 'auto' (OpenAI's for OpenAI's base)."),
        upsample_sampler: str = typer.Option("ddpm", "--upsample-sampler", help="Upsampler "
                                             "sampler."),
        upsample_steps: str = typer.Option("fast27", "--upsample-steps", help="Upsampler "
                                           "steps or respacing string."),
        upsample_guidance: float | None = typer.Option(None, "--upsample-guidance",
                                                       help="Upsampler guidance (default none)."),
        upsample_temp: float = typer.Option(0.997, "--upsample-temp", help="Upsampler initial "
                                            "noise scale."),
        low_res: Path | None = typer.Option(None, "--low-res", help="Upsample this image "
                                            "instead of sampling a base image."),
        inpaint_image: Path | None = typer.Option(None, "--inpaint-image", help="Image to "
                                                  "inpaint (needs an inpaint model)."),
        inpaint_mask: Path | None = typer.Option(None, "--inpaint-mask", help="Mask image: "
                                                 "white = repaint, black = keep."),
        sigma_max: float = typer.Option(80.0, "--sigma-max", help="Highest σ of karras/"
                                        "exponential schedules (clamped to the model's)."),
        quantize_t: bool = typer.Option(False, "--quantize-t", help="Round the network's "
                                        "timestep to an integer (default: fractional t)."),
        out: Path = typer.Option(Path("samples"), "--out", "-o", help="Output folder."),
        grid: bool = typer.Option(False, "--grid", help="Also write a grid of all images."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
        precision: str = typer.Option("no", "--precision", help="Autocast: no, fp16, bf16."),
        vocab_dir: str | None = typer.Option(None, "--vocab-dir", help="GPT-2 vocabulary "
                                             "folder (encoder.json, vocab.bpe)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        lora: list[str] | None = typer.Option(None, "--lora", help="LoRA adapter PATH[:SCALE] "
                                              "(repeatable; goes onto the model of its kind)."),
    ) -> None:
        """Generate images for PROMPT(s) with a GLIDE model (and its upsampler)."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from .. import __version__, plugins
        from ..errors import GlidectlError
        from ..images import make_grid, save_png
        from ..samplers.guidance import check_guidance_tools, parse_interval

        err = Console(stderr=True)
        for name in (sampler, upsample_sampler):
            plugins.samplers().get(name)  # unknown name: one line with the nearest match
        if precision not in ("no", "fp16", "bf16"):
            raise GlidectlError(f"Unknown --precision {precision!r}; use no, fp16 or bf16.")
        for path in (low_res, inpaint_image, inpaint_mask):
            if path is not None and not path.is_file():
                raise GlidectlError(f"Image file {str(path)!r} does not exist; fix the path.")
        check_guidance_tools(parse_interval(guidance_interval) if guidance_interval else None,
                             guidance_rescale, dynamic_threshold)
        if base == "none" and low_res is None:
            raise GlidectlError("--base none needs --low-res IMAGE to upsample.")

        from ..glide.loading import load_model
        from ..pipeline import GlidePipeline, default_upsampler

        dev = _device(device)
        base_spec = None if base == "none" or low_res is not None else base
        up_spec = default_upsampler(base) if upsampler == "auto" else upsampler
        up_spec = None if up_spec in (None, "none", "") else up_spec
        if low_res is not None and up_spec is None:
            raise GlidectlError("--low-res needs an upsampler: pass --upsampler SPEC.")
        with err.status("Loading models..."):
            base_model = load_model(base_spec, device=dev) if base_spec else None
            up_model = load_model(up_spec, device=dev) if up_spec else None
            if lora:
                from ..lora import apply_loras_by_kind

                loras = apply_loras_by_kind([base_model, up_model], lora)
        pipe = GlidePipeline(base_model, up_model, vocab_dir=vocab_dir)
        options = dict(
            sampler=sampler, steps=int(steps) if steps.isdigit() else steps,
            schedule=None if schedule == "auto" else schedule, guidance=guidance, eta=eta,
            sigma_max=sigma_max, quantize_t=quantize_t, upsample_sampler=upsample_sampler,
            guidance_interval=parse_interval(guidance_interval) if guidance_interval else None,
            guidance_rescale=guidance_rescale, dynamic_threshold=dynamic_threshold,
            upsample_steps=int(upsample_steps) if upsample_steps.isdigit() else upsample_steps,
            upsample_guidance=upsample_guidance, upsample_temp=upsample_temp,
        )
        progress = Progress(
            TextColumn("[bold]sampling"), BarColumn(), MofNCompleteColumn(),
            TextColumn("model calls"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=quiet,
        )
        task = progress.add_task("sample", total=None, rate="")

        def on_progress(done: int, total: int) -> None:
            elapsed = progress.tasks[0].elapsed or 0.0
            rate = f"{done / elapsed:.2f}/s" if elapsed > 0 else ""
            progress.update(task, completed=done, total=total, rate=rate)

        with progress:
            images = pipe.generate(
                prompts, n=n, seed=seed, batch_size=batch_size, low_res=low_res,
                inpaint_image=inpaint_image, inpaint_mask=inpaint_mask, precision=precision,
                progress=on_progress,
                warn=lambda message: err.print(f"[yellow]Warning:[/] {message}", highlight=False,
                                           soft_wrap=True),
                **options,
            )
        out.mkdir(parents=True, exist_ok=True)
        start = _next_index(out)
        common = {
            "sampler": sampler, "steps": steps, "schedule": schedule, "guidance": guidance,
            "eta": eta, "guidance_interval": guidance_interval,
            "guidance_rescale": guidance_rescale or None, "dynamic_threshold": dynamic_threshold,
            "base": base_spec, "upsampler": up_spec,
            "upsample_sampler": upsample_sampler if up_spec else None,
            "upsample_steps": upsample_steps if up_spec else None,
            "upsample_guidance": upsample_guidance, "low_res": str(low_res) if low_res else None,
            "inpaint_image": str(inpaint_image) if inpaint_image else None,
            "precision": precision, "glidectl": __version__,
            "loras": [f"{x['path']}:{x['scale']:g}" for x in loras] if lora else None,
        }
        written = []
        for i, image in enumerate(images):
            params = {"prompt": image.info["prompt"], "seed": int(image.info["seed"]),
                      "model_calls": int(image.info["model_calls"]), **common}
            text = {k: str(v) for k, v in params.items() if v is not None}
            text["parameters"] = json.dumps(params)
            written.append(save_png(image, out / f"{start + i:05d}.png", text))
        for path in written:
            typer.echo(str(path))
        if grid:
            text = {"prompts": json.dumps(prompts), "seed": str(seed),
                    "parameters": json.dumps({"prompts": prompts, "seed": seed, **common})}
            typer.echo(str(save_png(make_grid(images), out / f"grid-{start:05d}.png", text)))
