"""``glidectl fit-steps MODEL``: a schedule file (σ's, or a bespoke solver) fitted to a model."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .. import sampling_defaults as D
from ..errors import GlidectlError, cause
from ..prompt_files import read_prompt_file
from .checks import typed

if TYPE_CHECKING:
    from ..atomic import HeldLock

METHOD_HELP = ("descent: move one sampler's σ's to cut its error (use the file with that "
               "sampler); gits: GITS dynamic programming on the reference path (any sampler, "
               "fast); bespoke: the descent, then a bespoke solver's coefficients fitted "
               "through the model (--sampler bespoke, only at the fitted --calls; slowest, "
               "most accurate).")


def read_prompts(prompts: list[str], prompts_file: Path | None,
                 what: str = "prompts") -> list[str]:
    """``--prompt`` values, then the lines of ``--prompts FILE`` (blank lines and ``#``
    comments skipped)."""
    found = [p for p in prompts if p.strip()]
    if prompts_file is not None:  # a file named but empty is a mistake, --prompt or not
        label = "Prompts file" if what == "prompts" else f"The {what} file"
        if not (lines := read_prompt_file(prompts_file, label, empty_ok=True)):
            raise GlidectlError(f"{label} {str(prompts_file)!r} holds no prompt (only blank "
                                "lines and # comments); write one per line.")
        found += lines
    if not found:
        raise GlidectlError(
            "fit-steps needs tuning prompts: pass --prompts FILE (one per line) or --prompt "
            "TEXT, like the prompts you will sample.")
    return found


def in_turn(texts: list[str], n: int) -> list[str]:
    """n prompts: ``texts`` in turn, repeated as often as needed."""
    return (texts * -(-n // len(texts)))[:n]


def refuse_lora(model: str) -> None:
    """One sentence, before anything is written, for a LoRA adapter or LoRA run given as
    MODEL: loading's own sentence suggests --lora, which fit-steps does not take."""
    from ..glide.loading import LoraRunError, resolve_spec
    from ..lora.files import names_adapter

    what = "a LoRA adapter" if names_adapter(model) else None
    if what is None and Path(model).is_dir():
        try:
            resolve_spec(model, download=False)
        except LoraRunError:
            what = "a LoRA run (its checkpoints hold adapters)"
        except GlidectlError:  # not a run at all: loading says so, as for any model
            pass
    if what is not None:
        quoted = shlex.quote(model)
        raise GlidectlError(
            f"{model!r} is {what}, not a model, and fit-steps takes no --lora; fold it into "
            f"its base first with: glidectl lora merge {quoted} -o merged.safetensors, then "
            "fit (and sample) merged.safetensors.")


def default_out(model: str) -> Path:
    """RUN/schedule.json for a run folder (or its checkpoints/); otherwise, a checkpoint
    folder (which training prunes) included, a path must be given."""
    from ..runs import run_holding

    held = run_holding(model) if Path(model).is_dir() else None
    if held is not None and held[1] == "checkpoint":
        suggested = held[0] / f"schedule-{Path(model).name}.json"
        raise GlidectlError(f"Pass --out FILE.json (such as {str(suggested)!r}): {model!r} is "
                            "a checkpoint folder, which training deletes when it prunes old "
                            "checkpoints, so the schedule file is not kept there.")
    if held is not None:  # the run, or its checkpoints/ (which follows the run's latest)
        return held[0] / "schedule.json"
    if Path(model).is_dir():
        return Path(model) / "schedule.json"
    from ..glide.loading import resolve_spec

    resolve_spec(model, download=False)  # a model that is not there: that sentence first
    raise GlidectlError(f"Pass --out FILE.json: {model!r} is not a run folder to keep the "
                        "schedule file in.")


