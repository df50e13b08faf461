"""``glidectl sample PROMPT``: text → numbered PNGs (and a grid) through the pipeline."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer

from .. import sampling_defaults as D
from ..errors import GlidectlError, WriteError
from ..ranges import STEPS, plain_number
from .bars import counting_bar
from .checks import typed

SAMPLER_HELP = (f"Base sampler (default: the model's recommended, else {D.BASE_SAMPLER}; see "
                "`glidectl plugins --all`: ddpm, ddim, plms, euler, ...).")
STEPS_HELP = ("Base steps (σ's visited, not model calls: heun's 10 steps are 19 calls; the "
              "progress bar and PNGs count calls), or a GLIDE respacing string (ddim50, "
              "fast27) with --schedule respaced (default: the model's recommended, else "
              f"{D.BASE_STEPS}).")
SCHEDULE_HELP = ("Step schedule: auto (the sampler's own: respaced for ddpm/ddim/plms, "
                 "exponential for dpm++2m/dpm++3m/unipc/unipc_bh1, else karras), respaced, "
                 "karras, exponential, logsnr, polyexponential, optimised, a plugin's, or a "
                 "schedule file (FILE.json from glidectl fit-steps; --sampler bespoke needs "
                 "one fitted with --method bespoke) (default: the model's recommended, else "
                 "auto).")
GUIDANCE_HELP = ("Classifier-free guidance scale, 1 = none (default: the model's, else "
                 f"{D.BASE_GUIDANCE:g}).")
GREY_HELP = ("Draw grey images: every x0 prediction projected onto grey (R = G = B), for "
             "models of greyscale data (default: the model's recommended, else colour).")
PRECISION_HELP = ("auto (bf16 where the device computes it natively, else fp32), fp32, bf16 "
                  "or fp16.")
DEVICE_HELP = "auto, cpu, cuda, cuda:1, mps."
FROM_PNG_HELP = ("Make the image of a PNG from glidectl sample, the web UI, eval or a training "
                 "preview again, bit for bit on the same machine and precision: its prompt, "
                 "seed, models (checked by sha256), LoRAs and settings come from the PNG's "
                 "record; each flag given changes that one setting (--seed 7, --steps 50).")


def steps_value(text: str | None, option: str = "--steps") -> int | str | None:
    """``"50"`` → 50; respacing strings (``fast27``, ``ddim50``, ``10,10,5``) stay strings;
    a number outside 1..10000 is a one-line error naming ``option``."""
    if text is None:
        return None
    text = text.strip()
    if plain_number(text, int):  # ASCII digits: not ٣ or full-width ３ (\d takes them)
        if not STEPS.min <= int(text) <= STEPS.max:
            raise GlidectlError(f"{option} must be {STEPS.describe()}, got {text}; pass a "
                                "number of steps such as 25 or a respacing string such as "
                                "fast27.")
        return int(text)
    return text


def _next_index(out: Path) -> int:
    """The number after the highest image number in ``out``."""
    stems = (p.stem for p in out.glob("*.png"))
    numbers = [int(m.group(1)) for s in stems if (m := re.fullmatch(r"(\d{5,})", s))]
    return max(numbers, default=-1) + 1


def _save_new(image: Any, text: dict[str, str], out: Path, name: Any, k: int) -> tuple[Path, int]:
    """Save under ``name(k)``, else the next free ``name(k + 1)``, …: never over a file,
    not even one another ``sample`` writing into the same folder has just made."""
    from ..images import save_png

    while True:
        try:
            return save_png(image, out / name(k), text, replace=False), k
        except FileExistsError:
            k += 1


def _check_inputs(sampler: str | None, upsample_sampler: str, paths: list[Path | None],
                  base: str, low_res: Path | None, out: Path) -> None:
    """Everything that can be checked before a model loads: names, files, --out."""
    from .. import plugins
    from ..errors import GlidectlError, not_a_file
    from ..out_dir import check_out_dir

    for name in (sampler, upsample_sampler):
        if name is not None:
            plugins.samplers().get(name)  # unknown name: one line with the nearest match
    for path in paths:
        if path is None or not (why := not_a_file(path)):
            continue
        if why == "does not exist":
            raise GlidectlError(f"Image file {str(path)!r} does not exist; fix the path.")
        raise GlidectlError(f"{str(path)!r} {why}; pass an image file.")
    if base == "none" and low_res is None:
        raise GlidectlError("--base none needs --low-res IMAGE to upsample.")
    from ..sampling import check_inpaint_pair, opened  # before any model loads

    check_inpaint_pair(*paths[1:])
    for path in paths:
        opened(path)  # not an image, or damaged: one sentence now, not after the models load
    check_out_dir(out, holds="the folder images are written to (00000.png, 00001.png, …)")


class _Writer:
    """Writes each finished batch as numbered PNGs with the record ``generate()`` gives each
    image (long prompts bounded) as soon as it is done, so an interrupted request keeps what
    it finished; the grid comes last. Images are kept in memory only for the grid
    (``grid``); ``only``: of a remade batch, the one image to write."""

    def __init__(self, pipe: Any, prompts: list[str], out: Path, common: dict[str, Any],
                 grid: bool = False, total: int = 0, only: int | None = None):
        self.records = {p: pipe.prompt_record(p) for p in dict.fromkeys(prompts)}
        self.prompts, self.out, self.common = prompts, out, common
        self.total, self.only, self.index = total, only, -1
        self.next: int | None = None  # the number the next image tries
        self.keep = grid
        self.images: list[Any] = []
        self.written: list[Path] = []

    def add(self, batch: list[Any]) -> None:
        from ..images import png_text

        if self.next is None:
            from ..atomic import remove_stale_temps

            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.out)  # what a killed sample left; never a live one's
            self.next = _next_index(self.out)
        for image in batch:
            self.index += 1
            if self.only is not None and self.index != self.only:
                continue
            params = json.loads(image.info["parameters"])  # generate()'s own record
            path, number = _save_new(image, png_text(params), self.out, "{:05d}.png".format,
                                     self.next)
            self.next = number + 1
            self.written.append(path)
            if self.keep:
                self.images.append(image)

    @property
    def wanted(self) -> int:
        """Images the request writes."""
        return self.total if self.only is None else 1

    def grid(self, seed: int) -> Path:
        """``grid-<first image's number>.png`` (``-2``, … after it when that is taken); images
        under 64 px are enlarged (nearest, by a whole factor) so a small model's grid can be
        seen, as in eval's and training's grids."""
        from ..images import enlarge, make_grid

        short = [self.records[p]["prompt"] for p in self.prompts]
        text = {"prompts": json.dumps(short), "seed": str(seed),
                "parameters": json.dumps({"prompts": short, "seed": seed, **self.common})}
        stem = f"grid-{self.written[0].stem}"
        return _save_new(make_grid([enlarge(im) for im in self.images]), text, self.out,
                         lambda k: f"{stem}-{k}.png" if k > 1 else f"{stem}.png", 1)[0]


def register(app: typer.Typer) -> None:
    @app.command("sample")
    def sample_command(
        ctx: typer.Context,
        prompts: list[str] | None = typer.Argument(
            None, show_default=False, help="Prompt(s); each gives --n images (with "
            "--from-png: instead of the one the PNG records)."),
        sampler: str | None = typer.Option(None, "--sampler", help=SAMPLER_HELP),
        steps: str | None = typer.Option(None, "--steps", help=STEPS_HELP),
        schedule: str | None = typer.Option(None, "--schedule", help=SCHEDULE_HELP),
        guidance: float | None = typer.Option(None, "--guidance", help=GUIDANCE_HELP),
        guidance_interval: str | None = typer.Option(None, "--guidance-interval", help="Guide "
                                                     "only for σ in LO,HI (e.g. 0.3,5)."),
        guidance_rescale: float = typer.Option(0.0, "--guidance-rescale", help="Rescale the "
                                               "guided x0 to the conditional std, φ in [0, 1]."),
        dynamic_threshold: float | None = typer.Option(None, "--dynamic-threshold", help="Clip "
                                                       "x0 at this percentile of |x0| (Imagen: "
                                                       "99.5) instead of at 1."),
        eta: float | None = typer.Option(None, "--eta", help="Noise amount for samplers "
                                         "that take η (ddim, euler_a, dpm++2s_a and the SDE "
                                         "samplers)."),
        grey: bool | None = typer.Option(None, "--grey/--no-grey", help=GREY_HELP),
        n: int = typer.Option(1, "--n", "-n", help="Images per prompt."),
        batch_size: int = typer.Option(D.BATCH_SIZE, "--batch-size", "-b",
                                       help="Images per forward."),
        seed: int = typer.Option(0, "--seed", help="Image i (of all) uses seed + i."),
        base: str = typer.Option("openai:base", "--base", help="Base model: openai:base, a "
                                 ".pt/.safetensors file or a run folder ('none' with "
                                 "--low-res); with --lora, the base the first base-model "
                                 "adapter records."),
        upsampler: str = typer.Option("auto", "--upsampler", help="Upsampler model spec, "
                                      "'none', or 'auto' (OpenAI's for OpenAI's base)."),
        upsample_sampler: str = typer.Option(
            D.UPSAMPLE_SAMPLER, "--upsample-sampler", "--up-sampler", help="Upsampler sampler."),
        upsample_steps: str | None = typer.Option(
            None, "--upsample-steps", "--up-steps",
            help=f"Upsampler steps, or a respacing string on respaced steps (default: "
            f"{D.UPSAMPLE_STEPS} on GLIDE's respaced steps, else {D.UPSAMPLE_SIGMA_STEPS})."),
        upsample_schedule: str | None = typer.Option(
            None, "--upsample-schedule", "--up-schedule", help="Upsampler σ schedule (default, "
            "or auto: the upsample sampler's own; 'respaced' runs a respacing string such as "
            "fast27)."),
        upsample_guidance: float | None = typer.Option(
            None, "--upsample-guidance", "--up-guidance",
            help="Upsampler guidance (default none)."),
        upsample_temp: float = typer.Option(
            D.UPSAMPLE_TEMP, "--upsample-temp", "--up-temp", help="Upsampler initial noise scale."),
        low_res: Path | None = typer.Option(None, "--low-res", help="Upsample this image "
                                            "instead of sampling a base image."),
        low_res_resample: str | None = typer.Option(
            None, "--low-res-resample", help="Filter that shrinks a --low-res image of another "
            "size than the upsampler's input: box or bicubic (default: the one the upsampler "
            "trained with, its data.low_res_resample)."),
        inpaint_image: Path | None = typer.Option(None, "--inpaint-image", help="Image to "
                                                  "inpaint (needs an inpaint model)."),
        inpaint_mask: Path | None = typer.Option(None, "--inpaint-mask", help="Mask image: "
                                                 "white = repaint, black = keep; one with "
                                                 "transparency: transparent = repaint."),
        sigma_max: float | None = typer.Option(
            None, "--sigma-max", help="Highest σ of every schedule but respaced, in both "
            "stages, clamped to the model's (default: the model's recommended, else "
            f"{D.SIGMA_MAX:g})."),
        quantize_t: bool = typer.Option(False, "--quantize-t", help="Round the network's "
                                        "timestep to an integer (default: fractional t)."),
        out: Path = typer.Option(Path("samples"), "--out", "-o", help="Output folder."),
        grid: bool = typer.Option(False, "--grid", help="Also write a grid of all images."),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
        precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
        compile_: bool = typer.Option(False, "--compile", help="torch.compile the networks "
                                      "(slow to start; pays off over many images on a GPU)."),
        vocab_dir: str | None = typer.Option(None, "--vocab-dir", help="GPT-2 vocabulary "
                                             "folder (encoder.json, vocab.bpe)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        lora: list[str] | None = typer.Option(None, "--lora", help="LoRA adapter PATH[:SCALE] "
                                              "(repeatable; goes onto the model of its kind)."),
        from_png: Path | None = typer.Option(None, "--from-png", help=FROM_PNG_HELP),
    ) -> None:
        """Generate images for PROMPT(s) with a GLIDE model (and its upsampler)."""
        given = {p.name for p in typed(ctx)}
        params = dict(ctx.params)
        remake, notes = None, []
        if from_png is not None:
            from ..remake_records import read_remake

            remake = read_remake(from_png)
            notes = remake.apply(params, given)
        elif not prompts:
            raise GlidectlError("Give a PROMPT to sample (or --from-png IMAGE.png to make a "
                                "glidectl PNG's image again).")
        params["prompts"] = list(params["prompts"])
        _sample(ctx, given, remake, notes, **params)


def _sample(
    ctx: typer.Context, given_names: set[str], remake: Any, remake_notes: list[str], *,
    prompts: list[str], sampler: str | None, steps: str | None, schedule: str | None,
    guidance: float | None, guidance_interval: str | None, guidance_rescale: float,
    dynamic_threshold: float | None, eta: float | None, grey: bool | None, n: int,
    batch_size: int, seed: int,
    base: str, upsampler: str, upsample_sampler: str, upsample_steps: str | None,
    upsample_schedule: str | None, upsample_guidance: float | None, upsample_temp: float,
    low_res: Path | None, low_res_resample: str | None, inpaint_image: Path | None,
    inpaint_mask: Path | None, sigma_max: float | None, quantize_t: bool, out: Path,
    grid: bool, device: str, precision: str, compile_: bool, vocab_dir: str | None,
    quiet: bool, lora: list[str] | None, from_png: Path | None,
) -> None:
    """The sample command with its parameters resolved (a PNG's record under the flags)."""
    from rich.console import Console
    from rich.markup import escape

    from ..devices import Precision, check_precision
    from ..errors import GlidectlError
    from ..pipeline import GlidePipeline, resolve_upsampler
    from ..pipeline_settings import eta_unused
    from ..ranges import check_seed_span

    err = Console(stderr=True)
    check_precision(precision)
    check_seed_span("--seed", seed, n * len(prompts))
    from ..samplers.guidance import check_guidance_tools, parse_interval

    interval = parse_interval(guidance_interval) if guidance_interval else None
    check_guidance_tools(interval, guidance_rescale, dynamic_threshold)
    base_steps = steps_value(steps)
    up_steps = steps_value(upsample_steps, "--upsample-steps")
    from ..lora import base_for_loras, parse_lora_spec
    from ..model_cost import check_models

    for spec in lora or ():
        parse_lora_spec(spec)  # a bad scale: one sentence before any model loads
    base_note = None
    if lora and low_res is None and "base" not in given_names and not (
            remake and "base" in remake.values):
        base, base_note = base_for_loras(lora, base)
    _check_inputs(sampler, upsample_sampler, [low_res, inpaint_image, inpaint_mask],
                  base, low_res, out)
    if low_res_resample is not None:
        from ..sampling import resample_word

        low_res_resample = resample_word(low_res_resample, "--low-res-resample")
    base_spec = None if base == "none" or low_res is not None else base
    up_spec = resolve_upsampler(base, upsampler)
    if low_res is not None and up_spec is None:
        raise GlidectlError("--low-res needs an upsampler: pass --upsampler SPEC.")
    # nothing is said about a run that cannot start
    check_models(base_spec, up_spec, alone=low_res is not None)
    if base_note:
        err.print(base_note, markup=False, highlight=False, soft_wrap=True)
    given = [p.opts[0] for p in typed(ctx)]
    unused = [flag for flag in given if flag.startswith("--upsample-")]
    if unused and not up_spec:
        err.print(f"[yellow]Warning:[/] {', '.join(unused)} not used: this run has no "
                  "upsampler.", highlight=False, soft_wrap=True)
    base_only = [flag for flag in given if flag in (
        "--sampler", "--steps", "--schedule", "--guidance", "--guidance-interval",
        "--guidance-rescale", "--dynamic-threshold")]
    if low_res is None and "low_res_resample" in given_names:
        err.print("[yellow]Warning:[/] --low-res-resample not used: there is no --low-res "
                  "image to shrink.", highlight=False, soft_wrap=True)
    if low_res is not None and base_only:
        err.print(f"[yellow]Warning:[/] {', '.join(base_only)} not used: with --low-res only "
                  "the upsampler runs (--upsample-sampler, --upsample-steps, "
                  "--upsample-schedule and --upsample-guidance set it).", highlight=False,
                  soft_wrap=True)
    if low_res is not None and base != "none" and (
            "base" in given_names or base != "openai:base"):
        err.print("[yellow]Warning:[/] --base not used: --low-res upsamples the given "
                  "image instead of a base sample.", highlight=False, soft_wrap=True)
    def say(message: str) -> None:
        err.print(message, markup=False, highlight=False, soft_wrap=True)

    for line in remake_notes:
        say(line)
    with err.status("Loading models..."):
        pipe = GlidePipeline.from_specs(base_spec, up_spec, loras=lora or (),
                                        device=device, precision=precision,
                                        compile=compile_, vocab_dir=vocab_dir)
    if remake is not None:
        remake.restore(pipe)
        say(remake.line(n))
        if "device" not in given_names and (line := remake.device_note(pipe.device.type)):
            say(line)

    given = dict(sampler=sampler, steps=base_steps,
                 schedule=schedule, guidance=guidance,
                 eta=eta, grey=grey, sigma_max=sigma_max)
    chosen = pipe.precision
    if remake is not None and "precision" not in given_names:  # not "as asked": the PNG's
        chosen = Precision(chosen.name, f"as {from_png} records")
    say(chosen.line())
    note = pipe.defaults_note(given)  # no base: the upsampler's
    if note:
        say(note)
    options = {k: v for k, v in given.items() if v is not None}  # "auto": the sampler's own
    options.update(
        quantize_t=quantize_t, upsample_sampler=upsample_sampler,
        guidance_interval=interval, guidance_rescale=guidance_rescale,
        dynamic_threshold=dynamic_threshold,
        upsample_steps=up_steps, upsample_guidance=upsample_guidance,
        upsample_temp=upsample_temp, upsample_schedule=upsample_schedule,
    )
    base_opts, up_opts, _ = pipe.stages(**options)
    # an unusable schedule or bespoke file: one sentence now, before the progress bar
    pipe.model_calls(1, 1, base_opts, up_opts, low_res is not None)
    why = eta_unused(base_opts) if base_spec else "no base stage runs"
    def warn(message: str) -> None:  # as written: a prompt's or a path's "[red]" is no markup
        err.print(f"[yellow]Warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    if eta is not None and why:
        warn(f"--eta not used: {why}.")
    for key, why in pipe.idle_settings(base_opts, up_opts, bool(base_spec)).items():
        if key in given_names:  # set on purpose, yet no pixel changes
            warn(f"--{key.replace('_', '-')} not used: {why}.")
    for line in pipe.vocab_dir_warnings(base_stage=bool(base_spec)):
        warn(line)
    # what made the picture (a stage that did not run records nothing)
    common = pipe.request_record(base_opts, up_opts, {
        "low_res": low_res, "inpaint_image": inpaint_image, "inpaint_mask": inpaint_mask},
        batch_size, low_res_resample=low_res_resample)
    writer = _Writer(pipe, prompts, out, common, grid, n * len(prompts),
                     remake.kept if remake else None)
    progress, on_progress = counting_bar("sampling", err, unit="model calls", disable=quiet)
    try:
        with progress:
            pipe.generate(
                prompts, n=n, seed=seed, batch_size=batch_size, low_res=low_res,
                low_res_resample=low_res_resample,
                inpaint_image=inpaint_image, inpaint_mask=inpaint_mask,
                progress=on_progress, on_images=writer.add, keep_images=False,
                warn=warn,
                **options,
            )
    except KeyboardInterrupt:
        for path in writer.written:
            typer.echo(str(path))
        say(f"Interrupted: {len(writer.written)} of {writer.wanted} images were "
            f"written{f' to {str(out)!r}' if writer.written else ''}; no grid.")
        raise typer.Exit(130) from None
    except WriteError as exc:  # a full disk: say what was kept, as Ctrl-C does
        for path in writer.written:
            typer.echo(str(path))
        raise WriteError(f"{str(exc).rstrip('.')}; {len(writer.written)} of "
                         f"{writer.wanted} images were written before it.") from None
    paths = list(writer.written)
    try:  # the grid is on disk before the list: a reader that stops early (`| head -1`)
        if grid:  # cut the list short and the grid was never written
            paths.append(writer.grid(seed))
    except WriteError as exc:  # a full disk at the grid: the images are whole, and said so
        raise WriteError(f"{str(exc).rstrip('.')}; {len(writer.written)} of "
                         f"{writer.wanted} images were written before it.") from None
    finally:  # the images are listed even when the grid cannot be written
        for path in paths:
            typer.echo(str(path))
