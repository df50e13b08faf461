"""The gradio Blocks app of ``glidectl ui``: prompt in, a gallery of GLIDE images out."""

from __future__ import annotations

import inspect
import json
import math
import numbers
import sys
from pathlib import Path
from typing import Any

from ..errors import GlidectlError, one_line
from ..ranges import check
from ..sampling_defaults import UPSAMPLE_STEPS
from .backend import (
    BOXES,
    FITTED_SCHEDULE,
    OWN_SCHEDULE,
    PRECISIONS,
    UiBackend,
    UiStopped,
    in_page_words,
)
from .models import NONE_LABEL


def _gallery(gr: Any) -> Any:
    """A PNG gallery with a download button (gradio ≥ 6 names it in ``buttons``)."""
    kwargs: dict[str, Any] = dict(
        label="Images", elem_id="gallery", columns=4, height="auto", format="png",
        object_fit="contain",
    )
    params = inspect.signature(gr.Gallery.__init__).parameters
    if "buttons" in params:
        kwargs["buttons"] = ["download", "fullscreen"]
    elif "show_download_button" in params:  # gradio 4-5
        kwargs["show_download_button"] = True
    return gr.Gallery(**kwargs)


def _number_box(gr: Any, label: str, value: float, step: float, elem_id: str) -> Any:
    """A box for one of :data:`BOXES`, its range said under it. It has no bounds: gradio
    changes a number past a slider's or a bounded box's end to that end without a word;
    this one passes it on, and ``generate`` names the box and its range."""
    return gr.Number(value, label=label, info=BOXES[label].describe(), step=step,
                     elem_id=elem_id)


def _filled(values: dict[str, Any]) -> None:
    """The one-line error for a number box left empty (the page sends None), or given what
    is no number or one out of range (a call to the page's API: gradio passes on any JSON,
    which ``float()`` and the sampling code met as a traceback)."""
    for label, value in values.items():
        if value is None:
            raise GlidectlError(f"{label} is empty; type a number {BOXES[label].describe()}.")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise GlidectlError(f"{label} must be a number {BOXES[label].describe()}; got "
                                f"{value!r}.")
        check(label, value, BOXES[label])  # before float(): an integer past 1e308 overflows


def _recommended_values(backend: UiBackend, base: str | None,
                        samplers: list[str]) -> tuple[str, int, float]:
    """(sampler, steps, guidance) the base model recommends, else ``glidectl sample``'s."""
    from ..sampling import BASE_DEFAULTS

    rec = backend.recommended(base)
    sampler = rec.get("sampler") if rec.get("sampler") in samplers else BASE_DEFAULTS.sampler
    steps = rec.get("steps", BASE_DEFAULTS.steps)
    steps = steps if isinstance(steps, int) else BASE_DEFAULTS.steps
    guidance = rec.get("guidance", BASE_DEFAULTS.guidance)
    return sampler, steps, float(guidance if guidance is not None else 1.0)


def _recommended_grey(backend: UiBackend, base: str | None, upsampler: str | None = None,
                      lora: str | None = None) -> bool:
    """Whether the base model, the upsampler or the LoRA recommends grey pictures (trained
    on greyscale data): the Grey box's value when one is picked."""
    return backend.recommends_grey(base, upsampler, lora)


def schedule_change(backend: UiBackend, schedule: str, base: str | None, sampler: str,
                    samplers: list[str]
                    ) -> tuple[str | None, int | None, float | None, bool | None]:
    """(sampler, steps, guidance, grey) to set when the schedule changes (None: leave it).
    The fitted file brings its sampler, first fitted step count (a bespoke solver runs only
    at those), the guidance it was fitted at and whether it was fitted grey; leaving it
    takes a sampler that needs the file back to the model's recommended one (steps,
    guidance and grey: :func:`fitted_left`)."""
    from .. import plugins

    if schedule == FITTED_SCHEDULE:
        fitted, counts, guidance, grey = backend.fitted_settings(base)
        return ((fitted if fitted in samplers else None), (counts[0] if counts else None),
                guidance, grey)
    if sampler in samplers and plugins.samplers().get(sampler).accepts("coefficients"):
        return _recommended_values(backend, base, samplers)[0], None, None, None
    return None, None, None, None


