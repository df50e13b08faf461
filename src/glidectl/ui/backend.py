"""What the web UI does on "Generate": pick listed models, load them once, sample, save PNGs.

Kept free of gradio so it is tested directly in Python.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GlidectlError, canonical_word, flags_named, is_own_warning, outside_commands
from ..ranges import (
    FLAGS,
    GUIDANCE,
    SEED_OR_RANDOM,
    STEPS,
    Range,
    check,
    check_seed_span,
    plain_number,
)
from .models import (
    KEEP_MODELS,
    NONE_LABEL,
    ModelCache,
    ModelChoice,
    _release,
    base_choices,
    checkpoint_now,
    list_models,
    lora_choices,
    lora_grey,
    memory_use,
    pick,
    upsampler_choices,
)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# shown for models that record no preview prompts (OpenAI's, untrained ones)
EXAMPLE_PROMPTS = [
    "an oil painting of a corgi wearing a party hat",
    "a surrealist dream-like oil painting of a mountain lake",
    "a red circle on a white background",
    "a blue square on a black background",
]
MAX_IMAGES = 16
#: The page's number boxes and the numbers each takes (``sample``'s ranges for steps, guidance
#: and ``lora merge``'s for the scale): the boxes pass on whatever is typed, and ``generate``
#: refuses a number outside in one sentence (a gradio slider, or a number box with bounds,
#: would set it to the nearest end without a word).
BOXES: dict[str, Range] = {"Images per run": Range(1, MAX_IMAGES), "Base steps": STEPS,
                           "Guidance": GUIDANCE, "LoRA scale": FLAGS["--scale"]}
OWN_SCHEDULE = "(default)"  # the model's recommended schedule, else the sampler's own
RESPACED = "respaced"  # GLIDE's own timesteps, not a registered σ schedule
FITTED_SCHEDULE = "fitted (schedule.json)"  # RUN/schedule.json of a run folder, by fit-steps
STOP_WAIT_S = 60.0  # how long closing waits for a generation to reach its next model call


class UiStopped(Exception):
    """The UI is stopping (Ctrl-C, SIGTERM): a generation under way ends at its next model
    call, so that no sampling thread is still in torch when the interpreter exits."""


def _stoppable(method: Callable[..., UiResult]) -> Callable[..., UiResult]:
    """``method`` counted as work under way, which :meth:`UiBackend.close` waits for;
    refused with :class:`UiStopped` once the UI is stopping."""

    @functools.wraps(method)
    def counted(self: UiBackend, *args: Any, **kwargs: Any) -> UiResult:
        with self._work:
            if self._stopping.is_set():
                raise UiStopped("The web UI is stopping.")
            self._running += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            with self._work:
                self._running -= 1
                self._work.notify_all()

    return counted


@dataclass
class UiResult:
    """One Generate click: the PNG files written, their seeds, the settings used and the
    warnings ``glidectl sample`` would print (a schedule file fitted to other weights; the
    page says them with its controls, :func:`in_page_words`).
    ``unsaved``: the images after the written ones that could not be written (a full
    disk): shown in the page all the same, with a warning."""

    files: list[Path]
    seeds: list[int]
    seed: int
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    unsaved: list[Any] = field(default_factory=list)


class UiBackend:
    """Models folder + model cache + output folder; ``generate`` is what the button runs.
    ``keep_models``: how many loaded pipelines (the ones used last) stay in memory."""

    def __init__(self, models_dir: str | Path | None = None, device: str = "auto",
                 output_dir: str | Path | None = None, precision: str = "auto",
                 keep_models: int = KEEP_MODELS, vocab_dir: str | None = None):
        self.models_dir = Path(models_dir).expanduser() if models_dir else None
        self.vocab_dir = vocab_dir  # a GPT-2 model's vocabulary folder, as sample --vocab-dir
        self.device = device
        self.precision = precision
        self._temporary = output_dir is None
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="glidectl-ui-"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.cache = ModelCache(keep_models)  # (pipeline, warnings of loading) by key
        self._runs = 0
        self._stopping = threading.Event()
        self._work = threading.Condition()
        self._running = 0  # generations under way

    def close(self, wait_s: float = STOP_WAIT_S) -> None:
        """Stop a generation under way at its next model call and wait for it (at most
        ``wait_s``): a sampling thread still in torch as the interpreter exits aborts the
        process ("terminate called without an active exception"). Then remove the temp
        output folder if nothing was generated into it (images stay)."""
        self._stopping.set()
        with self._work:
            self._work.wait_for(lambda: not self._running, timeout=wait_s)
        if self._temporary:
            try:
                self.output_dir.rmdir()
            except OSError:  # it holds images, or is gone
                pass

    # ----------------------------------------------------------------- choices
    def _all(self) -> tuple[list[ModelChoice], list[ModelChoice]]:
        return list_models(self.models_dir), lora_choices(self.models_dir)

    def choices(self) -> tuple[list[str], list[str], list[str]]:
        """Labels for the base, upsampler and LoRA dropdowns."""
        models, loras = self._all()
        return ([c.label for c in base_choices(models)],
                [c.label for c in upsampler_choices(models)], [c.label for c in loras])

    def memory(self) -> str:
        from ..devices import pick_device

        return memory_use(pick_device(self.device))

    def recommended(self, base: str | None) -> dict[str, Any]:
        """The listed base model's recommended sampling (and preview prompts), read from its
        checkpoint metadata without loading it; {} for OpenAI's models, unknown labels and
        a recommendation that cannot be read (Generate says why)."""
        return _recommended(self._base(base))

    def recommends_grey(self, base: str | None, upsampler: str | None = None,
                        lora: str | None = None) -> bool:
        """Whether the listed base model, upsampler or LoRA recommends grey pictures (it
        was trained on greyscale data): both stages then draw grey, as ``glidectl sample``
        does."""
        from ..pipeline import with_adapter_grey

        models, loras = self._all()
        try:
            lora_c = pick(loras, lora, "LoRA")
        except GlidectlError:
            lora_c = None
        adapter_grey = lora_c is not None and lora_grey(lora_c.spec)
        if with_adapter_grey(self.recommended(base), adapter_grey).get("grey") is True:
            return True
        try:
            up = pick(upsampler_choices(models), upsampler, "upsampler")
        except GlidectlError:
            return False
        return _recommended(up).get("grey") is True

    def _base(self, base: str | None) -> ModelChoice | None:
        models, _ = self._all()
        try:
            return pick(base_choices(models), base, "base model")
        except GlidectlError:
            return None

    def fitted_schedule(self, base: str | None) -> Path | None:
        """The base model's fitted schedule file, ``RUN/schedule.json`` of a run folder
        (``glidectl fit-steps RUN`` writes it there), if it has one."""
        return _fitted_file(self._base(base))

    def schedule_choices(self, base: str | None) -> list[str]:
        """Labels for the schedule dropdown: the default (the model's recommended schedule,
        else the sampler's own), GLIDE's respaced timesteps, every registered schedule, and
        the base model's fitted file (``sample --schedule`` takes each)."""
        from .. import plugins

        fitted = [FITTED_SCHEDULE] if self.fitted_schedule(base) else []
        return [OWN_SCHEDULE, RESPACED, *plugins.schedules().names(), *fitted]

    def fitted_settings(self, base: str | None
                        ) -> tuple[str | None, list[int], float | None, bool | None]:
        """The sampler the base model's fitted file was fitted for, its step counts (a bespoke
        solver runs only at those), the guidance it was fitted at (None: not recorded, or
        not one the Guidance control takes) and whether it was fitted to grey sampling's ODE
        (None: not recorded); (None, [], None, None) without a readable file."""
        from ..samplers.tuned import fitted_guidance, read_schedule_file

        path = self.fitted_schedule(base)
        if path is None:
            return None, [], None, None
        try:
            data = json.loads(path.read_text())
            counts = sorted(read_schedule_file(path, data if isinstance(data, dict) else {}))
        except (GlidectlError, OSError, ValueError, RecursionError):
            return None, [], None, None
        sampler, guidance, grey = data.get("sampler"), fitted_guidance(data), data.get("grey")
        return ((sampler if isinstance(sampler, str) else None), counts,
                guidance if guidance is not None and not GUIDANCE.problem(guidance) else None,
                grey if isinstance(grey, bool) else None)

    def _schedule(self, label: str | None, base: ModelChoice) -> str | None:
        """The schedule ``generate`` passes on for a dropdown label (None: the default)."""
        from .. import plugins

        if label in (None, "", OWN_SCHEDULE):
            return None
        if label == FITTED_SCHEDULE:
            path = _fitted_file(base)
            if path is None:
                raise GlidectlError("This base model has no fitted schedule file; fit one "
                                    "with glidectl fit-steps RUN, or pick a named schedule.")
            return str(path)
        label = canonical_word(label, (RESPACED, *plugins.schedules().names()))
        if label not in (RESPACED, *plugins.schedules().names()):
            raise GlidectlError(f"Unknown schedule {label!r}; pick one the list offers.")
        return label

    def example_prompts(self, base: str | None) -> list[str]:
        """Example prompts that fit the model: its recorded preview prompts, else the
        generic ones."""
        prompts = [str(p) for p in self.recommended(base).get("prompts", []) if str(p).strip()]
        return list(dict.fromkeys(prompts))[:8] or list(EXAMPLE_PROMPTS)

    # ----------------------------------------------------------------- generation
    @flags_named()  # relabelled for the page by in_page_words
    @_stoppable
    def generate(
        self, prompt: str, n: int = 4, sampler: str | None = None,
        base_steps: int | None = None, up_steps: int | str | None = None,
        guidance: float | None = None, seed: int | str | None = -1, base: str | None = None,
        upsampler: str | None = NONE_LABEL, lora: str | None = NONE_LABEL,
        lora_scale: float = 1.0, precision: str = "auto", compile: bool = False,
        on_step: Callable[[str, int, int], None] | None = None, schedule: str | None = None,
        grey: bool | None = None,
    ) -> UiResult:
        """Sample ``n`` images of ``prompt``; image j uses seed ``seed + j``, as
        ``glidectl sample --seed SEED`` does. Unset sampling settings come from the model's
        recommendations, else the defaults of ``glidectl sample``. ``schedule`` is a label
        of :meth:`schedule_choices`; ``seed`` -1 or None (an empty box) draws one; the page's
        box sends text, read exactly (a browser's numbers round seeds above 2**53). ``grey``
        None: the model's recommendation.

        Only models listed by :meth:`choices` can be named (no free-form paths).
        """
        from .. import plugins
        from ..devices import check_precision, pick_device, pick_precision

        if not prompt or not prompt.strip():
            raise GlidectlError("Type a prompt first.")
        for label, value in (("Images per run", n), ("Base steps", base_steps)):
            if isinstance(value, float) and not value.is_integer():  # typed in the box
                raise GlidectlError(f"{label} must be a whole number; got {value:g}.")
        n = int(n) if isinstance(n, float) else n
        check("Images per run", n, BOXES["Images per run"])
        precision = check_precision(precision, "precision")
        if sampler:
            plugins.samplers().get(sampler)  # unknown name → one clear error
        up_steps = _steps(up_steps)
        seed = _seed(seed)
        for label, value in (("Guidance", guidance), ("Base steps", base_steps),
                             ("LoRA scale", lora_scale)):
            check(label, value, BOXES[label])
        check("Upsampler steps", up_steps if isinstance(up_steps, int) else None, STEPS)
        check_seed_span("Seed", seed, n)  # a drawn one (-1, None) stays below 2**31
        models, loras = self._all()
        base_c = pick(base_choices(models), base, "base model")
        if base_c is None:
            raise GlidectlError("Pick a base model (none is available in the models folder).")
        up_c = pick(upsampler_choices(models), upsampler, "upsampler")
        lora_c = pick(loras, lora, "LoRA")
        schedule = self._schedule(schedule, base_c)
        seed = secrets.randbelow(2**31) if seed is None or seed == -1 else int(seed)
        seeds = [seed + j for j in range(n)]
        # `auto` and the precision it picks here load one pipeline, not two
        computes = pick_precision(precision, str(pick_device(self.device))).name
        key = (base_c.spec, up_c.spec if up_c else None,
               (lora_c.spec, float(lora_scale)) if lora_c else None, computes, compile,
               self.device)
        # a run folder's newest checkpoint (its training may have written one since), a
        # file's or adapter folder's stat (exported again under its name since)
        version = tuple(checkpoint_now(c.spec) if c else None for c in (base_c, up_c, lora_c))
        t0 = time.perf_counter()
        pipe, load_notes = self._in_memory(n, lambda: self.cache.get(key, lambda: self._load(
            base_c, up_c, lora_c, lora_scale, precision, compile), version))
        load_s = time.perf_counter() - t0
        given = {"sampler": sampler or None, "steps": int(base_steps) if base_steps else None,
                 "guidance": guidance, "upsample_steps": up_steps if up_c else None,
                 "schedule": schedule, "grey": grey}
        base_opts, up_opts, _ = pipe.stages(**{k: v for k, v in given.items() if v is not None})
        t1 = time.perf_counter()
        text = prompt  # as typed: sample and generate() read a trailing space too
        notes = list(load_notes)

        def step(stage: str, done: int, total: int) -> None:
            if self._stopping.is_set():  # close(): end here, not in torch at exit
                raise UiStopped("The web UI is stopping; these images were not finished.")
            if on_step is not None:
                on_step(stage, done, total)

        images = self._in_memory(n, lambda: pipe.generate(
            text, n=n, seeds=seeds, batch_size=n, on_step=step, warn=notes.append,
            **{k: v for k, v in given.items() if v is not None}))
        sample_s = time.perf_counter() - t1
        settings = {  # keyed as glidectl sample records its PNGs, to make them again
            **pipe.prompt_record(text), "seed": seed, "image_seeds": seeds,
            **pipe.request_record(base_opts, up_opts, {}, n),
            "base": base_c.label, "upsampler": up_c.label if up_c else None,
            "load_s": round(load_s, 3), "sample_s": round(sample_s, 3),
        }
        self._shown_paths(settings)
        files, failure = self._save(images, settings, seeds)
        if failure:
            notes.append(f"{failure} The images it could not write are shown here only.")
        return UiResult(files, seeds, seed, settings, notes, unsaved=images[len(files):])

    def _in_memory(self, n: int, work: Callable[[], Any]) -> Any:
        """``work()``; torch running out of device memory in it is one sentence naming what
        needs less (its allocator's advice was a traceback), after the memory is freed."""
        import torch

        try:
            return work()
        except torch.OutOfMemoryError:
            pass  # out of the except block, so that the failed batch's tensors can be freed
        _release()
        from ..devices import pick_device

        kept = len(self.cache)
        raise GlidectlError(
            f"Device {pick_device(self.device)} ran out of memory making {n} images at once "
            f"with {kept} model{'s' * (kept != 1)} kept loaded; lower Images per run, or "
            "start glidectl ui with a lower --keep-models.")

    def _load(self, base: ModelChoice, up: ModelChoice | None, lora: ModelChoice | None,
              lora_scale: float, precision: str, compile: bool) -> tuple[Any, list[str]]:
        """The pipeline and glidectl's warnings while loading it (a LoRA trained on other
        weights), kept to show with each image it makes."""
        import warnings

        from ..pipeline import GlidePipeline

        loras = (f"{lora.spec}:{lora_scale}",) if lora else ()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe = GlidePipeline.from_specs(base.spec, up.spec if up else None, loras=loras,
                                            precision=precision, device=self.device,
                                            compile=compile, vocab_dir=self.vocab_dir)
        notes = []
        for warning in caught:  # glidectl's own in the page; others where they went
            if is_own_warning(warning.category):
                notes.append(str(warning.message))
            else:  # through the filters: one they hide (gradio's unclosed event loops,
                # ResourceWarnings that a collection while loading met) stays hidden
                warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                       warning.lineno)
        for record in pipe.records.values():  # now: a run may prune the file later
            _ = record.sha256
        print(pipe.precision.line(), flush=True)
        return pipe, notes

    def _shown_path(self, path: str) -> str:
        """A file as the page names it: relative to the models folder
        (``my-run/checkpoints/step-000100/ema.safetensors``), else to the output folder
        (``0003/00_seed7.png``), else by its name — no server paths."""
        given = Path(os.path.abspath(Path(path).expanduser()))  # a linked run: as linked
        where = given.resolve()
        for folder in (self.models_dir, self.output_dir):
            if folder is None:
                continue
            for inside, root in ((given, Path(os.path.abspath(folder))),
                                 (where, Path(folder).resolve())):
                if inside.is_relative_to(root) and inside != root:
                    return inside.relative_to(root).as_posix()
        return where.name

    def _shown_paths(self, settings: dict[str, Any]) -> None:
        """The files ``settings`` name, as the page may show them (:meth:`_shown_path`): no
        server paths in PNGs that anyone with the page can download."""
        from ..samplers.tuned import is_schedule_file

        shown = self._shown_path
        for key in ("base_file", "upsampler_file", "schedule", "upsample_schedule"):
            value = settings.get(key)
            if value and (key.endswith("_file") or is_schedule_file(value)):
                settings[key] = shown(value)
        if settings.get("lora_dirs"):
            settings["lora_dirs"] = [shown(d) if d else d for d in settings["lora_dirs"]]
        if settings.get("loras"):  # PATH:SCALE
            settings["loras"] = [":".join([shown(t.rsplit(":", 1)[0]), t.rsplit(":", 1)[1]])
                                 for t in settings["loras"]]

    def shown(self, message: str) -> str:
        """``message`` (an error or warning for the page) with the files it names, quoted or
        not (in a ``glidectl`` command), as the page names files (:meth:`_shown_path`)."""
        given = [str(f) for f in (self.models_dir, self.output_dir)
                 if f is not None and not f.is_absolute()]

        def path(text: str) -> bool:
            return text.startswith(("/", "~/")) or any(
                text.startswith(f"{folder}/") for folder in given)

        def quoted(match: re.Match[str]) -> str:
            text = match.group(2)
            return f"{match.group(1)}{self._shown_path(text)}{match.group(1)}" if path(
                text) else match.group(0)

        def bare(match: re.Match[str]) -> str:
            text, end = match.group(1), match.group(2)
            return f"{self._shown_path(text)}{end}" if path(text) else match.group(0)

        for root in self._roots():  # an unquoted path ends at a space: its folder first
            message = re.sub(rf"(?<![^\s(=]){re.escape(root)}/(?=[^\s/])", "", message)
        return _BARE_PATH.sub(bare, _QUOTED_PATH.sub(quoted, message))

    def _roots(self) -> list[str]:
        """The models and output folders as messages spell them (as given, absolute,
        resolved), in :meth:`_shown_path`'s order: a file in one is named relative to it."""
        roots: list[str] = []
        for folder in (self.models_dir, self.output_dir):
            if folder is not None:
                roots += [str(folder), os.path.abspath(folder), str(Path(folder).resolve())]
        return list(dict.fromkeys(r for r in roots if r not in (".", "/")))

    def _new_folder(self) -> Path:
        """A new numbered folder for one click's images, after every numbered folder already
        there: a restarted UI, or a second one on the same folder, never writes into (and
        overwrites the images of) an earlier click's folder. The first also removes the temp
        files a killed UI left in those folders."""
        while True:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            numbered = [p for p in self.output_dir.iterdir() if p.name.isdigit()]
            if not self._runs:  # the first save: what a killed UI was writing, once
                from ..atomic import remove_stale_temps

                for folder in numbered:
                    remove_stale_temps(folder)
            taken = [int(p.name) for p in numbered]
            self._runs = max([self._runs, *taken]) + 1
            folder = self.output_dir / f"{self._runs:04d}"
            try:
                folder.mkdir()
                return folder
            except FileExistsError:  # another UI took it just now
                continue

    def _save(self, images: list[Any], settings: dict[str, Any], seeds: list[int]
              ) -> tuple[list[Path], str | None]:
        """One PNG per image, with text chunks as ``glidectl sample`` writes them: the image's
        own settings (its seed, not the request's; its model calls) one by one and as JSON
        (``parameters``). Returns the files written and, when a write
        failed (the images from there on are not saved), why."""
        from ..errors import WriteError, write_error
        from ..images import png_text, save_png

        files: list[Path] = []
        path = self.output_dir
        try:
            folder = self._new_folder()
            for j, (image, s) in enumerate(zip(images, seeds, strict=True)):
                params = {k: v for k, v in settings.items() if k != "image_seeds"}
                params.update(seed=s, request_seed=settings["seed"], image_index=j,
                              request_images=len(seeds),
                              model_calls=int(image.info["model_calls"]))
                path = save_png(image, folder / f"{j:02d}_seed{s}.png", png_text(params))
                files.append(path)
        except WriteError as exc:  # save_png's
            return files, str(exc)
        except OSError as exc:  # the folder's
            return files, str(write_error(path, exc))
        return files, None


