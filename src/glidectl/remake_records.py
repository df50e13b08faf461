"""What a glidectl PNG's text chunks record — a ``sample`` or web UI image, an ``eval``
image, a training preview — read back as a :class:`~glidectl.remake.Remake` of
``glidectl sample``'s settings (``sample --from-png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import GlidectlError, a_or_an, cause, not_a_file
from .pipeline_records import IN_MEMORY
from .ranges import plain_number
from .remake import MODELS, PATHS, Pinned, Remake, _flag, _holds, _pinned_file

# sample's parameters a sample or web UI PNG records under the same name
SAME_NAME = ("sampler", "steps", "schedule", "guidance", "eta", "guidance_interval",
             "guidance_rescale", "dynamic_threshold", "upsample_sampler", "upsample_steps",
             "upsample_schedule", "upsample_guidance", "upsample_temp", "sigma_max",
             "quantize_t", "grey", "precision", "batch_size", "seed", "low_res_resample")
STRINGS = ("steps", "upsample_steps", "guidance_interval")  # sample parses them itself
FLOATS = ("guidance", "eta", "guidance_rescale", "dynamic_threshold", "upsample_guidance",
          "upsample_temp", "sigma_max")
# what the words, flags and lists of a record must be where they are there (null: not given)
WORDS = ("prompt", "sampler", "schedule", "upsample_sampler", "upsample_schedule", "precision",
         "device", "vocab_dir", "low_res_resample", *MODELS, *PATHS,
         *(f"{k}_{what}" for k in MODELS for what in ("file", "sha256", "dtype")),
         *(f"{k}_sha256" for k in (*PATHS, "schedule", "upsample_schedule", "prompt", "vocab")))
FLAGS = ("grey", "compile")
LISTS = ("loras", "lora_sha256", "lora_config_sha256", "lora_dirs", "plugins")  # of words
NULLABLE = ("lora_sha256", "lora_config_sha256", "lora_dirs")  # an adapter in memory: null


def read_remake(png: str | Path) -> Remake:
    """What ``png`` records, as a :class:`Remake`; one sentence for a file that is no PNG,
    or a PNG without a glidectl record (or a grid, which holds many images)."""
    from PIL import Image

    png = Path(png)
    if why := not_a_file(png):
        fix = "fix the path" if why == "does not exist" else "pass a PNG file"
        raise GlidectlError(f"--from-png {str(png)!r} {why}; {fix}.")
    try:
        with Image.open(png) as im:
            kind = im.format
            text = dict(getattr(im, "text", {})) if kind == "PNG" else {}
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise GlidectlError(f"Cannot read --from-png {str(png)!r} ({cause(exc)}); pass a PNG "
                            "glidectl wrote.") from None
    if kind != "PNG":
        raise GlidectlError(f"--from-png {str(png)!r} is {a_or_an(kind)} image, not a PNG; pass "
                            "a PNG glidectl wrote.")
    params = _json(text.get("parameters"))
    eval_record = _json(text.get("glidectl"))
    if "prompts" in params or "prompts" in eval_record:
        raise GlidectlError(f"{png} is a grid of many images; pass one of the numbered PNGs "
                            "beside it.")
    try:  # a record edited by hand or another program: a missing key, a list for a word
        # "glidectl" (the version) marks sample's and the web UI's record: Fooocus writes a
        # "parameters" JSON with a prompt and a seed too
        if "seed" in params and "prompt" in params and "glidectl" in params:
            return _from_sample(png, _typed(png, params))
        if "candidate" in text and eval_record:
            return _from_eval(png, text, _typed(png, eval_record))
        if "step" in text and "prompts" in text and "sampler" in text:
            return _from_preview(png, text)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise GlidectlError(f"{png}'s glidectl record is damaged ({cause(exc)}); pass the PNG "
                            "as glidectl wrote it, or sample with flags instead.") from None
    raise GlidectlError(f"{png} holds no glidectl record of what made it (a PNG from glidectl "
                        "sample, the web UI, eval or a training preview has one).")


def _json(value: str | None) -> dict[str, Any]:
    try:
        data = json.loads(value) if value else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _top_sigma(rec: dict[str, Any]) -> dict[str, Any]:
    """``{"sigma_max": None}`` for a record of ``generate(sigma_max=None)`` (the model's top
    σ, which ``--sigma-max`` cannot give) on a σ schedule, else {}: a null ``sigma_max`` is
    otherwise one no stage used (every stage that ran on GLIDE's respaced steps)."""
    ran = [rec.get(k) for k in ("schedule", "upsample_schedule") if rec.get(k) is not None]
    used = any(s != "respaced" for s in ran)
    return {"sigma_max": None} if used and "sigma_max" in rec and rec["sigma_max"] is None \
        else {}


def _from_sample(png: Path, rec: dict[str, Any]) -> Remake:
    """A ``sample`` or web UI PNG: its ``parameters``, keyed as sample's flags."""
    from .pipeline_records import API_ONLY

    values: dict[str, Any] = {k: rec[k] for k in SAME_NAME if rec.get(k) is not None}
    for key in STRINGS:
        if key in values:
            values[key] = str(values[key])
    for key in FLOATS:
        if key in values:
            values[key] = _number(png, key, values[key], float)
    if "seed" in values:
        values["seed"] = _number(png, "seed", values["seed"], int)
    if "sampler" in rec and rec.get("guidance") is None:
        values["guidance"] = 1.0  # guidance off, as --guidance 1 says it
    values.setdefault("grey", False)  # PNGs from before it was recorded: colour
    values.update({k: Path(rec[k]) for k in PATHS if rec.get(k)})
    if rec.get("low_res"):  # PNGs from before it was recorded shrank it with bicubic
        values.setdefault("low_res_resample", "bicubic")
    pinned = [Pinned(k, f"{_flag(k)} image", (rec[k],), rec.get(f"{k}_sha256"),
                     metavar="IMAGE") for k in PATHS if rec.get(k)]
    if not isinstance(rec["prompt"], str):  # null: _typed lets it by, as for other words
        _damaged(png, "prompt", rec["prompt"])
    values["prompts"] = [rec["prompt"]]
    source = "web UI" if "request_seed" in rec and "load_s" in rec else "sample"
    unset = {k: None for k in PATHS if not rec.get(k)}  # given, another input
    if "upsample_sampler" in rec and rec.get("upsample_guidance") is None:
        unset["upsample_guidance"] = 1.0  # guidance off, as --upsample-guidance 1 says it
    # the base stage's tools it ran without (null where it ran: off); a guidance rescale
    # changes no pixel of an unguided stage, which sample says
    if "dynamic_threshold" in rec and rec["dynamic_threshold"] is None:
        unset["dynamic_threshold"] = None
    if "guidance_rescale" in rec and rec["guidance_rescale"] is None \
            and values.get("guidance", 1.0) != 1.0:
        unset["guidance_rescale"] = 0.0
    remake = Remake(png, source, values, unset=unset, prompt_sha256=rec.get("prompt_sha256"),
                    plugins=rec.get("plugins"), plugins_known="plugins" in rec,
                    vocab_sha256=rec.get("vocab_sha256"),
                    api_only={k: rec[k] for k in API_ONLY if k in rec} | _top_sigma(rec),
                    dtypes={k: rec[f"{k}_dtype"] for k in MODELS if rec.get(f"{k}_dtype")})
    if rec.get("vocab_sha256"):
        values["vocab_dir"] = rec.get("vocab_dir")  # None: the default vocabulary
    _device(remake, rec.get("device"), rec.get("compile"))
    for key in MODELS:
        spec = rec.get(key)
        values[key] = spec or "none"
        if spec == IN_MEMORY:  # a model passed to GlidePipeline: the PNG names no file
            remake.pinned.append(Pinned(key, MODELS[key], (IN_MEMORY,), None))
        elif spec and (rec.get(f"{key}_file") or rec.get(f"{key}_sha256")):
            remake.specs[key] = spec
            remake.pinned.append(Pinned(key, MODELS[key], _paths(rec.get(f"{key}_file"), spec),
                                        rec.get(f"{key}_sha256")))
    remake.pinned += pinned
    _auto_schedule_note(remake, rec)
    _pin_schedules(remake, rec)
    _pin_loras(remake, rec.get("loras") or [], rec.get("lora_sha256") or [],
               rec.get("lora_config_sha256") or [], rec.get("lora_dirs") or [])
    batch_size = _number(png, "batch_size", rec.get("batch_size", 1), int, low=1)
    if "batch_size" in values:
        values["batch_size"] = batch_size  # not the text "4" or 1.5: generate() refused them
    if "image_index" in rec:
        total = _number(png, "request_images", rec.get("request_images", batch_size), int,
                        low=1)
        index = _number(png, "image_index", rec["image_index"], int, high=total - 1)
        start = index - index % batch_size
        remake.batch, remake.place = min(batch_size, total - start), index - start
    else:
        remake.batch = 1
        if "batch_size" not in rec:
            remake.notes.append(f"{png} does not record its batch (made before glidectl "
                                "recorded it): it is made alone, so a pixel may differ by a "
                                "level if its request made more images (the batch size "
                                "changes float sums).")
        elif batch_size > 1:
            remake.notes.append(f"{png} does not say which image of its batch it was (made "
                                "before glidectl recorded it): it is made alone, so a pixel "
                                "may differ by a level (the batch size changes float sums).")
    return remake


def _number(png: Path, key: str, value: Any, kind: type, low: float = 0,
            high: float = 2**63 - 1) -> Any:
    """A number of the record as ``kind``, from ``low`` to ``high`` (seeds, counts and
    settings are never negative); anything else is a damaged record, in one sentence: text
    as ``sample``'s flags take it (not int()'s ``1_000`` or ``٣``), a whole ``int``."""
    try:
        number = None if isinstance(value, (bool, list, dict)) or (
            isinstance(value, str) and not plain_number(value, kind)) or (
            kind is int and isinstance(value, float) and not value.is_integer()) else kind(value)
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not low <= number <= high:
        _damaged(png, key, value)
    return number


def _typed(png: Path, rec: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``rec`` (a sample's or an eval image's record, or one of its stages, keys named
    ``where``-first) once its :data:`WORDS`, :data:`FLAGS` and :data:`LISTS` are what they
    must be (or null); a number in place of a prompt or a sampler was a traceback later."""
    for key, value in rec.items():
        ok = (value is None or key not in (*WORDS, *FLAGS, *LISTS, "base_stage",
                                           "upsample_stage")
              or isinstance(value, str) and key in WORDS
              or isinstance(value, bool) and key in FLAGS
              or isinstance(value, dict) and key.endswith("_stage")
              or isinstance(value, list) and key in LISTS and all(
                  isinstance(v, str) or v is None and key in NULLABLE for v in value))
        if not ok:
            _damaged(png, where + key, value)
        if isinstance(value, dict):
            _typed(png, value, f"{key}.")
    return rec


def _damaged(png: Path, key: str, value: Any) -> None:
    raise GlidectlError(f"{png}'s glidectl record is damaged ({key} = {value!r}); pass the PNG "
                        "as glidectl wrote it, or sample with flags instead.")


def _device(remake: Remake, device: Any, compiled: Any) -> None:
    """The device type (``cuda:1`` → cuda) and torch.compile that made the image: kernels,
    and so pixels, differ by them. A CPU is used again (any machine has one); another
    device type than runs now is a line (:meth:`Remake.device_note`)."""
    remake.device = str(device).split(":")[0] if device else None
    if remake.device == "cpu":
        remake.values["device"] = "cpu"
    if compiled is True:
        remake.values["compile_"] = True


def _paths(*paths: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(p) for p in paths if p))


def _auto_schedule_note(remake: Remake, rec: dict[str, Any]) -> None:
    """A line where a sample PNG records the schedule ``auto`` (before 2026-12-03; its
    upsampler's schedule was not recorded at all) for a sampler whose own schedule changed
    on 2026-12-01: the PNG does not say which it was. It is made on today's, and the older
    one given is no change (:attr:`Remake.open_values`)."""
    from .eval_settings import own_schedule, schedule_before

    stages = (("schedule", "sampler", True),
              ("upsample_schedule", "upsample_sampler", bool(rec.get("upsampler"))))
    for key, sampler_key, ran in stages:
        sampler = rec.get(sampler_key)
        if not ran or not isinstance(sampler, str) or rec.get(key, "auto") != "auto":
            continue
        was = schedule_before(sampler)
        if was is not None and was != (now := own_schedule(sampler)):
            remake.open_values[key] = was, (
                f"{remake.png} records the {key.replace('_', ' ')} 'auto' (its sampler's "
                f"own), which for {sampler} was {was} before 2026-12-01 and {now} since: it "
                f"is made with {now}; if the image differs, pass {_flag(key)} {was}.")


def _pin_schedules(remake: Remake, rec: dict[str, Any]) -> None:
    for key in ("schedule", "upsample_schedule"):
        if rec.get(f"{key}_sha256") and rec.get(key):
            remake.pinned.append(Pinned(key, f"{key.replace('_', ' ')} file", (rec[key],),
                                        rec[f"{key}_sha256"], metavar="FILE"))


def _pin_loras(remake: Remake, loras: list[str], digests: list[str | None],
               settings: list[str | None] = (), dirs: list[str | None] = ()) -> None:
    """Pin each ``PATH:SCALE`` adapter to its weights' sha256 (and its settings', as
    ``WEIGHTS+SETTINGS``, where recorded), trying the folder read (``dirs``) after ``PATH``."""
    if not loras:
        return
    remake.values["lora"] = list(loras)
    nothing = [None] * len(loras)
    for text, sha, setting, where in zip(loras, [*digests, *nothing], [*settings, *nothing],
                                         [*dirs, *nothing], strict=False):
        path, scale = text.rsplit(":", 1)
        remake.pinned.append(Pinned(
            "lora", "LoRA adapter", _paths(path, where), f"{sha}+{setting}"
            if sha and setting else sha, scale, "PATH:SCALE"))


def _from_eval(png: Path, text: dict[str, str], rec: dict[str, Any]) -> Remake:
    """An ``eval`` image: its settings, its own seed; files and sha256 from the folder's
    metadata.json when it is beside it."""
    from .eval_outputs import read_metadata
    from .eval_settings import META_FILE, schedule_before

    values: dict[str, Any] = {"prompts": [text.get("prompt", "")],
                              "seed": _number(png, "seed", text["seed"], int),
                              "base": rec.get("base") or "none",
                              "upsampler": rec.get("upsampler") or "none"}
    for prefix, stage in (("", rec.get("base_stage")), ("upsample_", rec.get("upsample_stage"))):
        if not isinstance(stage, dict) or (prefix and values["upsampler"] == "none"):
            continue
        values.update({f"{prefix}sampler": stage.get("sampler"),
                       f"{prefix}steps": str(stage.get("steps")),
                       f"{prefix}schedule": stage.get("schedule")})
        if "schedule" not in stage and isinstance(stage.get("sampler"), str):
            # evals from before it was recorded: the sampler's own of that time
            values[f"{prefix}schedule"] = schedule_before(stage["sampler"])
        guidance = stage.get("guidance")
        if guidance is not None or not prefix:
            values[f"{prefix}guidance"] = float(1.0 if guidance is None else guidance)
    batch = _number(png, "batch_size", rec.get("batch_size") or 1, int, 1)
    values.update(precision=rec.get("precision"), batch_size=batch,
                  grey=bool(rec.get("grey")))  # runs from before it drew colour
    values = {k: v for k, v in values.items() if v is not None}
    remake = Remake(png, "eval", values, prompt_sha256=text.get("prompt_sha256"),
                    plugins=None, vocab_sha256=rec.get("vocab_sha256"))
    if rec.get("vocab_sha256"):
        values["vocab_dir"] = rec.get("vocab_dir")  # None: the default vocabulary
    if text.get("low_res"):  # an upsampler eval's image: its input is in the eval folder
        values["low_res"] = png.parent / text["low_res"]
        remake.pinned.append(Pinned("low_res", "--low-res image", (str(values["low_res"]),),
                                    text.get("low_res_sha256"), metavar="IMAGE"))
    meta = read_metadata(png.parent / META_FILE)
    if meta is None:
        remake.batch = 1
        remake.notes.append(f"{png} has no metadata.json beside it: the weights cannot be "
                            "checked against those that made it, and it is made alone (a "
                            "pixel may differ by a level if its batch held more).")
        if rec.get("loras"):
            remake.values["lora"] = list(rec["loras"])
        return remake
    remake.plugins, remake.plugins_known = meta.get("plugins"), "plugins" in meta
    _device(remake, meta.get("device"), meta.get("compile"))
    paths = meta.get("paths") if isinstance(meta.get("paths"), dict) else {}
    models = meta.get("models", {})
    for key, stage in (("base", "base"), ("upsampler", "upsample")):
        model = models.get(stage)
        if values[key] != "none" and isinstance(model, dict):
            remake.specs[key] = values[key]
            remake.pinned.append(Pinned(key, MODELS[key], _paths(
                model.get("path"), paths.get(key), values[key]), model.get("sha256")))
    schedules = {"schedule": (values.get("schedule"), meta.get("schedule_sha256"),
                              paths.get("base_stage.schedule")),
                 "upsample_schedule": (values.get("upsample_schedule"),
                                       meta.get("upsample_schedule_sha256"),
                                       paths.get("upsample_stage.schedule"))}
    for key, (name, sha, where) in schedules.items():
        if name and sha:
            remake.pinned.append(Pinned(key, f"{key.replace('_', ' ')} file",
                                        _paths(where, name), sha, metavar="FILE"))
    loras = [x for m in models.values() for x in m.get("loras") or ()
             if isinstance(x, dict)]
    _pin_loras(remake, [f"{x['path']}:{float(x['scale'])!r}" for x in loras],
               [x.get("sha256") for x in loras], [x.get("config_sha256") for x in loras],
               [x.get("dir") for x in loras])
    _eval_batch(remake, meta, rec, _number(png, "candidate", text.get("candidate", 0), int))
    if "batch_images" in text:  # as made: the folder may have grown since
        remake.batch = _number(png, "batch_images", text["batch_images"], int, 1)
    return remake


def _eval_batch(remake: Remake, meta: dict[str, Any], rec: dict[str, Any], j: int) -> None:
    """The length of the eval batch that made the image: eval cuts its (prompt, candidate)
    items into fixed batches; the prompt is the one whose image seed is the PNG's."""
    from .evaluation import image_seed

    seed, candidates = remake.values["seed"], max(int(rec.get("rerank") or 0),
                                                  int(rec.get("n") or 1))
    prompts, batch_size = len(meta.get("prompts") or ()), remake.values["batch_size"]
    found = [i for i in range(prompts) if image_seed(int(rec.get("seed", 0)), i, j) == seed]
    if not found:
        remake.batch = 1
        remake.notes.append(f"{remake.png}'s seed is none of its folder's images' (its "
                            "metadata.json is another run's): made alone, so a pixel may "
                            "differ by a level.")
        return
    item = found[0] * candidates + j
    start = item - item % batch_size
    remake.batch = min(batch_size, prompts * candidates - start)
    remake.place = item - start


def _from_preview(png: Path, text: dict[str, str]) -> Remake:
    """A training preview grid: every prompt of it, from its step's weights in its run."""
    from . import runs

    prompts = json.loads(text["prompts"])
    step = _number(png, "step", text["step"], int)
    run, where, aside = _preview_checkpoint(png.resolve().parent, step)
    if run is None:
        raise GlidectlError(f"{png} is a training preview outside its run's previews/ folder; "
                            f"pass --base RUN/checkpoints/{runs.step_dir_name(step)}"
                            "/ema.safetensors (RUN: the run it is from).")
    weights = runs.step_weights(Path(where))
    adapter = runs.step_adapter(Path(where)) if weights is None else None
    started = None
    if weights is None and adapter is None and step == 0:  # a finetune's start: model.init
        weights = started = _started_from(run, text.get("weights_sha256"))
    missing = None
    if weights is None and adapter is None:
        why = ("the weights it started from are saved nowhere" if step == 0 else
               f"resumes from earlier checkpoints set {len(aside)} of that step aside, in "
               f"{', '.join(map(str, aside))}" if len(aside) > 1 else
               "no checkpoint was written at that step, or it was deleted"
               if runs.set_aside(Path(where)) else
               "pruned by checkpoint.keep_last, or no checkpoint was written at that step")
        missing = (f"{png} was made at step {step} of {run}, whose checkpoint of that step is "
                   f"not there ({why}); pass --base SPEC to use other weights (the image will "
                   "differ).")
    # no step file to read: the run's config says what it trained
    kind = _kind(weights, adapter) if missing is None else str(
        runs.run_setting(run, "model", "kind") or "base")
    if kind != "base":
        # the step's checkpoint, or at step 0 the model.init it started from (no step-0 folder)
        up = started or (where if missing is None else None)
        how = (f"; to upsample an image of your own with its weights, pass --base none "
               f"--upsampler {up} --low-res IMAGE" if kind == "upsample" and up else "")
        raise GlidectlError(f"{png} is a preview of {a_or_an(repr(kind))} model: it was made "
                            "from held-out images (and masks) the PNG does not hold, and "
                            "glidectl sample --from-png makes base-model previews again"
                            f"{how}.")
    values: dict[str, Any] = {
        "prompts": prompts, "sampler": text["sampler"], "steps": str(text["steps"]),
        "schedule": text["schedule"], "guidance": float(text["guidance"]),
        "seed": _number(png, "seed", text["seed"], int), "precision": text["precision"],
        "batch_size": _number(png, "batch_size", text["batch_size"], int, 1),
        "upsampler": "none",
        "grey": text.get("grey") == "True",  # previews from before it: colour
    }
    remake = Remake(png, "training preview", values, plugins=_json_list(text.get("plugins")),
                    plugins_known=True, vocab_sha256=text.get("vocab_sha256"))
    if text.get("vocab_sha256"):
        values["vocab_dir"] = text.get("vocab_dir")  # None: the default vocabulary
    if adapter is not None:
        values["lora"] = [f"{adapter}:1.0"]
        remake.notes.append("A LoRA run's previews compute its adapters unmerged; --lora merges "
                            "them: the same images to within float rounding.")
    elif missing is None:
        values["base"] = str(weights)
    remake.missing = missing
    if started is not None:
        remake.notes.append(f"{png} is its run's step 0: made from the weights it started "
                            f"from, model.init {str(started)!r}.")
    if missing is None and runs.set_aside(Path(where)):
        remake.notes.append(f"{png} is from a branch of its run that a resume from an earlier "
                            f"checkpoint set aside: made from its checkpoint in {where}.")
    _device(remake, text.get("device"), None)
    if text.get("weights_sha256"):  # is the step's file what it sampled?
        param, path = ("lora", adapter) if adapter is not None else (
            "base", weights or Path(where) / runs.EMA_FILE)
        remake.pinned.append(Pinned(param, f"step-{step} {MODELS.get(param, 'LoRA adapter')}",
                                    (str(path),), text["weights_sha256"], "1.0" if adapter
                                    else None, "PATH" if adapter else "SPEC", tensors=True))
    return remake


def _started_from(run: Path, sha256: str | None) -> Path | None:
    """The weights file a run's ``model.init`` names (as given, else from the folders above
    the run), when its tensors are what the step-0 preview recorded (a LoRA run's record is
    its adapters': never the base's); else None."""
    from . import runs

    init = runs.run_setting(run, "model", "init")
    if not sha256 or not isinstance(init, str) or init in ("", "scratch"):
        return None
    pin = Pinned("base", "model.init weights", (init,), sha256, tensors=True)
    tries = [init] if Path(init).expanduser().is_absolute() else [
        init, *(str(folder / init) for folder in run.resolve().parents[:3])]
    from safetensors import SafetensorError

    for path in tries:
        try:
            if _holds(pin, path):
                return _pinned_file(pin, path)
        except (SafetensorError, OSError, ValueError):  # not a safetensors file (a .pt)
            continue
    return None


def _preview_checkpoint(folder: Path, step: int) -> tuple[Path | None, str, list[Path]]:
    """The run of a preview grid in ``folder``, the step folder of its branch that made it
    and the set-aside step folders of that step: ``RUN/previews/`` is the run's current
    branch, ``RUN/previews/abandoned-after-…/`` one a resume set aside with its checkpoints
    (``RUN/checkpoints/abandoned-after-…/``). A step folder not in its branch's place (a
    preview left in previews/ by an older version, or a set-aside branch split by a kill)
    is looked for among the set-aside ones: the one there is used."""
    from . import runs

    aside = folder.name.startswith(runs.ABANDONED) and folder.parent.name == runs.PREVIEWS_DIR
    run = folder.parent.parent if aside else folder.parent \
        if folder.name == runs.PREVIEWS_DIR else None
    if run is None:
        return None, "", []
    checkpoints = run / runs.CHECKPOINTS_DIR
    where = (checkpoints / folder.name if aside else checkpoints) / runs.step_dir_name(step)
    copies = [] if where.is_dir() or step == 0 else \
        [p for p in runs.set_aside_copies(checkpoints, step) if p != where]
    return run, str(copies[0] if len(copies) == 1 else where), copies


def _json_list(value: str | None) -> list[str] | None:
    try:
        data = json.loads(value) if value else None
    except ValueError:
        return None
    return data if isinstance(data, list) else None


def _kind(weights: Path | None, adapter: Path | None) -> str:
    """The model kind of a step's weights file, or of the model a LoRA adapter is for."""
    if adapter is not None:
        from .lora import read_adapter

        return str(read_adapter(adapter).meta.get("model_kind") or "base")
    from .glide.checkpoints import read_metadata

    options = _json(read_metadata(weights).get("glidectl.model_options"))
    return str(options.get("kind") or "base")
