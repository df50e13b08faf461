"""A glidectl PNG's image made again (``glidectl sample --from-png``): its record as
``sample``'s settings (read by :mod:`glidectl.remake_records`), and the checks that the
files it names still hold what made it.

An image's pixels depend on the number of images in the batch that made it (it sets the
order of float sums), not on the other images in it nor on its place there (measured on the
tiny models at 1 and 2 threads): a remake samples a batch as long as the one that made the
image and keeps that image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GlidectlError, a_or_an
from .ranges import SEED_MAX, plain_number

PATHS = ("low_res", "inpaint_image", "inpaint_mask")
MODELS = {"base": "base weights", "upsampler": "upsampler weights"}


@dataclass(frozen=True)
class Pinned:
    """A file a PNG names with the sha256 of what made it: ``param`` is sample's parameter
    that takes it; ``tries`` the paths to look at, the first the one the record names."""

    param: str
    what: str
    tries: tuple[str, ...]
    sha256: str | None
    scale: str | None = None  # a LoRA's
    metavar: str = "SPEC"  # what the flag takes, for messages
    tensors: bool = False  # sha256 of the tensors (a preview's), not of the file's bytes


@dataclass
class Remake:
    """What a PNG records, as ``glidectl sample``'s parameters (``values``), the files it pins
    (``pinned``) and the batch that made it: ``batch`` images, the image at ``place``
    (None: the whole request, a preview's grid)."""

    png: Path
    source: str  # sample, web UI, eval, training preview
    values: dict[str, Any]
    pinned: list[Pinned] = field(default_factory=list)
    batch: int | None = None
    place: int = 0
    prompt_sha256: str | None = None
    plugins: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    specs: dict[str, str] = field(default_factory=dict)  # recorded model specs by param
    plugins_known: bool = False  # the record says which plugin code ran
    kept: int | None = None  # the image of the request to write (None: all); set by apply
    missing: str | None = None  # why the weights it names are not there (--base: others)
    device: str | None = None  # the device type that made it (cpu, cuda, mps)
    vocab_sha256: str | None = None  # the GPT-2 vocabulary's that tokenized the prompt
    api_only: dict[str, Any] = field(default_factory=dict)  # generate()'s, no sample flag
    # per model flag (base, upsampler), the weights' dtype where not float32: a model of
    # load_model(dtype=...), which sample (loading float32) cannot make again
    dtypes: dict[str, str] = field(default_factory=dict)
    # settings an older record leaves open: key -> (the other value it may mean, a line
    # saying so, shown unless the key is given; given, that value is no change)
    open_values: dict[str, tuple[str, str]] = field(default_factory=dict)
    # settings the record leaves unset (input images, upsampler guidance) -> the value that
    # means the same (None too): a flag giving another makes another picture
    unset: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.png)

    def apply(self, params: dict[str, Any], given: set[str]) -> list[str]:
        """Put the recorded values into ``params`` (sample's, by name) except those ``given``
        on the command line, after checking the files they name; set the request to remake
        the one image (:attr:`kept`). Returns lines saying what differs from the record."""
        hashed = {p.param for p in self.pinned if p.sha256 and p.param != "lora"}
        low_res = params.get("low_res") if "low_res" in given else self.values.get("low_res")
        unused = {"base"} if low_res else set()  # --low-res upsamples it, no base sample
        changed = [f"{_flag(k)} {params[k]}" for k in sorted(given & set(self.values) - unused)
                   if k not in ("prompts", "lora", "vocab_dir", *hashed)
                   and str(params[k]) not in (str(self.values[k]),
                                              self.open_values.get(k, ("",))[0])]
        changed += [f"{_flag(p.param)} {params[p.param]} (not the file that made it)"
                    for p in self.pinned if p.param in given & hashed - unused
                    and not _holds(p, params[p.param])]
        changed += [f"{_flag(k)} {params[k]}" for k in sorted(given & set(self.unset))
                    if params[k] not in (None, self.unset[k])]
        if "prompts" in given:
            if [self._prompt_given(p) for p in params["prompts"]] != self.values["prompts"]:
                changed.insert(0, "the prompt")
        elif self.prompt_sha256:
            raise GlidectlError(
                f"{self.name} records only the start of its prompt ({self.values['prompts'][0]!r}"
                "); pass the whole prompt: glidectl sample \"PROMPT\" --from-png "
                f"{self.name}.")
        if self.missing and not given & {"base", "lora"}:
            raise GlidectlError(self.missing)
        if "lora" in given and params["lora"] != self.values.get("lora"):
            changed.append("--lora " + " ".join(params["lora"] or ()) + _left_out(
                params["lora"] or (), self.values.get("lora") or ()))
        loaded = [f"{k}'s in {v}" for k, v in self.dtypes.items() if k not in given]
        if loaded and not changed:  # float32 weights compute other pixels
            raise GlidectlError(
                f"{self.name} was made from weights loaded in another dtype than float32 "
                f"({', '.join(loaded)}: load_model(SPEC, dtype=...)), which glidectl sample "
                "cannot load, so --from-png would make another picture; make it again with "
                "GlidePipeline(load_model(SPEC, dtype=...)).generate(...).")
        changed += [f"the {k}'s weights in float32, not {v}" for k, v in self.dtypes.items()
                    if loaded and k not in given]
        changed += [f"{_flag(k)} {params[k]}" for k in sorted(given & set(self.api_only))]
        api_only = {k: v for k, v in self.api_only.items() if k not in given}
        if api_only:  # settings sample cannot give: no remake, unless others change
            set_ = ", ".join(f"{k}={v!r}" for k, v in api_only.items())
            if not changed:
                raise GlidectlError(
                    f"{self.name} was made by generate() with {set_}, which glidectl sample "
                    "cannot set, so --from-png would make another picture; make it again "
                    f"with GlidePipeline.generate(..., {set_}).")
            changed.append(f"generate()'s {set_} (sample cannot set it)")
        for pin in self.pinned:
            if pin.param not in given:
                self._check(pin)
        if self.vocab_sha256 and "vocab_dir" in given:
            from .tokenizer import FLAG_VOCAB, vocab_named

            with vocab_named(*FLAG_VOCAB):
                sha = _vocab_sha(params["vocab_dir"], quiet=False)
            if sha != self.vocab_sha256:
                changed.append(f"--vocab-dir {params['vocab_dir']} (not the vocabulary that "
                               "made it)")
        elif self.vocab_sha256:
            self._check_vocab()
        self._check_samplers(given)
        self._check_values(given)
        for key, value in self.values.items():
            if key not in given:
                params[key] = value
        self.kept = None
        if self.batch is not None and len(params["prompts"]) == 1 and not given & {
                "n", "batch_size"}:
            # its place in the batch does not change its pixels: kept unless the seeds of
            # the batch around it would leave 0..2**63-1
            seed, n = int(params["seed"]), self.batch
            place = min(max(self.place, seed + n - 1 - SEED_MAX), seed)
            params["n"], params["seed"], self.kept = n, seed - place, place
        notes = [*self.notes, *(line for k, (_, line) in self.open_values.items()
                                if k not in given)]
        return notes + ([f"Not as {self.name} records: {', '.join(changed)} (given); "
                                 "the image will differ."] if changed else [])

    def line(self, n: int) -> str:
        """What the remake samples, in one line."""
        if self.kept is None:
            return f"Making the images of {self.name} ({a_or_an(self.source)} PNG) again."
        text = f"Making the image of {self.name} ({a_or_an(self.source)} PNG) again"
        if n > 1:  # its place in the remade batch may differ (a seed near 0): not said
            text += (f": its batch held {n} images (it was image {self.place + 1}) and the "
                     f"batch size changes float sums, so {n} are sampled and it is kept")
        return text + "."

    def device_note(self, now: str) -> str | None:
        """A line when the image was made on another device type than ``now``."""
        if self.device and self.device != now:
            return (f"{self.name} was made on {self.device}; this runs on {now}: the image may "
                    "differ (pass --device to choose).")
        return None

    def restore(self, pipe: Any) -> None:
        """Name each model loaded from a pinned file by the spec the PNG records, so the
        new PNG records what the old one did (a run folder's latest has moved on since)."""
        for param, stage in (("base", "base"), ("upsampler", "upsample")):
            record = pipe.records.get(stage)
            if param in self.specs and record is not None:
                record.spec = self.specs[param]

    def _prompt_given(self, prompt: str) -> str:
        """The prompt as the record stores it (an excerpt, when the whole one is given)."""
        import hashlib

        if self.prompt_sha256 and hashlib.sha256(prompt.encode()).hexdigest() == \
                self.prompt_sha256:
            return self.values["prompts"][0]
        return prompt

    def _check(self, pin: Pinned) -> None:
        """Use the first of ``pin.tries`` that holds what made the image; else one sentence."""
        from .pipeline import file_sha256
        from .pipeline_records import IN_MEMORY

        held = None
        aside = _set_aside(pin)
        for path in (*pin.tries, *_beside(self.png, pin), *aside):
            found = None if path == IN_MEMORY else _pinned_file(pin, path)
            if found is None:
                continue
            sha = _sha(pin, found, file_sha256)
            if pin.sha256 is None or sha == pin.sha256:
                self.values[pin.param] = _value(pin, path, found, self.values.get(pin.param))
                if path in aside:
                    self.notes.append(f"{self.name} was made with the {pin.what} of a step a "
                                      "resume from an earlier checkpoint set aside: made from "
                                      f"{path}.")
                return
            if path in pin.tries:  # a file the record names (not one found above the PNG)
                held = held or (path, sha)
        flag, first = _flag(pin.param), pin.tries[0]
        short = f" (sha256 {pin.sha256[:12]}…)" if pin.sha256 else ""
        if held is not None:
            other = f"other contents now (sha256 {held[1][:12]}…)"
            if pin.sha256 and "+" in pin.sha256 and held[1].split("+")[0] == \
                    pin.sha256.split("+")[0]:  # an adapter's weights as made, its settings not
                other = "other settings now (its adapter_config.json: lora_alpha, …)"
            raise GlidectlError(
                f"{self.name} was made with the {pin.what} {first!r}{short}, but "
                f"{held[0]!r} holds {other}; pass {self._flags(pin, _arg(pin, held[0]))} "
                "to use what is there now (the image will differ).")
        if first == IN_MEMORY and pin.metavar == "IMAGE":  # a PIL image or tensor, no file
            raise GlidectlError(
                f"{self.name} was made from a {pin.what} passed to generate() in memory, "
                f"which the PNG does not hold; pass {flag} {pin.metavar} with that image.")
        if first == IN_MEMORY:  # a model passed to GlidePipeline, loaded by no spec
            raise GlidectlError(
                f"{self.name} was made with {pin.what} passed to GlidePipeline in memory, "
                f"which the PNG does not name; pass {flag} {pin.metavar} with those weights.")
        where = (" (the web UI names files relative to its models folder: run this there)"
                 if self.source == "web UI" else "")
        raise GlidectlError(
            f"{self.name} was made with the {pin.what} {first!r}{short}, which is not there"
            f"{where}; pass {self._flags(pin, pin.metavar)} to use another (the image will "
            "differ).")

    def _flags(self, pin: Pinned, arg: str) -> str:
        """``--flag arg`` for ``pin``; for one LoRA of several, every recorded ``--lora``
        with ``arg`` in its place: a given --lora list replaces the record's whole list."""
        loras = [str(t) for t in self.values.get("lora") or ()]
        paths = [_lora_path(t) for t in loras]
        if pin.param != "lora" or len(loras) < 2 or pin.tries[0] not in paths:
            return f"{_flag(pin.param)} {arg}"
        loras[paths.index(pin.tries[0])] = arg
        return " ".join(f"--lora {t}" for t in loras)

    def _check_vocab(self) -> None:
        """Use the recorded ``--vocab-dir`` if it holds the vocabulary that tokenized the
        prompt, else the default one if that does; else one sentence naming --vocab-dir."""
        from .tokenizer import VOCAB_ENV

        recorded = self.values.get("vocab_dir")
        held = []
        for where in ([recorded] if recorded else []) + [None]:
            # no folder recorded and no default vocabulary (offline): its own sentence
            sha = _vocab_sha(where, quiet=where is not None or bool(recorded))
            if sha == self.vocab_sha256:
                self.values["vocab_dir"] = where
                return
            held.append((where, sha))
        made = f"in {recorded!r}" if recorded else "found by default"
        now = [(f"{w!r} holds another" if w else f"the default one here ({VOCAB_ENV}, else "
                "tiktoken's) is another") + f" (sha256 {sha[:12]}…)" if sha else
               (f"{w!r} is not there or holds none" if w else "no default one is available")
               for w, sha in held]
        raise GlidectlError(
            f"{self.name} was made with the GPT-2 vocabulary {made} (sha256 "
            f"{self.vocab_sha256[:12]}…), but {' and '.join(now)}; pass --vocab-dir DIR with "
            "the vocabulary that made it, or with another (the image will differ).")

    def _check_values(self, given: set[str]) -> None:
        """A recorded setting sample's own checks refuse (not overridden by its flag) is one
        sentence naming the record's key: their messages name a flag no one typed."""
        for key, value in self.values.items():
            if key in given or value is None or key not in _MUST_BE:
                continue
            must, usable = _MUST_BE[key]
            schedule = key.replace("steps", "schedule")  # a σ schedule takes a count only
            if key.endswith("steps") and schedule not in given and _on_sigmas(
                    self.values.get(schedule)) and usable(value):
                must, usable = (f"a whole number of steps from 1 to 10000, as its "
                                f"{schedule} {self.values[schedule]!r} takes"), _count
            if not usable(value):
                raise GlidectlError(
                    f"{self.name}'s glidectl record holds {key} = {value!r}, which is not "
                    f"{must} (damaged or edited); pass {_flag(key)} VALUE to use another (the "
                    "image will differ), or the PNG as glidectl wrote it.")

    def _check_samplers(self, given: set[str]) -> None:
        """A recorded sampler or schedule no loaded plugin registers is one sentence; other
        plugin code than made the image, a line."""
        from . import plugins
        from .samplers.tuned import is_schedule_file

        for key in ("sampler", "upsample_sampler", "schedule", "upsample_schedule"):
            name = self.values.get(key)
            registry = plugins.schedules() if "schedule" in key else plugins.samplers()
            own = plugins.RESERVED["schedule"] if "schedule" in key else {}
            if key in given or not name or name in registry or name in own or (
                    is_schedule_file(name)):  # "auto" (older records) and "respaced" too
                continue
            made = f" of {', '.join(self.plugins)}" if self.plugins else ""
            raise GlidectlError(
                f"{self.name} was made with the {key.replace('_', ' ')} {name!r}{made}, which "
                "no loaded plugin registers (not installed, or left out by "
                f"GLIDECTL_LOAD_PLUGINS); install it, or pass {_flag(key)} NAME to use another "
                "(the image will differ).")
        keys = ("sampler", "upsample_sampler", "schedule", "upsample_schedule")
        if not self.plugins_known or given & set(keys):
            return
        now = plugins.plugins_used([self.values.get(k) for k in keys[:2]],
                                   [self.values.get(k) for k in keys[2:]])
        if now != self.plugins:
            self.notes.append(f"{self.name} was made with "
                              f"{', '.join(self.plugins or ['glidectl alone'])}; now "
                              f"{', '.join(now or ['glidectl alone'])} runs: the image may "
                              "differ.")