# The command-line flags that sampling errors and warnings name, as the page's controls are
# labelled (a number after one: the value to set it to). A ``glidectl CMD ...`` command keeps
# its flags, said to be one to run in a terminal; any other flag is called a command-line flag
# (the page has no control for it), after _PAGE_PHRASES put the messages it shows in its words.
_PAGE_WORDS = {
    "--schedule": "Schedule", "--steps": "Base steps", "--sampler": "Sampler",
    "--guidance": "Guidance", "--seed": "Seed", "--upsample-steps": "Upsampler steps",
    "--precision": "Precision", "--base": "Base model", "--upsampler": "Upsampler",
    "--lora": "LoRA", "--grey": "the Grey box ticked", "--no-grey": "the Grey box unticked",
}
_PAGE_PHRASES = (  # regex → replacement, before the flags
    (r"pass --schedule FILE", f"pick Schedule {FITTED_SCHEDULE!r}, the file"),
    (r"pass --schedule,", "pick a Schedule,"),
    # a bespoke file's σ's from another σ_max than the base model's (samplers.tuned)
    (r"\(from (\S+) down\), but this run samples from (\S+) to (\S+): leave --sigma-max at "
     r"the value it was fitted with, or refit\.",
     r"(from \1 down), but this run samples from \2 to \3: the page samples from the base "
     r"model's σ_max and has no control for it; refit the file with glidectl fit-steps, or "
     r"sample at its σ_max with glidectl sample --sigma-max \1."),
    # the page samples at the base model's recommended σ_max (samplers.schedules)
    (r"sigma_max \(--sigma-max\) (\S+) is not above this model's smallest σ, (\S+); pass a "
     r"larger one \(default (\S+)\)\.",
     r"The base model recommends sampling from σ_max \1, which is not above its smallest σ, "
     r"\2, and the page has no control for it; sample with glidectl sample --sigma-max set "
     r"to a larger one (default \3)."),
    # a LoRA adapter file listed as a model (glide.checkpoints)
    (r"apply it to its base model with --lora (?:'[^']*'|\S+), or fold it in with: ",
     "pick its folder (with its adapter_config.json, in the models folder) as LoRA over its "
     "base model, or fold it in with "),
    (r"\b(with|by|in) (?=glidectl [a-z])", r"\1 the terminal command "),
    # torch.compile without what builds its kernels (devices.check_compile)
    (r"^--compile needs", "torch.compile (the box) needs"),
    (r"or go on without --compile\.$", "or untick torch.compile."),
)
_PAGE_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)"
                        r"(?: (-?\d+(?:\.\d+)?|fp32|bf16|fp16)(?!\w|[.-]\w))?")


