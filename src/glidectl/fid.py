"""FID and KID with torchmetrics: generated images against reference images.

Features come from a local weights file: torch-fidelity's Inception-v3
(``weights-inception-2015-12-05-6726825d.pth``, the network FID is defined with; see the README
for where to get it) through ``torchmetrics`` with ``torch-fidelity`` installed, or any
``nn.Module`` mapping uint8 images ``(N, 3, H, W)`` to features ``(N, d)``. Without
weights the metric is absent and the reason says why: never a silent 0.

Used by ``validation.fid_every`` during training and by ``glidectl eval --fid``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import GlidectlError, cause
from .extras import import_problem

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FEATURES = 2048  # the pool features FID is defined with (:func:`inception`)
# KID's subset size (torchmetrics' and torch-fidelity's default): its kernels hold subset²
# numbers (subsets of every image took 1 GiB more at 8,000 images, ~15 GiB at 30,000)
KID_SUBSET = 1000


@dataclass
class Features:
    """What computes features: a module, or Inception with a weights file; or why none."""

    module: torch.nn.Module | None = None
    weights: Path | None = None
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.module is not None or self.weights is not None

    def network(self) -> torch.nn.Module:
        """The module, else Inception-v3 built from the weights file (:func:`inception`)."""
        return self.module if self.module is not None else inception(self.weights)


def inception_features(weights: str | Path | None) -> Features:
    """Inception-v3 features from a local weights file (checked without unpickling code)."""
    if not weights:
        return Features(reason="no Inception weights given (--fid-weights / "
                               "validation.fid_weights; see the README)")
    path = Path(weights).expanduser()
    if not path.is_file():
        what = ("do not exist" if not path.exists() else "are a folder, not a file"
                if path.is_dir() else "are no file (a device or a pipe)")
        raise GlidectlError(
            f"FID weights {str(path)!r} {what}; pass the path of {INCEPTION_FILE} "
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
    except Exception as exc:  # missing, or e.g. a torchvision built for another torch
        why = import_problem(exc, "torch_fidelity", "fid")
        return Features(reason=f"torch-fidelity {why}, which builds the Inception network")
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


def _metrics_problem() -> str | None:
    """Why torchmetrics' FID/KID cannot run here, or None."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: F401
        from torchmetrics.image.kid import KernelInceptionDistance  # noqa: F401
    except Exception as exc:  # missing, or e.g. a torchvision built for another torch
        return f"torchmetrics {import_problem(exc, 'torchmetrics', 'fid')}"
    return None


@torch.no_grad()
def features_of(network: torch.nn.Module, batches: Iterable[Any]) -> list[torch.Tensor]:
    """The network's features of each batch (see :func:`to_uint8`), a batch at a time: an
    iterator of batches is never held whole, only its features."""
    return [network(to_uint8(b)) for b in batches]


HALF = (torch.float16, torch.bfloat16)


def fid_kid(real: Iterable[Any], fake: Iterable[Any], features: Features,
            kid_subset_size: int | None = None) -> dict[str, Any]:
    """``{"fid", "kid", "kid_std", "fid_real", "fid_fake"}`` for batches of real and fake
    images (see :func:`to_uint8`), or ``{"fid_missing": reason}`` without features.

    KID's 10 subsets hold ``kid_subset_size`` samples (default :data:`KID_SUBSET`, fewer when
    a side has fewer, so small evaluations work; KID is unbiased, FID on few samples is
    biased upwards).
    """
    if not features.available:
        return {"fid_missing": features.reason}
    if problem := _metrics_problem():
        return {"fid_missing": problem}
    network = features.network()
    return fid_kid_of(features_of(network, real), features_of(network, fake), kid_subset_size)