def _vocab_sha(vocab_dir: str | None, quiet: bool = True) -> str | None:
    """:func:`glidectl.tokenizer.vocab_sha256` of ``vocab_dir`` (None: the default); with
    ``quiet``, None for a vocabulary that is not there or cannot be read."""
    from .tokenizer import vocab_sha256

    try:
        return vocab_sha256(vocab_dir)
    except GlidectlError:
        if not quiet:
            raise
        return None


def _beside(png: Path, pin: Pinned) -> list[str]:
    """``pin``'s relative paths joined to each folder above ``png``: a PNG records paths
    as typed, relative to where it was made, which is usually a folder above it (its
    ``--out``'s parent), so a remake from elsewhere finds them. Only for a pin with a
    sha256, which tells a file that made the image from one that happens to be there."""
    if pin.sha256 is None:
        return []
    from .pipeline_records import IN_MEMORY

    relative = [p for p in pin.tries if p and p != IN_MEMORY
                and not Path(p).expanduser().is_absolute()]
    found = [str(folder / p) for folder in png.resolve().parents for p in relative
             if (folder / p).resolve() != Path(p).resolve()]
    return list(dict.fromkeys(found))


def _set_aside(pin: Pinned) -> list[str]:
    """``pin``'s files in a run's step folder (``RUN/checkpoints/step-N/ema.safetensors``)
    where a resume from an earlier checkpoint set that step aside
    (``RUN/checkpoints/abandoned-after-…/step-N/…``), newest branch first: the weights that
    made the image are there while a new branch's step-N holds others. Only for a pin with
    a sha256, which tells the file that made the image."""
    if pin.sha256 is None:
        return []
    from . import runs

    found = []
    for tried in pin.tries:
        path = Path(tried).expanduser()
        for step_dir in [path, *path.parents][:3]:  # step-N, step-N/ema.safetensors, …/lora/x
            if runs.STEP_RE.fullmatch(step_dir.name) and \
                    step_dir.parent.name == runs.CHECKPOINTS_DIR:
                rest = path.relative_to(step_dir)
                copies = runs.set_aside_copies(step_dir.parent, runs.step_of(step_dir))
                found += [str(copy / rest) for copy in reversed(copies)]
                break
    return list(dict.fromkeys(found))


