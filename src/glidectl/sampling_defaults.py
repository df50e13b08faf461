"""The sampling defaults every front end shares (``glidectl sample``, ``eval``, ``ui``, the
library and upsampler previews), defined once; torch-free, so the CLI's flags can use them.
A trained base model's recommended settings (its ``[preview]``, kept in its checkpoint
metadata) come before the base ones."""

import json
from pathlib import Path
from typing import Any

from .errors import GlidectlError
from .ranges import is_finite_number

BASE_SAMPLER = "dpm++2m"
BASE_STEPS = 25
BASE_GUIDANCE = 3.0
UPSAMPLE_SAMPLER = "ddpm"  # GLIDE's: fast27 DDPM without guidance
UPSAMPLE_STEPS = "fast27"
UPSAMPLE_SIGMA_STEPS = 27  # fast27's count, for an upsample sampler on a σ schedule
UPSAMPLE_TEMP = 0.997  # initial noise scale of the upsampler, as OpenAI's notebook has it
SIGMA_MAX = 80.0  # highest σ of karras/exponential schedules (clamped to the model's)
BATCH_SIZE = 4
# safetensors metadata key of a trained model's recommended sampling settings (JSON)
RECOMMENDED_KEY = "glidectl.sampling"
RECOMMENDED_FIELDS = ("sampler", "steps", "schedule", "guidance", "eta", "sigma_max", "grey")


def upsample_steps_for(schedule: str | None) -> int | str:
    """The upsampler's default steps on ``schedule``: GLIDE's ``fast27`` on its respaced
    timesteps, else the same 27 steps (a respacing string runs on respaced steps only)."""
    return UPSAMPLE_STEPS if schedule == "respaced" else UPSAMPLE_SIGMA_STEPS


def recommended_line(base: str, upsampler: str, flags: str) -> str:
    """The one line naming the settings a front end took from the models' recommendations:
    ``base`` and ``upsampler`` list each model's ("steps 20, grey"; "" for none), ``flags``
    the flags that change them."""
    whose = [f"the base model's recommended sampling settings ({base})"] if base else []
    if upsampler:
        whose.append(f"the upsampler's ({upsampler})" if base else
                     f"the upsampler's recommended sampling settings ({upsampler})")
    return f"Using {' and '.join(whose)}; pass {flags} to change them."


def recommended_object(text: str | None) -> dict[str, Any]:
    """A checkpoint's :data:`RECOMMENDED_KEY` metadata as a dict: {} when absent, not JSON,
    or JSON that is not an object (no recommendation, as for files without one)."""
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def with_adapter_grey(recommended: dict[str, Any], adapter_grey: bool) -> dict[str, Any]:
    """A model's ``recommended`` settings with an applied LoRA adapter's grey added: an
    adapter trained on greyscale data (``adapter_grey``) makes its model draw grey, as its
    run's previews did, unless the recommendation itself says ``grey``. The one rule
    ``sample``, ``eval``, ``lora merge`` and the web UI follow."""
    return {"grey": True, **recommended} if adapter_grey else recommended


def recommended_settings(path: str | Path | None) -> dict[str, Any]:
    """The sampling settings a trained model recommends (its checkpoint metadata); {} for
    files without them, such as OpenAI's checkpoints (which keep the built-in defaults). A
    setting of the wrong type (a number for a sampler, text for guidance) is one sentence
    naming the file; null is no recommendation."""
    if path is None:
        return {}
    from .glide.checkpoints import metadata_or_empty

    data = recommended_object(metadata_or_empty(path).get(RECOMMENDED_KEY))
    found = {k: v for k, v in data.items()
             if k in RECOMMENDED_FIELDS + ("prompts",) and v is not None}
    for key, value in found.items():
        if not _RECOMMENDED_TYPES[key][0](value):
            raise GlidectlError(
                f"{str(path)!r} recommends {key} = {json.dumps(value)[:60]} in its "
                f"{RECOMMENDED_KEY} metadata, where {_RECOMMENDED_TYPES[key][1]} belongs; "
                "pass the weights as glidectl trained or exported them.")
    return found


# what each recommended setting must be (checked as read: a wrong type was a traceback later)
_RECOMMENDED_TYPES: dict[str, tuple[Any, str]] = {
    "sampler": (lambda v: isinstance(v, str), "a sampler name"),
    "schedule": (lambda v: isinstance(v, str), "a schedule name or file"),
    "steps": (lambda v: isinstance(v, str | int) and not isinstance(v, bool),
              "a whole number of steps or a respacing string"),
    "guidance": (is_finite_number, "a number"),
    "eta": (is_finite_number, "a number"),
    "sigma_max": (is_finite_number, "a number"),
    "grey": (lambda v: isinstance(v, bool), "true or false"),
    "prompts": (lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v),
                "a list of prompts"),
}