def fitted_left(backend: UiBackend, base: str | None, upsampler: str | None,
                samplers: list[str], picked: dict[str, Any] | None, steps: float | None,
                guidance: float | None, grey: bool | None, lora: str | None = None
                ) -> tuple[int | None, float | None, bool | None]:
    """(steps, guidance, grey) to set when the schedule leaves the fitted file (None: leave
    it): each control that still holds the value picking the file set (``picked``) goes back
    to what the page recommends (the model's steps and guidance; Grey as the models and the
    LoRA recommend); one the user changed since stays theirs."""
    picked = picked or {}

    def still(name: str, now: float | None) -> bool:
        was = picked.get(name)
        return was is not None and now is not None and math.isclose(float(now), float(was))

    _, rec_steps, rec_guidance = _recommended_values(backend, base, samplers)
    return ((rec_steps if still("steps", steps) else None),
            (rec_guidance if still("guidance", guidance) else None),
            (_recommended_grey(backend, base, upsampler, lora) if still("grey", grey)
             else None))


def fresh_lists(backend: UiBackend, base: str | None, upsampler: str | None,
                lora: str | None, schedule: str | None) -> list[tuple[list[str], str | None]]:
    """(choices, value) of the base, upsampler, LoRA and schedule lists as the models folder
    is now: each page load calls it, so runs trained, fitted or deleted since the UI started
    are offered or left out without a restart. A value still offered is kept."""
    bases, ups, loras = backend.choices()
    base = base if base in bases else (bases[0] if bases else None)
    lists = [(bases, base), ([NONE_LABEL, *ups], upsampler), ([NONE_LABEL, *loras], lora),
             (backend.schedule_choices(base), schedule)]
    defaults = [base, NONE_LABEL, NONE_LABEL, OWN_SCHEDULE]
    return [(c, v if v in c else d) for (c, v), d in zip(lists, defaults, strict=True)]