def fid_kid_of(real: list[torch.Tensor], fake: list[torch.Tensor],
               kid_subset_size: int | None = None) -> dict[str, Any]:
    """:func:`fid_kid` from batches of features already computed."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n_real = sum(b.shape[0] for b in real)
    n_fake = sum(b.shape[0] for b in fake)
    if min(n_real, n_fake) < 2:
        raise GlidectlError(
            f"FID/KID need at least 2 real and 2 generated images; got {n_real} and {n_fake}."
        )
    if problem := _nonfinite_features(real, fake):
        return {"fid_missing": problem}
    subset = min(kid_subset_size or KID_SUBSET, n_real, n_fake)
    given = _Given(real[0].shape[-1])
    fid = FrechetInceptionDistance(feature=given, reset_real_features=True)
    with warnings.catch_warnings():  # it keeps every feature, as it must: not news to users
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        kid = KernelInceptionDistance(feature=given, subsets=10, subset_size=subset)
    for metric in (fid, kid):  # float32 at least: KID's kernel sums overflow float16
        for batch in real:
            metric.update(batch.float() if batch.dtype in HALF else batch, real=True)
        for batch in fake:
            metric.update(batch.float() if batch.dtype in HALF else batch, real=False)
    with torch.random.fork_rng():  # KID's subsets are drawn from torch's global generator
        torch.manual_seed(0)
        kid_mean, kid_std = kid.compute()
    return finite_scores({"fid": float(fid.compute()), "kid": float(kid_mean),
                          "kid_std": float(kid_std), "fid_real": n_real, "fid_fake": n_fake})


def _bad_rows(batches: list[torch.Tensor]) -> int:
    """How many feature rows of ``batches`` hold a NaN or an infinity."""
    return sum(int((~torch.isfinite(b.float()).all(dim=-1)).sum()) for b in batches)


def _nonfinite_features(real: list[torch.Tensor], fake: list[torch.Tensor]) -> str | None:
    """Why FID/KID are undefined when some images' features are not finite numbers (a
    damaged weights file, a feature network that overflows), else None."""
    bad_real, bad_fake = _bad_rows(real), _bad_rows(fake)
    if not bad_real + bad_fake:
        return None
    sides = [f"{bad} of the {n} {side} images" for bad, n, side in (
        (bad_real, sum(b.shape[0] for b in real), "reference"),
        (bad_fake, sum(b.shape[0] for b in fake), "generated")) if bad]
    return (f"the Inception features of {' and '.join(sides)} are not finite numbers (NaN or "
            "infinity), so FID and KID are undefined; check the Inception weights file")


def finite_scores(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with a score that came out NaN or infinite made absent with the reason
    (``fid_missing``, or ``kid_missing`` for KID alone), as metadata.json and metrics.jsonl
    are strict JSON, which has no NaN."""
    if not math.isfinite(result["fid"]):
        return {"fid_missing": f"FID came out {result['fid']} (not a finite number) for "
                               f"{result['fid_fake']} generated images"}
    if "kid" in result and not (math.isfinite(result["kid"])
                                and math.isfinite(result["kid_std"])):
        result = {k: v for k, v in result.items() if k not in ("kid", "kid_std")}
        result["kid_missing"] = "KID came out as no finite number"
    return result


def reference_images(source: str, size: int, limit: int, batch: int = 64,
                     unreadable: list[str] | None = None,
                     leave_out: Path | None = None) -> Iterator[torch.Tensor]:
    """Up to ``limit`` reference images as [-1, 1] batches of ``batch``, centre-cropped to
    ``size``: the images of a folder (captions not needed; of a larger folder, ``limit``
    spread evenly over its sorted files, not the first, which may all be one class's
    subfolder), or the first samples of any other data source. Read a batch at a time (tens
    of thousands of references do not fit in memory).
    A folder's images are decoded as training decodes them (:func:`open_image`: turned by
    their EXIF orientation, transparency over white, 16-bit by its bit depth); a file that
    does not open as an image is left out and named in ``unreadable`` (the samples of other
    sources are judged by their data pipeline). A folder's files under ``leave_out`` (the
    scoring eval's own ``--out``, when it lies inside the reference folder) are no
    references: they would be scored against themselves."""
    import random

    from .data.images import Rejected, open_image
    from .data.records import IMAGE_EXTENSIONS
    from .data.transforms import ImageTransform
    from .data.walk import visible_files
    from .images import from_pil

    def samples() -> Iterator[torch.Tensor]:
        folder = Path(source).expanduser()
        if image_folder(source):
            crop = ImageTransform(size, random_crop=False)
            taken = 0
            found = eval_outputs_only(folder, visible_files(folder, IMAGE_EXTENSIONS))
            if leave_out is not None:
                own = leave_out.expanduser().resolve()
                found = [f for f in found if not f.resolve().is_relative_to(own)]
            files = spread(found, limit)  # found as training finds a folder's images
            for path in files:
                if taken == limit:
                    return
                try:  # decoded as training reads images (EXIF turn, alpha, 16-bit)
                    image = crop(open_image(path)[0], random.Random(0))
                except Rejected:
                    if unreadable is not None:
                        unreadable.append(str(path.relative_to(folder)))
                    continue
                taken += 1
                yield from_pil(image, size)[0]
            return
        from .config import DataConfig
        from .data import build_dataset
        from .data.dataset import open_data

        cfg = DataConfig(source=str(source), resolution=size, uncond_p=0.0)
        data = build_dataset(cfg, tokenizer="byte", image_size=size, text_ctx=8, train=False,
                             source=SpreadUnits(open_data(cfg, size, "--fid"), limit))
        for sample in itertools.islice(data, limit):
            yield torch.as_tensor(sample["image"])

    images: list[torch.Tensor] = []
    found = False
    for image in samples():
        images.append(image)
        found = True
        if len(images) == batch:
            yield torch.stack(images)
            images = []
    if images:
        yield torch.stack(images)
    if not found:
        raise GlidectlError(f"--fid {source!r}: no images found; pass a folder of images or "
                            "another data source.")