def _steps(value: Any) -> bool:
    """Whether ``value`` is a count of steps sample takes or a GLIDE respacing string."""
    from .ranges import STEPS
    from .samplers.schedules import respaced_timesteps

    text = str(value).strip()
    if plain_number(text, int):  # ASCII digits: "٣" is no count (str.isdigit() took it)
        return STEPS.min <= int(text) <= STEPS.max
    try:
        return bool(respaced_timesteps(1000, text))
    except GlidectlError:
        return False


def _count(value: Any) -> bool:
    """Whether ``value`` is a whole number of steps (no respacing string)."""
    return plain_number(str(value), int) and _steps(value)  # _steps: from 1


def _on_sigmas(schedule: Any) -> bool:
    """Whether a recorded ``schedule`` is a σ schedule by name (karras, exponential, …),
    which takes a count of steps, not a respacing string."""
    from .samplers.tuned import is_schedule_file

    return isinstance(schedule, str) and schedule not in ("respaced", "auto") and not (
        is_schedule_file(schedule))


def _accepted(check: Any, *args: Any) -> bool:
    """Whether sample's own ``check`` takes ``args`` (it raises one sentence if not)."""
    try:
        check(*args)
    except GlidectlError:
        return False
    return True


def _guidance_tool(key: str) -> Any:
    """The test of one recorded guidance tool: sample's check_guidance_tools on it alone."""
    from .samplers.guidance import check_guidance_tools, parse_interval

    def usable(value: Any) -> bool:
        if key == "guidance_interval":
            return _accepted(lambda: check_guidance_tools(parse_interval(str(value)), 0.0, None))
        tools = {"guidance_rescale": (None, value, None), "dynamic_threshold": (None, 0.0, value)}
        return _accepted(check_guidance_tools, *tools[key])
    return usable