def build_app(backend: UiBackend) -> Any:
    """The Blocks app bound to ``backend`` (models folder, model cache, output folder)."""
    import gradio as gr

    from .. import plugins

    bases, ups, loras = backend.choices()
    registry = plugins.samplers()
    samplers = registry.names()  # bespoke too: it runs on a fitted schedule file
    first = bases[0] if bases else None
    sampler0, steps0, guidance0 = _recommended_values(backend, first, samplers)

    def run(prompt: str, n: float | None, sampler: str, base_steps: float | None,
            up_steps: str, guidance: float | None, seed: str | None, base: str,
            upsampler: str, lora: str, lora_scale: float | None, precision: str,
            compile_: bool, schedule: str, grey: bool,
            progress: Any = gr.Progress()) -> tuple[Any, str, str, str]:
        def on_step(stage: str, done: int, total: int) -> None:
            progress((done, total), desc=f"{stage} sampling")

        try:  # the numbers as typed: generate refuses a fraction of a step, or one past 16
            _filled({"Images per run": n, "Base steps": base_steps, "Guidance": guidance,
                     "LoRA scale": lora_scale})
            result = backend.generate(
                prompt=prompt, n=n, sampler=sampler, base_steps=base_steps,
                up_steps=up_steps, guidance=float(guidance), seed=seed,  # empty: random
                base=base, upsampler=upsampler, lora=lora, lora_scale=float(lora_scale),
                precision=precision, compile=bool(compile_), on_step=on_step,
                schedule=schedule, grey=bool(grey),
            )
        except GlidectlError as exc:  # the page shows it; the terminal gets one line
            message = in_page_words(one_line(str(exc)))
            print(f"Error: {message}", file=sys.stderr, flush=True)  # with the server's paths
            raise gr.Error(backend.shown(message), print_exception=False) from None
        except UiStopped as exc:  # Ctrl-C of the server: nothing to say in its terminal
            raise gr.Error(str(exc), print_exception=False) from None
        for message in (in_page_words(one_line(w)) for w in result.warnings):
            print(f"Warning: {message}", file=sys.stderr, flush=True)
            gr.Warning(backend.shown(message))
        shown = [str(path) for path in result.files] + result.unsaved  # unsaved: PIL images
        gallery = [(image, f"seed {s}") for image, s in zip(shown, result.seeds, strict=True)]
        return (gallery, ", ".join(map(str, result.seeds)),
                json.dumps(result.settings, indent=2), backend.memory())

    def on_base(base: str, upsampler: str, lora: str) -> tuple[Any, ...]:
        sampler, steps, guidance = _recommended_values(backend, base, samplers)
        prompts = [[p] for p in backend.example_prompts(base)]
        return (gr.update(value=sampler), gr.update(value=steps), gr.update(value=guidance),
                gr.Dataset(samples=prompts),
                gr.update(choices=backend.schedule_choices(base), value=OWN_SCHEDULE),
                gr.update(value=_recommended_grey(backend, base, upsampler, lora)))

    def on_load(*values: str) -> tuple[Any, ...]:
        lists = fresh_lists(backend, *values)
        return (*(gr.update(choices=c, value=v) for c, v in lists),
                gr.update(visible=not lists[0][0]))

    def on_schedule(schedule: str, base: str, sampler: str, upsampler: str, now_steps: float,
                    now_guidance: float, now_grey: bool, picked: dict[str, Any] | None,
                    lora: str | None = None) -> tuple[Any, ...]:
        new_sampler, steps, guidance, grey = schedule_change(backend, schedule, base, sampler,
                                                             samplers)
        if schedule == FITTED_SCHEDULE:  # kept: leaving the file puts back what it set
            picked = {"steps": steps, "guidance": guidance, "grey": grey}
        else:
            steps, guidance, grey = fitted_left(backend, base, upsampler, samplers, picked,
                                                now_steps, now_guidance, now_grey, lora)
            picked = None
        return (gr.update() if new_sampler is None else gr.update(value=new_sampler),
                gr.update() if steps is None else gr.update(value=steps),
                gr.update() if guidance is None else gr.update(value=guidance),
                gr.update() if grey is None else gr.update(value=grey), picked)

    # The PNGs are served from the output folder where they are (never changed once written):
    # else gradio copies each into its cache (/tmp/gradio) and keeps the copy for good. What
    # it still caches (images a full disk kept from the folder) goes after a day, and at exit.
    gr.set_static_paths([str(Path(backend.output_dir).resolve())])
    with gr.Blocks(title="glidectl", analytics_enabled=False,
                   delete_cache=(3600, 86400)) as demo:
        gr.Markdown("## glidectl: GLIDE text-to-image")
        no_base = gr.Markdown(
            "**No base model found.** Run `glidectl download base` or put .safetensors/.pt "
            "files or training runs in the models folder (`glidectl ui --models-dir`), then "
            "reload the page.", visible=not bases, elem_id="no-base")
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt",
                                    placeholder=backend.example_prompts(first)[0])
                with gr.Row():
                    n = _number_box(gr, "Images per run", 4, 1, "images-per-run")
                    # text, not a number box: a browser's numbers round seeds above 2**53
                    seed = gr.Textbox("-1", max_lines=1, label="Seed (-1 = random)",
                                      elem_id="seed")
                with gr.Row():
                    base = gr.Dropdown(bases, value=first, label="Base model",
                                       elem_id="base-model")
                    upsampler = gr.Dropdown([NONE_LABEL, *ups], value=NONE_LABEL,
                                            label="Upsampler", elem_id="upsampler")
                with gr.Row():
                    sampler = gr.Dropdown(samplers, value=sampler0, label="Sampler",
                                          elem_id="sampler")
                    guidance = _number_box(gr, "Guidance", guidance0, 0.05, "guidance")
                with gr.Row():
                    schedule = gr.Dropdown(backend.schedule_choices(first), value=OWN_SCHEDULE,
                                           label="Schedule", elem_id="schedule")
                    base_steps = _number_box(gr, "Base steps", steps0, 1, "base-steps")
                    up_steps = gr.Dropdown([UPSAMPLE_STEPS, "10", "25", "50", "100"],
                                           value=UPSAMPLE_STEPS,
                                           allow_custom_value=True, label="Upsampler steps",
                                           visible=False, elem_id="upsampler-steps")
                with gr.Accordion("LoRA and speed", open=False):
                    with gr.Row():
                        lora = gr.Dropdown([NONE_LABEL, *loras], value=NONE_LABEL, label="LoRA",
                                           elem_id="lora")
                        lora_scale = _number_box(gr, "LoRA scale", 1.0, 0.05, "lora-scale")
                    with gr.Row():
                        precision = gr.Radio(list(PRECISIONS), value=backend.precision,
                                             label="Precision")
                        compile_ = gr.Checkbox(False, label="torch.compile")
                        grey = gr.Checkbox(_recommended_grey(backend, first), label="Grey "
                                           "(greyscale models)", elem_id="grey")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                examples = gr.Examples([[p] for p in backend.example_prompts(first)],
                                       inputs=[prompt], label="Example prompts",
                                       elem_id="examples")
            with gr.Column(scale=3):
                gallery = _gallery(gr)
                with gr.Row():
                    used_seed = gr.Textbox(label="Seeds used (image i: seed + i)",
                                           interactive=False, elem_id="seed-used")
                    memory = gr.Textbox(backend.memory(), label="Memory", interactive=False,
                                        elem_id="memory")
                settings = gr.Code(label="Settings used", language="json",
                                   elem_id="settings-used")
        demo.load(on_load, inputs=[base, upsampler, lora, schedule],
                  outputs=[base, upsampler, lora, schedule, no_base])
        base.change(on_base, inputs=[base, upsampler, lora],
                    outputs=[sampler, base_steps, guidance, examples.dataset, schedule, grey])
        lora.change(lambda lo, b, up: gr.update(value=_recommended_grey(backend, b, up, lo)),
                    inputs=[lora, base, upsampler], outputs=[grey])
        fitted_set = gr.State(None)  # what picking the fitted file set: steps, guidance, grey
        schedule.change(on_schedule, inputs=[schedule, base, sampler, upsampler, base_steps,
                                             guidance, grey, fitted_set, lora],
                        outputs=[sampler, base_steps, guidance, grey, fitted_set])
        upsampler.change(lambda up, b, lo: (gr.update(visible=up not in (None, "", NONE_LABEL)),
                                            gr.update(value=_recommended_grey(backend, b, up,
                                                                              lo))),
                         inputs=[upsampler, base, lora], outputs=[up_steps, grey])
        button.click(
            run,
            inputs=[prompt, n, sampler, base_steps, up_steps, guidance, seed, base, upsampler,
                    lora, lora_scale, precision, compile_, schedule, grey],
            outputs=[gallery, used_seed, settings, memory],
            concurrency_limit=1,
            # a click while a run goes is not dropped (gradio's "once"): the last one runs
            # after it, with the settings as they are then
            trigger_mode="always_last",
        )
    return demo