def eval_outputs_only(folder: Path, files: list[Path]) -> list[Path]:
    """``files`` of a ``--fid`` folder, less, of ``folder`` or any folder in it that is a
    ``glidectl eval`` folder (its ``metadata.json`` records a status), the eval's
    ``grid.png`` and an upsampler eval's ``inputs/``: its images are the reference, not the
    grid of them or the 64 px inputs."""
    import json

    from .eval_outputs import GRID_FILE
    from .eval_settings import META_FILE
    from .eval_upsampler import INPUTS

    def is_eval(path: Path) -> bool:
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(meta, dict) and "status" in meta

    evals = {d for d in {f.parent for f in files} | {f.parent.parent for f in files}
             if d.is_relative_to(folder) and is_eval(d)}
    return [f for f in files if not any(
        f.is_relative_to(d) and f.relative_to(d).parts[0] in (GRID_FILE, INPUTS)
        for d in evals)]


def image_folder(reference: str) -> bool:
    """Whether ``reference`` is a folder read as a folder of images, not a folder that
    training reads as another source (webdataset shards, Parquet files, a dataset saved by
    ``save_to_disk``)."""
    from .data.sources import source_type

    if not Path(reference).expanduser().is_dir():
        return False
    kind = source_type(reference)[0]
    return kind is None or kind.name == "folder"


