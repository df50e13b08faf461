"""FID and KID with torchmetrics: generated images against reference images.

Features come from a local weights file: torch-fidelity's Inception-v3
(``weights-inception-2015-12-05-6726825d.pth``, the network FID is defined with; see the README
for where to get it) through ``torchmetrics`` with ``torch-fidelity`` installed, or any
``nn.Module`` mapping uint8 images ``(N, 3, H, W)`` to features ``(N, d)``. Without
weights the metric is absent and the reason says why: never a silent 0.

Used by ``validation.fid_every`` during training and by ``glidectl eval --fid``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import GlidectlError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


@dataclass
class Features:
    """What computes features: a module, or Inception with a weights file; or why none."""

    module: torch.nn.Module | None = None
    weights: Path | None = None
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.module is not None or self.weights is not None


def inception_features(weights: str | Path | None) -> Features:
    """Inception-v3 features from a local weights file (checked without unpickling code)."""
    if not weights:
        return Features(reason="no Inception weights given (--fid-weights / "
                               "validation.fid_weights; see the README)")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise GlidectlError(
            f"FID weights {str(path)!r} do not exist; pass the path of {INCEPTION_FILE} "
            "(see the README)."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise GlidectlError(
            f"FID weights {str(path)!r} are not a plain state_dict ({type(exc).__name__}); "
            f"pass torch-fidelity's {INCEPTION_FILE}."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in
                                              state.values()):
        raise GlidectlError(f"FID weights {str(path)!r} hold no state_dict of tensors.")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return Features(reason="torch-fidelity is not installed (pip install torch-fidelity), "
                               "which builds the Inception network")
    return Features(weights=path)


class _Given(torch.nn.Module):
    """Features computed once, handed to both FID and KID (each would run the network)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def inception(weights: Path | None) -> torch.nn.Module:
    """The Inception-v3 pool features (2048) FID is defined with, from a local weights file,
    built once for FID and KID (torchmetrics' KID takes no weights path: it would download)."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                              feature_extractor_weights_path=str(weights))


def to_uint8(images: Any) -> torch.Tensor:
    """PIL images or a float tensor in [-1, 1] → uint8 ``(N, 3, H, W)``."""
    if isinstance(images, torch.Tensor):
        if images.dtype == torch.uint8:
            return images
        return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    import numpy as np

    arrays = [np.asarray(im.convert("RGB")) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def fid_kid(real: Iterable[Any], fake: Iterable[Any], features: Features,
            kid_subset_size: int | None = None) -> dict[str, Any]:
    """``{"fid", "kid", "kid_std", "fid_real", "fid_fake"}`` for batches of real and fake
    images (see :func:`to_uint8`), or ``{"fid_missing": reason}`` without features.

    KID's subsets hold ``kid_subset_size`` samples (default: all of the smaller side, so
    small evaluations work; KID is unbiased, FID on few samples is biased upwards).
    """
    if not features.available:
        return {"fid_missing": features.reason}
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError:
        return {"fid_missing": "torchmetrics is not installed (pip install 'glidectl[fid]')"}

    real_batches = [to_uint8(b) for b in real]
    fake_batches = [to_uint8(b) for b in fake]
    n_real = sum(b.shape[0] for b in real_batches)
    n_fake = sum(b.shape[0] for b in fake_batches)
    if min(n_real, n_fake) < 2:
        raise GlidectlError(
            f"FID/KID need at least 2 real and 2 generated images; got {n_real} and {n_fake}."
        )
    subset = min(kid_subset_size or n_real, n_real, n_fake)
    network = features.module if features.module is not None else inception(features.weights)
    with torch.no_grad():
        real_features = [network(b).double() for b in real_batches]
        fake_features = [network(b).double() for b in fake_batches]
    given = _Given(real_features[0].shape[-1])
    fid = FrechetInceptionDistance(feature=given, reset_real_features=True)
    kid = KernelInceptionDistance(feature=given, subsets=10, subset_size=subset)
    for metric in (fid, kid):
        for batch in real_features:
            metric.update(batch, real=True)
        for batch in fake_features:
            metric.update(batch, real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std),
            "fid_real": n_real, "fid_fake": n_fake}


def reference_images(source: str, size: int, limit: int) -> list[torch.Tensor]:
    """Up to ``limit`` reference images as [-1, 1] batches, centre-cropped to ``size``: the
    images of a folder (captions not needed), or the samples of any other data source."""
    import random

    from .data.records import IMAGE_EXTENSIONS
    from .data.transforms import ImageTransform
    from .images import from_pil

    folder = Path(source).expanduser()
    images: list[torch.Tensor] = []
    if folder.is_dir():
        from PIL import Image

        crop = ImageTransform(size, random_crop=False)
        files = sorted(p for p in folder.rglob("*") if p.name.lower().endswith(IMAGE_EXTENSIONS))
        for path in files[:limit]:
            with Image.open(path) as im:
                images.append(from_pil(crop(im.convert("RGB"), random.Random(0)), size)[0])
    else:
        from .config import DataConfig
        from .data import build_dataset

        cfg = DataConfig(source=str(source), resolution=size, uncond_p=0.0)
        for sample in build_dataset(cfg, tokenizer="byte", image_size=size, text_ctx=8,
                                    train=False):
            images.append(torch.as_tensor(sample["image"]))
            if len(images) >= limit:
                break
    if not images:
        raise GlidectlError(f"--fid {source!r}: no images found; pass a folder of images or "
                            "another data source.")
    return [torch.stack(images[i:i + 64]) for i in range(0, len(images), 64)]


def eval_fid(images: list[Any], reference: str, features: Features,
             limit: int = 50_000) -> dict[str, Any]:
    """FID/KID of ``glidectl eval``'s images (PIL) against a reference folder or source."""
    if not features.available:
        return {"fid_missing": features.reason}
    size = images[0].size[0]
    real = reference_images(reference, size, limit)
    fake = [to_uint8(images[i:i + 64]) for i in range(0, len(images), 64)]
    return {**fid_kid(real, fake, features), "reference": str(reference)}
