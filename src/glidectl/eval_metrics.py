"""Image metrics for ``glidectl eval``: demo prompt-following and (optional) CLIP score.

A metric that cannot be computed is *absent with a reason*, never reported as 0.
CLIP needs the optional ``open_clip`` package and local weights; nothing is downloaded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GlidectlError
from .extras import install_hint

CLIP_WEIGHTS_ENV = "GLIDECTL_CLIP_WEIGHTS"
DEFAULT_CLIP_MODEL = "ViT-B-32"


@dataclass
class MetricResult:
    """One metric over a run: per-image values (None = not applicable) or a reason it is absent."""

    name: str
    values: list[float | None] = field(default_factory=list)
    absent: str | None = None

    def summary(self) -> dict[str, Any]:
        """``{"mean", "count"}`` over the images it applies to, or ``{"absent": reason}``."""
        vals = [v for v in self.values if v is not None]
        if self.absent is not None:
            return {"absent": self.absent}
        if not vals:
            return {"absent": "no image had a value for this metric"}
        return {"mean": sum(vals) / len(vals), "count": len(vals)}


def joined(parts: Sequence[MetricResult]) -> MetricResult:
    """One metric over a run from its results on consecutive chunks of the run's images:
    absent (with the first chunk's reason) only when it is absent on every chunk."""
    values = [v for part in parts for v in part.values]
    absent = parts[0].absent if all(p.absent is not None for p in parts) else None
    return MetricResult(parts[0].name, values, absent)


# --------------------------------------------------------------------------- prompt following
def demo_follow_score(image: Any, prompt: str) -> float | None:
    """Fraction of the demo attributes (colour, shape, background) the prompt names that the
    image shows.

    None when the prompt is not in the demos' words or names none of them (the metric does
    not apply: a photo prompt's "red" is no demo colour).
    """
    from .data.demo import is_demo_prompt, score_image

    return score_image(image, prompt)["score"] if is_demo_prompt(prompt) else None


def prompt_following(images: Sequence[Any], prompts: Sequence[str]) -> MetricResult:
    """Demo prompt-following (dominant colour / shape vs prompt) per image.

    Images whose prompt names no demo colour or shape get no value; if no prompt does,
    the metric is absent with that reason.
    """
    result = MetricResult("prompt_following")
    result.values = [demo_follow_score(im, p) for im, p in zip(images, prompts, strict=True)]
    if all(v is None for v in result.values):
        result.absent = ("no prompt names a demo colour or shape in the demos' words, e.g. "
                         "\"a red circle on a white background\" (demo:shapes / demo:colors)")
    return result


# --------------------------------------------------------------------------- CLIP
class ClipUnavailable(Exception):
    """CLIP metrics cannot run here; the message is the one-line reason shown to the user."""


class ClipScorer:
    """CLIP score (100 × cosine of image and text embeddings) with open_clip and local weights."""

    def __init__(self, model: Any, preprocess: Any, tokenizer: Any, device: str, name: str):
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.device, self.name = device, name

    @staticmethod
    def check(weights: str | Path | None = None) -> Path:
        """The local weights file :meth:`load` would read, checked without loading anything:
        ClipUnavailable (open_clip not installed, no weights given) or GlidectlError (no
        such file) otherwise."""
        weights = weights or os.environ.get(CLIP_WEIGHTS_ENV) or None
        try:
            import open_clip  # noqa: F401
        except ImportError:
            raise ClipUnavailable(
                f"CLIP metrics off: open_clip is not installed ({install_hint('clip')})."
            ) from None
        if weights is None:
            raise ClipUnavailable(
                f"CLIP metrics off: no local CLIP weights (pass --clip-weights FILE or set "
                f"{CLIP_WEIGHTS_ENV}); glidectl never downloads them."
            )
        path = Path(weights).expanduser()
        if not path.is_file():
            raise GlidectlError(
                f"CLIP weights file {str(path)!r} does not exist; fix --clip-weights or "
                f"{CLIP_WEIGHTS_ENV}."
            )
        return path

    @classmethod
    def load(
        cls, model_name: str = DEFAULT_CLIP_MODEL, weights: str | Path | None = None,
        device: str = "cpu",
    ) -> ClipScorer:
        """Build CLIP from a local weights file; raise ClipUnavailable with a reason otherwise."""
        path = cls.check(weights)
        import open_clip

        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=str(path), device=device
            )
            tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:  # open_clip raises RuntimeError/KeyError/... for bad inputs
            raise GlidectlError(
                f"Cannot load CLIP model {model_name!r} from {str(path)!r}: {exc}; check "
                "--clip-model matches the weights."
            ) from None
        model.eval()
        return cls(model, preprocess, tokenizer, device, f"{model_name}:{path.name}")

    def score(self, images: Sequence[Any], texts: Sequence[str]) -> list[float]:
        """100·cos(image, text) for each (PIL image, text) pair."""
        import torch

        with torch.no_grad():
            pix = torch.stack([self.preprocess(im) for im in images]).to(self.device)
            tok = self.tokenizer(list(texts)).to(self.device)
            img = self.model.encode_image(pix).float()
            txt = self.model.encode_text(tok).float()
            img = img / img.norm(dim=-1, keepdim=True)
            txt = txt / txt.norm(dim=-1, keepdim=True)
            return [100.0 * float(v) for v in (img * txt).sum(-1)]


def clip_metric(
    scorer: ClipScorer | None, reason: str | None, images: Sequence[Any], prompts: Sequence[str],
    batch_size: int = 16,
) -> MetricResult:
    """CLIP score per image, or absent with ``reason`` when no scorer could be built."""
    result = MetricResult("clip_score")
    if scorer is None:
        result.absent = reason or "CLIP metrics off"
        return result
    for start in range(0, len(images), batch_size):
        vals = scorer.score(images[start:start + batch_size], prompts[start:start + batch_size])
        result.values.extend(v if math.isfinite(v) else None for v in vals)
    return result


def rerank(scores: Sequence[float], keep: int) -> list[int]:
    """Indices of the ``keep`` best candidates, best first (ties keep candidate order; a NaN
    score, which compares with nothing and would scramble the order, ranks last)."""
    order = sorted(range(len(scores)),
                   key=lambda k: (math.inf if math.isnan(scores[k]) else -scores[k], k))
    return order[:keep]