def spread(items: list[Any], limit: int) -> list[Any]:
    """``items`` with, when there are more than ``limit``, ``limit`` of them spread evenly
    over the list first (not the first ``limit``, which may all be one class's), then the
    rest, which fill in for any that cannot be read."""
    if len(items) <= limit:
        return items
    chosen = {k * len(items) // limit for k in range(limit)}
    return [items[k] for k in sorted(chosen)] + [
        x for k, x in enumerate(items) if k not in chosen]


def spread_order(n: int) -> list[int]:
    """0 … n-1 in an order whose every beginning is spread over the whole range (the
    binary van der Corput order: 0, then n/2, n/4, 3n/4, …), so the first images read from
    units of many samples each (shards, tables) come from all over the set."""
    bits = max(n - 1, 1).bit_length()
    return sorted(range(n), key=lambda k: int(f"{k:0{bits}b}"[::-1], 2))


class SpreadUnits:
    """A data source whose units (sorted) are read in an order that spreads the first
    ``limit`` samples over the whole source: one-sample units (a dataset config's images)
    as :func:`spread` spreads a folder's files, units of many samples (shards, Parquet
    files) in :func:`spread_order`; read whole, so nothing is decoded twice. Everything
    else is the wrapped source's."""

    def __init__(self, source: Any, limit: int) -> None:
        self._source, self._limit = source, limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def units(self) -> list[str]:
        units = sorted(set(self._source.units()))
        if self._source.splits_samples:
            return spread(units, self._limit)
        return [units[k] for k in spread_order(len(units))]


def is_stats_file(reference: str) -> bool:
    """True for a reference given as statistics (``.npz``) rather than images."""
    return reference.lower().endswith(".npz")


def reference_stats(reference: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``mu`` and ``sigma`` (float64) of an ``.npz`` of reference statistics, as pytorch-fid
    and clean-fid save them; read with ``allow_pickle=False``, and nothing else in the file
    (guided-diffusion's reference batches hold their images beside them)."""
    import tokenize
    import zipfile
    import zlib

    import numpy as np

    path = Path(reference).expanduser()
    if not path.is_file():
        raise GlidectlError(f"--fid {str(reference)!r}: the statistics file does not exist.")
    if not zipfile.is_zipfile(path):  # numpy would call any other bytes pickled data
        raise GlidectlError(
            f"--fid {str(reference)!r} is not a readable .npz of arrays (not a zip archive, "
            "as numpy.savez writes); pass statistics saved with numpy.savez (mu, sigma), or "
            "a folder of images.")
    try:  # only mu and sigma are read: other arrays (a reference batch's images) are not
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            if "mu" not in names or "sigma" not in names:
                raise GlidectlError(
                    f"--fid {str(reference)!r} holds {', '.join(names) or 'no arrays'}, not "
                    "FID statistics: it needs the arrays 'mu' and 'sigma' (as pytorch-fid and "
                    "clean-fid save them).")
            mu, sigma = data["mu"], data["sigma"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, tokenize.TokenError,
            SyntaxError, MemoryError) as exc:  # a damaged array header or compressed data
        why = ("an array header is damaged" if isinstance(exc, tokenize.TokenError | SyntaxError)
               else cause(exc))
        raise GlidectlError(
            f"--fid {str(reference)!r} is not a readable .npz of arrays ({why}); pass "
            "statistics saved with numpy.savez (mu, sigma), or a folder of images."
        ) from None
    if (mu.ndim != 1 or sigma.shape != (mu.size, mu.size) or mu.dtype.kind not in "fiu"
            or sigma.dtype.kind not in "fiu" or not (np.isfinite(mu).all()
                                                     and np.isfinite(sigma).all())):
        raise GlidectlError(
            f"--fid {str(reference)!r}: 'mu' {list(mu.shape)} and 'sigma' {list(sigma.shape)} "
            "are not finite numbers of shapes [d] and [d, d]."
        )
    return torch.from_numpy(mu.astype(np.float64)), torch.from_numpy(sigma.astype(np.float64))


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor,
                     sigma2: torch.Tensor) -> float:
    """‖μ1 − μ2‖² + tr(Σ1) + tr(Σ2) − 2·tr √(Σ1Σ2), the trace of the root from the
    eigenvalues of Σ1Σ2 (torchmetrics' formula, so both references give the same number)."""
    root = torch.linalg.eigvals(sigma1 @ sigma2).sqrt().real.sum()
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * root)


def fid_against_stats(fake: list[torch.Tensor], reference: str) -> dict[str, Any]:
    """FID of batches of generated images' features against reference statistics (``mu``,
    ``sigma``); KID needs reference images, so it is absent with that reason."""
    mu, sigma = reference_stats(reference)
    feats = torch.cat([b.double() for b in fake])
    if feats.shape[0] < 2:
        raise GlidectlError(f"FID needs at least 2 generated images; got {feats.shape[0]}.")
    _check_width(reference, mu.numel(), feats.shape[1])
    if problem := _nonfinite_features([], fake):
        return {"fid_missing": problem}
    # one feature: torch.cov gives a 0-d tensor, the statistics a 1×1 matrix
    fid = frechet_distance(feats.mean(0), torch.atleast_2d(torch.cov(feats.T)), mu, sigma)
    return finite_scores({"fid": fid, "fid_fake": feats.shape[0], "kid_missing":
                          "the reference is statistics, and KID needs reference images"})


def _check_width(reference: str, stats: int, network: int) -> None:
    """One sentence when statistics of ``stats`` features cannot score a network's
    ``network`` (pytorch-fid's ``--dims 64/192/768`` statistics against Inception's 2048)."""
    if stats != network:
        raise GlidectlError(
            f"--fid {reference!r} holds statistics of {stats} features, but the feature "
            f"network gives {network}; use statistics of Inception-v3's {INCEPTION_FEATURES} "
            "pool features."
        )


def check_reference(reference: str, generated: int | None = None,
                    features: int | None = None) -> None:
    """Refuse a ``--fid`` reference that cannot be read (a folder: one without 2 files that
    open as images; statistics: not of ``features`` features, when given), or a run of fewer
    than 2 images (``generated``), before any image is generated."""
    if generated is not None and generated < 2:
        raise GlidectlError(f"--fid needs at least 2 images to score, but this run makes "
                            f"{generated}; add a prompt or pass --n 2.")
    if is_stats_file(reference):
        mu, _ = reference_stats(reference)
        if features is not None:
            _check_width(reference, mu.numel(), features)
        return
    path = Path(reference).expanduser()
    if image_folder(reference):
        _check_folder(reference, path)
        return
    from .config import DataConfig
    from .data.sources import open_source

    try:
        open_source(reference, DataConfig(source=reference))
    except GlidectlError as exc:
        if path.exists() or any(c in reference for c in ":*?[{"):  # the source's own reason
            raise GlidectlError(f"--fid {reference!r}: {exc}") from None
        raise GlidectlError(
            f"--fid {reference!r} does not exist; pass a folder of images, another data "
            "source or an .npz of reference statistics."
        ) from None


def _check_folder(reference: str, folder: Path) -> None:
    """One sentence unless 2 of the folder's files (any depth) open as images, as
    :func:`reference_images` reads them: a header is read, no pixels."""
    from PIL import Image

    from .data.records import IMAGE_EXTENSIONS
    from .data.walk import visible_files

    named, opened, others = 0, 0, 0
    for path in visible_files(folder, ("",)):  # every file, as reference_images walks
        if not path.name.lower().endswith(IMAGE_EXTENSIONS):
            others += path.is_file()
            continue
        named += 1
        try:
            with Image.open(path):
                opened += 1
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        if opened == 2:
            return
    found = (f"{opened} file that opens as an image" if opened else "no image")
    if named > opened:
        bad = named - opened
        found += (f" ({bad} file named as an image does not open)" if bad == 1 else
                  f" ({bad} files named as images do not open)")
    elif others:
        found += f" (and {others} other file{'s' * (others > 1)})"
    raise GlidectlError(f"--fid {reference!r} holds {found}; FID/KID need at least 2 reference "
                        "images: pass a folder of images, another data source or an .npz of "
                        "reference statistics.")


FAKE_BATCH = 64  # generated images a feature batch holds


class FidStream:
    """FID/KID of ``glidectl eval``'s images given a batch at a time (:meth:`add`), as eval
    reads them back: only their features are kept (2048 numbers an image with Inception),
    never the images. Against a reference folder or data source (read a batch at a time too)
    FID and KID; against an ``.npz`` of statistics FID alone."""

    def __init__(self, reference: str, features: Features, limit: int = 50_000,
                 out: Path | None = None) -> None:
        """``out``: the eval's folder, whose images are never references of its own."""
        self.reference, self.features, self.limit = str(reference), features, limit
        self.out = out
        self.missing = features.reason if not features.available else (
            None if is_stats_file(self.reference) else _metrics_problem())
        self.network: torch.nn.Module | None = None
        self.fake: list[torch.Tensor] = []
        self.size = 0  # of the generated images, which the references are cropped to

    def add(self, images: Sequence[Any]) -> None:
        """The features of a batch of generated images (PIL)."""
        if self.missing or not images:
            return
        if self.network is None:
            self.network = self.features.network()
        self.size = self.size or images[0].size[0]
        self.fake += features_of(self.network, [images])

    def result(self) -> dict[str, Any]:
        """What :func:`fid_kid` (or :func:`fid_against_stats`) gives, with ``reference``; or
        ``{"fid_missing": reason}``."""
        if self.missing:
            return {"fid_missing": self.missing}
        if is_stats_file(self.reference):
            return {**fid_against_stats(self.fake, self.reference), "reference": self.reference}
        n_fake = sum(b.shape[0] for b in self.fake)
        if n_fake < 2:
            raise GlidectlError(f"FID/KID need at least 2 generated images; got {n_fake}.")
        assert self.network is not None
        unreadable: list[str] = []
        real = features_of(self.network, reference_images(
            self.reference, self.size, self.limit, unreadable=unreadable, leave_out=self.out))
        result = {**fid_kid_of(real, self.fake), "reference": self.reference}
        if unreadable:  # a damaged file among tens of thousands must not lose the run's FID
            result.update(reference_unreadable=len(unreadable),
                          reference_unreadable_files=unreadable[:10])
        return result


def eval_fid(images: Sequence[Any], reference: str, features: Features,
             limit: int = 50_000) -> dict[str, Any]:
    """FID/KID of images (PIL) against a reference folder or source, or FID against
    reference statistics (``.npz``): :class:`FidStream` given them in batches."""
    stream = FidStream(reference, features, limit)
    for start in range(0, len(images), FAKE_BATCH):
        stream.add(images[start:start + FAKE_BATCH])
    return stream.result()