def unused_flags(given: set[str], method: str, start: Path | None,
                 check_images: int | None) -> list[str]:
    """A warning for each of the ``given`` flags this fit does not use: the bespoke ones
    without ``--method bespoke``, ``--rounds`` where no descent runs (gits; bespoke from
    ``--start``), ``--check-prompts`` with ``--check-images 0``."""
    notes = []
    bespoke = [f for f in ("--evals", "--fixed-sigmas") if f in given]
    if bespoke and method != "bespoke":
        notes.append(f"{', '.join(bespoke)} not used: only --method bespoke fits a bespoke "
                     f"solver (this fit is --method {method}).")
    if "--rounds" in given and (method == "gits" or (method == "bespoke" and start)):
        why = ("--method gits runs no descent" if method == "gits" else
               "--method bespoke from --start fits from the file's σ's without a descent")
        notes.append(f"--rounds not used: {why}.")
    if "--check-prompts" in given and check_images == 0:
        notes.append("--check-prompts not used: --check-images 0 skips the held-out check.")
    return [f"Warning: {note}" for note in notes]


def register(app: typer.Typer) -> None:
    @app.command("fit-steps")
    def fit_steps_command(
        ctx: typer.Context,
        model: str = typer.Argument(..., help="Base model: a run folder, a .safetensors/.pt "
                                    "file or openai:base."),
        calls: list[int] = typer.Option([10], "--calls", help="Model calls to fit for; repeat "
                                        "for several (--calls 10 --calls 15)."),
        method: str = typer.Option("descent", "--method", help=METHOD_HELP),
        sampler: str = typer.Option("unipc", "--sampler", help="The sampler to fit for "
                                    "(bespoke: the one its fit starts from)."),
        prompts: list[str] = typer.Option([], "--prompt", help="A tuning prompt (repeat)."),
        prompts_file: Path | None = typer.Option(None, "--prompts", help="Tuning prompts, one "
                                                 "per line."),
        images: int = typer.Option(24, "--images", help="Tuning images (the prompts in "
                                   "turn)."),
        guidance: float | None = typer.Option(None, "--guidance", help="Guidance scale to fit "
                                              "at (default: the model's, else "
                                              f"{D.BASE_GUIDANCE:g})."),
        grey: bool | None = typer.Option(None, "--grey/--no-grey", help="Fit to the ODE of "
                                         "grey sampling (x0 predictions projected onto grey), "
                                         "as sample --grey draws (default: the model's "
                                         "recommended, else colour)."),
        seed: int = typer.Option(1, "--seed", help="Seed of the tuning noise."),
        check_images: int | None = typer.Option(None, "--check-images", help="Score each fit "
                                                "on this many images from held-out noise "
                                                "(seed + 1) beside DDIM-50 (default: "
                                                "--images; 0: no check)."),
        check_prompts: Path | None = typer.Option(None, "--check-prompts", help="Prompts of "
                                                  "the held-out check, one per line "
                                                  "(default: the tuning prompts)."),
        reference_steps: int = typer.Option(500, "--reference-steps", help="dpm++3m Karras "
                                            "steps of the reference solution."),
        rounds: int = typer.Option(10, "--rounds", help="Descent rounds."),
        evals: int = typer.Option(150, "--evals", help="Bespoke: L-BFGS evaluations (each one "
                                  "a pass through the model with gradients)."),
        fixed_sigmas: bool = typer.Option(False, "--fixed-sigmas", help="Bespoke: keep the "
                                          "descent's σ's."),
        start: Path | None = typer.Option(None, "--start", help="Start from this schedule "
                                          "file's σ's (and bespoke coefficients) instead of a "
                                          "descent: a refit (kept only where it beats "
                                          "FILE's solver on the held-out check)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Schedule file to write "
                                        "(default: RUN/schedule.json)."),
        overwrite: bool = typer.Option(False, "--overwrite", "--force",
                                       help="Replace an existing --out."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
        vocab_dir: str | None = typer.Option(None, "--vocab-dir", help="GPT-2 vocabulary "
                                             "folder (encoder.json, vocab.bpe)."),
    ) -> None:
        """Fit sampling steps to MODEL's own ODE for fewer model calls: a schedule file for
        `glidectl sample --schedule FILE`."""
        from ..atomic import remove_stale_temps
        from ..devices import pick_device
        from ..samplers.tuned import read_schedule_file
        from ..step_fitting import check_method

        method, sampler = check_method(method, sampler, calls, reference_steps, start)
        given = {p.opts[0] for p in typed(ctx)}
        for note in unused_flags(given, method, start, check_images):
            typer.echo(note, err=True)
        refuse_lora(model)
        texts = read_prompts(prompts, prompts_file)
        checked = (read_prompts([], check_prompts, "--check-prompts") if check_prompts
                   else texts)
        path = out or default_out(model)
        check_out(path, overwrite, [p for p in (prompts_file, check_prompts) if p])
        if start is not None:
            read_schedule_file(start)  # one sentence if it is not a schedule file
            check_start(start, path)
        device = pick_device(device)
        lock = lock_out(path)  # held until the fit ends: one fit writes FILE at a time
        try:  # again under the lock: a fit that began, wrote FILE and ended since
            check_free(path, overwrite)  # check_out would else be written over
        except GlidectlError:
            if lock is not None:
                lock.close()
            raise
        # an existing file is replaced only once every count is fitted; until then the
        # counts finished go to FILE.partial.json beside it
        partial = partial_path(path)
        for name in (path.name, partial.name):  # what a killed fit left; the folder is the user's
            remove_stale_temps(path.parent, name)
        write_to = partial if path.exists() else path
        earlier = _mtime(write_to)  # a FILE.partial.json an earlier stopped fit left
        try:
            _fit(model, calls, method, sampler, texts, images, guidance, grey, seed,
                 reference_steps, path, write_to, device, vocab_dir,
                 images if check_images is None else check_images, checked,
                 dict(rounds=rounds, evals=evals, fixed_sigmas=fixed_sigmas,
                      start=str(start) if start else None))
        except (KeyboardInterrupt, GlidectlError) as exc:
            said = True
            if write_to != path and _mtime(write_to) not in (None, earlier):
                typer.echo(f"stopped: {str(path)!r} is unchanged; the counts fitted so far "
                           f"are in {str(write_to)!r}{_lacking(write_to)}; run the same "
                           "command again to fit every count.", err=True)
            elif write_to == path and _mtime(path) is not None:  # a new file, part-written
                typer.echo(f"stopped: the counts fitted so far are in {str(path)!r} (usable "
                           f"with --schedule{_lacking(path)}); run again with --overwrite "
                           "to fit every count.", err=True)
            else:
                said = False
            if said and isinstance(exc, KeyboardInterrupt):  # the line above ends it, exit 130
                raise typer.Exit(130) from None
            raise
        finally:
            if lock is not None:
                lock.close()


def partial_path(path: Path) -> Path:
    """FILE.partial.json beside FILE: where a fit into an existing FILE writes the counts it
    finishes until every count is fitted (FILE is replaced then)."""
    return path.with_name(path.stem + ".partial.json")


def lock_out(path: Path) -> HeldLock | None:
    """Lock ``.FILE.lock`` beside the schedule file (:func:`glidectl.atomic.lock_file`): a
    second fit-steps into the same FILE stops here, before it loads a model, instead of
    both writing FILE and FILE.partial.json."""
    from ..atomic import lock_file

    return lock_file(_lock_path(path), _busy(path))


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _busy(path: Path) -> str:
    return (f"--out {str(path)!r} is being written by another glidectl fit-steps; wait for it "
            "to finish (or stop it), or pass another --out.")


def _lacking(path: Path) -> str:
    """", not 40 steps": the step counts a stopped fit's file records it did not fit."""
    import json

    from ..samplers.tuned import unfitted_counts

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    missing = unfitted_counts(data) if isinstance(data, dict) else []
    return f", not {', '.join(map(str, missing))} steps" if missing else ""


def _mtime(path: Path) -> int | None:
    """``path``'s modification time in ns, None if it does not exist."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def check_free(path: Path, overwrite: bool) -> None:
    """One sentence unless ``path`` may be written: not there, or ``overwrite`` (a stopped
    fit's file, or a refit's FILE.partial.json beside it, said as such)."""
    if path.exists() and not overwrite:
        from ..samplers.tuned import stopped_fit_message, stopped_refit_clause

        stopped = stopped_fit_message(path)
        partial = partial_path(path)
        if partial.is_file():  # a refit (--overwrite) stopped: FILE whole, its counts here
            clause = stopped_refit_clause(partial)
            use = " (usable with --schedule)" if "holds σ's" in clause else ""
            raise GlidectlError(
                f"{stopped or f'{str(path)!r} exists'}, and {clause}{use}; pass --overwrite "
                f"to fit every count again (it writes over {partial.name!r}: move that away "
                "to keep it), or another --out.")
        if stopped:
            raise GlidectlError(f"{stopped}; pass --overwrite to fit every count again (a "
                                "fit cannot add counts to a file), or another --out.")
        raise GlidectlError(f"{str(path)!r} exists; pass --overwrite to replace it or "
                            "another --out.")


def check_start(start: Path, path: Path) -> None:
    """One sentence when a refit from ``start`` into ``path`` would write over its start:
    the same file, or (``path`` there) the FILE.partial.json the refit writes after each
    count while later counts read their σ's and coefficients from ``start``."""
    start = start.expanduser()
    if start.resolve() == path.resolve():
        raise GlidectlError(f"--start and --out are the same file ({str(path)!r}); write the "
                            "refit to another --out, so the start is kept.")
    if path.exists() and start.resolve() == partial_path(path).resolve():
        raise GlidectlError(f"--start {str(start)!r} is where this refit into {str(path)!r} "
                            "writes the counts it fits, over what it holds; copy it to "
                            "another name and pass that as --start, so the start is kept.")


def check_out(path: Path, overwrite: bool, inputs: list[Path]) -> None:
    """One sentence, before any model loads, unless ``path`` can take the schedule file
    (:func:`check_free` is asked again once FILE's lock is held)."""
    if path.suffix.lower() != ".json":
        raise GlidectlError(f"--out {str(path)!r} must end in .json: --schedule reads a "
                            "schedule file by that name.")
    if path.is_dir():
        raise GlidectlError(f"--out {str(path)!r} is a folder; name a FILE.json in it.")
    from ..runs import pruned_step_dir

    if (step_dir := pruned_step_dir(path)) is not None:  # the fit would be pruned with it
        raise GlidectlError(f"--out {str(path)!r} is in checkpoint folder {step_dir!r}, which "
                            "training deletes when it prunes old checkpoints; write the "
                            "schedule file outside checkpoints/ (e.g. RUN/schedule.json).")
    from ..atomic import is_locked, probe_writable, refuse_special

    refuse_special(path, "--out")  # before the fit: its file is renamed over FILE

    if is_locked(_lock_path(path)):  # its file is half-fitted, not a stopped fit's
        raise GlidectlError(_busy(path))
    check_free(path, overwrite)
    if any(path.resolve() == p.resolve() for p in inputs):
        raise GlidectlError(f"--out {str(path)!r} is a prompts file of this fit; write the "
                            "schedule file to another path.")
    if not path.parent.is_dir():
        above = next((p for p in path.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise GlidectlError(f"--out {str(path)!r} is under {str(above)!r}, a file; pick "
                                "a path in a folder.")
        raise GlidectlError(f"The folder of --out {str(path)!r} does not exist; create it "
                            "or pick another path.")
    try:  # the folder must take new files (the file is written atomically beside itself)
        probe_writable(path.parent)
    except OSError as exc:
        raise GlidectlError(f"Cannot write --out {str(path)!r} ({exc.strerror or cause(exc)}); "
                            "pick a writable folder.") from None


def _fit(model_spec: str, calls: list[int], method: str, sampler: str, texts: list[str],
         images: int, guidance: float | None, grey: bool | None, seed: int,
         reference_steps: int, path: Path,
         write_to: Path, device: str, vocab_dir: str | None, check_images: int,
         checked: list[str], options: dict) -> None:
    from ..devices import pick_precision
    from ..glide.checkpoints import state_sha256
    from ..glide.loading import load_model, read_resolved
    from ..pipeline import file_sha256
    from ..sampling import tokenizer_for
    from ..step_fitting import (
        fit_steps,
        gits_sampler,
        model_grey,
        model_guidance,
        reference,
        require_base,
        steps_for_calls,
    )
    from ..tokenizer import FLAG_VOCAB, vocab_named

    def read(path: Path) -> tuple[Any, str, float, bool]:  # all of one file: a run's latest moves
        return (load_model(path, device=device).eval(), file_sha256(path),
                model_guidance(str(path), guidance), model_grey(str(path), None))

    _, (model, model_sha256, scale, recommends_grey) = read_resolved(model_spec, read)
    grey = recommends_grey if grey is None else grey  # as sample decides it
    require_base(model, model_spec)
    if vocab_dir and model.options.tokenizer != "gpt2":  # as sample says it
        typer.echo("Warning: --vocab-dir not used: the base model reads UTF-8 bytes "
                   "(tokenizer \"byte\"), not GPT-2's vocabulary.", err=True)
        vocab_dir = None
    with vocab_named(*FLAG_VOCAB):  # a vocabulary that is not there: said before the fit
        tokenizer_for(model, vocab_dir)
    prompts = in_turn(texts, images)
    use = ("bespoke" if method == "bespoke" else gits_sampler(sampler, calls)
           if method == "gits" else sampler)  # the sampler the file is sampled with
    shade = ", grey" if grey else ""
    typer.echo(f"reference: {reference_steps} dpm++3m steps for {images} tuning images "
               f"(guidance {scale:g}{shade}) on {device}", err=True)
    # the ODE sample runs: x0 clipped as the sampler the file is used with clips it
    ode = dict(grey=grey, sampler="bespoke" if method == "bespoke" else sampler,
               vocab_dir=vocab_dir)
    target = reference(model, prompts, scale, seed, reference_steps,
                       trajectory=method == "gits", **ode)
    held_out = None
    if check_images:
        typer.echo(f"held-out reference: {check_images} images from noise seed {seed + 1}"
                   f"{'' if checked == texts else ' and the --check-prompts'}", err=True)
        # checked on the ODE of the sampler the file is sampled with (gits: gits_sampler)
        held_out = reference(model, in_turn(checked, check_images), scale, seed + 1,
                             reference_steps, **{**ode, "sampler": use})
    fit_steps(target, calls, method, sampler, write_to,
              f"{model_spec} (guidance {scale:g}{shade}, {images} tuning images from "
              f"{len(set(prompts))} prompts, noise seed {seed}, reference {reference_steps} "
              "dpm++3m Karras steps)", log=lambda m: typer.echo(m, err=True), held_out=held_out,
              model_sha256=model_sha256, guidance=scale,
              weights_sha256=state_sha256(model.state_dict()), **options)
    if write_to != path:
        os.replace(write_to, path)
    steps = calls[0] if method == "gits" else steps_for_calls(sampler, calls[0])
    # the fit follows the fp32 ODE; sample's auto precision may be bf16 on this device
    auto = pick_precision("auto", device)
    fp32 = "" if auto.name == "fp32" else " --precision fp32"
    typer.echo(str(path))
    line = shlex.join(["--base", model_spec, "--sampler", use, "--steps", str(steps),
                       "--schedule", str(path), "--guidance", f"{scale:g}"]
                      + (["--vocab-dir", vocab_dir] if vocab_dir else [])
                      # sample's default is the model's recommendation: say it if not that
                      + (["--grey"] if grey else ["--no-grey"] if recommends_grey else []))
    typer.echo(f"sample with: glidectl sample PROMPT {line}{fp32}", err=True)
    if fp32:
        typer.echo(f"(fitted in fp32; without --precision fp32, sample computes in "
                   f"{auto.name} here: {auto.reason})", err=True)