def in_page_words(message: str) -> str:
    """An error or warning of the sampling library with the flags it names (``raise
    --steps``, ``sample with --guidance 3``) put as the page's controls are labelled
    (``raise Base steps``, ``sample with Guidance set to 3``); a flag the page has no
    control for is said to be a command-line flag."""
    for pattern, text in _PAGE_PHRASES:
        message = re.sub(pattern, text, message)

    def control(match: re.Match[str]) -> str:
        label = _PAGE_WORDS.get(match.group(1))
        if label is None:
            return f"the command-line flag {match.group(0)}"
        return label + (f" set to {match.group(2)}" if match.group(2) else "")

    return outside_commands(message, lambda text: _PAGE_FLAG.sub(control, text))


# a quoted file in a message ('/srv/runs/x/schedule.json'), and an unquoted one (in a command)
_QUOTED_PATH = re.compile(r"(?<!\w)(['\"])([^\n]+?)\1(?!\w)")
_BARE_PATH = re.compile(r"(?<![^\s(=])([^\s'\"()]+?)([.,;:]*)(?=[\s)]|$)")


def _recommended(choice: ModelChoice | None) -> dict[str, Any]:
    """The listed model's recommended sampling settings; {} for none, and for a file whose
    recommendation cannot be read (a number where a sampler belongs): the page still
    starts and fills its controls, and Generate with that model says what is wrong."""
    from ..model_cost import local_weights
    from ..pipeline import recommended_settings

    if choice is None:
        return {}
    try:
        return recommended_settings(local_weights(choice.spec))
    except GlidectlError:
        return {}


def _fitted_file(choice: ModelChoice | None) -> Path | None:
    """``RUN/schedule.json`` of a listed run folder, if it exists."""
    path = Path(choice.spec) / "schedule.json" if choice else None
    return path if path is not None and path.is_file() else None


def _seed(value: int | str | None) -> int | None:
    """The seed box's text as a whole number in range (None: empty; -1: draw one); one
    sentence, the same for text and for a number out of range, if it is not."""
    if isinstance(value, str):
        value = value.strip() or None
        if value is not None and plain_number(value, int):  # not int()'s 1_0 or ٣: refused
            value = int(value)  # as sample --seed refuses them; else said as the text it is
    if value is None or (isinstance(value, int) and not isinstance(value, bool)
                         and not SEED_OR_RANDOM.problem(value)):
        return value
    raise GlidectlError(f"Seed must be a whole number from 0 to 2**63-1, or -1 for a random "
                        f"one; got {value!r}.")


def _steps(value: int | str | None) -> int | str | None:
    """Upsampler steps from the UI: a number or a respacing string such as fast27."""
    if value in (None, ""):
        return None
    text = str(value).strip()  # a signed whole number too: range-checked as sample's flag
    return int(text) if plain_number(text, int) else text