def _precision(value: Any) -> bool:
    from .devices import check_precision

    return _accepted(check_precision, str(value))


# what sample's checks take of the recorded settings they refuse in their flags' names:
# {key: (what it must be, test)}
_MUST_BE: dict[str, tuple[str, Any]] = {
    "steps": ("a number of steps from 1 to 10000 or a respacing string such as fast27",
              _steps),
    "upsample_steps": ("a number of steps from 1 to 10000 or a respacing string such as "
                       "fast27", _steps),
    "guidance_interval": ("two σ values LO,HI with 0 <= LO < HI",
                          _guidance_tool("guidance_interval")),
    "guidance_rescale": ("from 0 to 1", _guidance_tool("guidance_rescale")),
    "dynamic_threshold": ("a percentile from 50 to 100", _guidance_tool("dynamic_threshold")),
    "sigma_max": ("a σ above 0", lambda v: v > 0),
    "precision": ("auto, fp32, bf16 or fp16", _precision),
    "low_res_resample": ("box or bicubic", lambda v: v in ("box", "bicubic")),
}


def _flag(param: str) -> str:
    return "--" + param.replace("_", "-")


def _holds(pin: Pinned, value: Any) -> bool:
    """Whether ``value`` (a flag's) names the file that made the image."""
    from .pipeline import file_sha256

    found = _pinned_file(pin, str(value)) if value else None
    return found is not None and _sha(pin, found, file_sha256) == pin.sha256


