"""A library caller's own training data, ``(image, caption)`` pairs, read as a data source is.

``train(cfg, dataset=[(Image.open("a.png"), "a red circle"), ("b.jpg", "a blue square")])``:
each pair becomes a :class:`~glidectl.data.records.RawSample`, so the run crops, flips,
captions and resumes them exactly as it would a ``data.source`` folder of those files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from PIL import Image

from ..errors import GlidectlError, one_line
from .records import RawSample
from .stats import RejectionCounter

ACCEPTED = ("a list of (image, caption) pairs, or a torch Dataset (with len() and [i]) that "
            "returns them, each image a PIL image or an image file's path and each caption "
            "text")


class PairsSource:
    """``pairs[i]`` is sample ``i`` (its key ``str(i)``); read lazily, one pair a read, so a
    torch Dataset that opens its files in ``__getitem__`` still does so in the workers."""

    kind = "python"
    splits_samples = True
    inspectable = False  # by `glidectl dataset inspect`: the pairs live in this process

    def __init__(self, pairs: Any) -> None:
        self.pairs = pairs
        self.num_samples = len(pairs)

    def units(self) -> list[str]:
        return [str(i) for i in range(self.num_samples)]

    def read(self, unit: str, counter: RejectionCounter) -> Iterator[RawSample]:
        image, caption = pair_at(self.pairs, int(unit))
        yield RawSample(key=unit, image=image, caption=caption)

    def describe(self) -> str:
        return f"dataset= ({self.num_samples} (image, caption) pairs)"

    def hint(self, reason: str) -> str:
        """What to check when every pair was rejected (most of them for ``reason``)."""
        return (f"Check the pairs' images ({reason}): each a PIL image or the path of an image "
                f"file at least data.min_image_size px (relative paths are read from the "
                f"current folder, {os.getcwd()}).")


def pair_at(pairs: Any, index: int) -> tuple[Image.Image | str | os.PathLike[str], str]:
    """``pairs[index]`` checked: one sentence naming the index and what is accepted."""
    item = pairs[index]
    if isinstance(item, list | tuple) and len(item) == 2:
        image, caption = item
        if isinstance(image, Image.Image | str | os.PathLike) and isinstance(caption, str):
            return image, caption
        import numpy as np
        import torch

        shape = tuple(getattr(image, "shape", ()))
        if isinstance(image, np.ndarray):
            raise GlidectlError(f"dataset[{index}]'s image is a numpy array of shape {shape}; "
                                "pass Image.fromarray(array) for 8-bit H×W×3 pixels, or an "
                                "image file's path.")
        if isinstance(image, torch.Tensor):
            raise GlidectlError(f"dataset[{index}]'s image is a tensor of shape {shape}; pass "
                                "a PIL image (glidectl.images.to_pil turns [N,3,H,W] tensors "
                                "in [-1, 1] into them), or an image file's path.")
    raise GlidectlError(f"dataset[{index}] is {one_line(repr(item)):.80} "
                        f"({type(item).__name__}); pass {ACCEPTED}.")


def pairs_source(data: Any) -> PairsSource:
    """A :class:`PairsSource` of ``data`` (every pair of a list checked now, the first of a
    Dataset), or one sentence saying what ``dataset=`` accepts."""
    if isinstance(data, str | bytes | os.PathLike | dict) or not (
            hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        hint = " (a folder or file is data.source)" if isinstance(data, str | os.PathLike) else ""
        raise GlidectlError(f"dataset= got {data!r:.80} ({type(data).__name__}){hint}; pass "
                            f"{ACCEPTED} (or what glidectl.data.build_dataset makes).")
    if len(data) == 0:
        raise GlidectlError(f"dataset= holds no pairs; pass {ACCEPTED}.")
    for i in range(len(data) if isinstance(data, list | tuple) else 1):  # a Dataset may read
        pair_at(data, i)
    return PairsSource(data)


def own_data(data: Any) -> Any:
    """``dataset=`` as training reads it: None (``data.source``) and a dataset
    :func:`glidectl.data.build_dataset` made stay as they are; anything else is checked and
    read as pairs (:func:`pairs_source`)."""
    from .dataset import StreamDataset

    if data is None or isinstance(data, StreamDataset | PairsSource):
        return data
    return pairs_source(data)