def launch(backend: UiBackend, host: str = "127.0.0.1", port: int | None = None,
           share: bool = False, quiet: bool = False,
           auth: tuple[str, str] | None = None) -> None:
    """Build the app and serve it (blocking) on ``host:port``; ``auth`` asks for a login.

    gradio's own start-up text is replaced by ours (its hints name ``launch()`` arguments,
    where ours are command-line flags).
    """
    demo = build_app(backend)
    demo.queue(default_concurrency_limit=1)
    if ":" in host and not host.startswith("["):  # an IPv6 address: gradio wants [::1]
        host = f"[{host}]"
    try:
        demo.launch(
            server_name=host, server_port=port, share=share, inbrowser=False, quiet=True,
            allowed_paths=[str(Path(backend.output_dir).resolve())], show_error=True,
            auth=[auth] if auth else None, prevent_thread_lock=True,
        )
    except OSError as exc:  # every port gradio tried is taken (its text names launch())
        first = one_line(str(exc)).split(". ")[0].rstrip(".")
        raise GlidectlError(f"The web UI could not start on {host}: {first}; pass a free "
                            "--port.") from None
    try:  # Ctrl-C / SIGTERM from here on stops the server, also before block_thread's own try
        if not quiet:
            print(f"glidectl ui: running on {demo.local_url}", flush=True)
            print(f"glidectl ui: images are saved in {backend.output_dir}", flush=True)
            if demo.share_url:
                print(f"glidectl ui: public link {demo.share_url}", flush=True)
            elif not share:
                print("glidectl ui: pass --share for a public gradio.live link.", flush=True)
        demo.block_thread()
    except KeyboardInterrupt:
        demo.close()