def _pinned_file(pin: Pinned, path: str) -> Path | None:
    """The file whose sha256 the record holds, for ``path`` as the record names it."""
    if pin.param == "lora":
        return Path(path) if Path(path).exists() else None
    if pin.param in MODELS:
        from .glide.loading import resolve_spec

        try:
            found = resolve_spec(path, download=False)
        except GlidectlError:
            return None
        return found if found.is_file() else None
    return Path(path) if Path(path).is_file() else None


def _sha(pin: Pinned, path: Path, file_sha256: Any) -> str:
    from .glide.checkpoints import state_sha256

    if pin.param == "lora":
        from .lora import read_adapter

        adapter = read_adapter(path)
        if pin.tensors:
            return state_sha256(adapter.state)
        with_settings = pin.sha256 is not None and "+" in pin.sha256
        return f"{adapter.sha256}+{adapter.config_sha256}" if with_settings else adapter.sha256
    if pin.tensors:
        from safetensors.torch import load_file

        return state_sha256(load_file(path))
    return file_sha256(path)


def _value(pin: Pinned, path: str, found: Path, current: Any) -> Any:
    """Sample's parameter value that loads ``found`` (for ``path`` as the record names it)."""
    if pin.param in MODELS:
        return str(found)  # the file, not a run folder whose latest may move meanwhile
    if pin.param in PATHS:
        return Path(path)
    if pin.param != "lora":
        return path
    loras = list(current or ())
    loras[[_lora_path(t) for t in loras].index(pin.tries[0])] = f"{path}:{pin.scale}"
    return loras


def _lora_path(spec: Any) -> str:
    """The adapter path of a ``PATH[:SCALE]`` spec, as ``--lora`` reads it."""
    from .lora.spec import parse_lora_spec

    return parse_lora_spec(spec).path


def _left_out(given: Any, recorded: Any) -> str:
    """``' (without the recorded A:0.5)'``: the recorded adapters whose folder no given
    ``--lora`` names (a given list replaces the recorded one), '' when there is none."""
    import os

    def where(spec: Any) -> str:
        return os.path.normpath(os.path.abspath(os.path.expanduser(_lora_path(spec))))

    named = {where(t) for t in given}
    gone = [str(t) for t in recorded if where(t) not in named]
    return f" (without the recorded {', '.join(gone)})" if gone else ""


def _arg(pin: Pinned, path: str) -> str:
    return f"{path}:{pin.scale}" if pin.scale else path
