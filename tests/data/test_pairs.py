"""A library caller's own (image, caption) pairs as training data (glidectl.data.pairs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glidectl.data import build_dataset
from glidectl.data.pairs import pairs_source
from glidectl.data.stats import DataError
from glidectl.errors import GlidectlError


def test_pairs_whose_images_cannot_be_read_say_what_to_check_not_a_command(
        tmp_path, data_cfg, byte_tok):
    source = pairs_source([(str(tmp_path / "gone.png"), "a cat"), (Image.new("RGB", (2, 2)),
                                                                     "a dot")])
    ds = build_dataset(data_cfg(), tokenizer=byte_tok, image_size=32, text_ctx=64,
                       train=False, source=source)
    with pytest.raises(DataError) as err:
        list(ds)
    message = str(err.value)
    assert message.startswith("No valid samples in data source 'dataset= (2 (image, caption) "
                              "pairs)': 2 rejected (")
    assert "Check the pairs' images (" in message and "glidectl dataset inspect" not in message


@pytest.mark.parametrize(("image", "said"), [
    (np.zeros((16, 16, 3), np.uint8), "dataset[0]'s image is a numpy array of shape "
     "(16, 16, 3); pass Image.fromarray(array) for 8-bit H×W×3 pixels, or an image file's "
     "path."),
    (torch.zeros(3, 16, 16), "dataset[0]'s image is a tensor of shape (3, 16, 16); pass "
     "a PIL image (glidectl.images.to_pil turns [N,3,H,W] tensors in [-1, 1] into them), or "
     "an image file's path."),
])
def test_a_pair_of_an_array_says_what_to_pass_in_one_line(image, said) -> None:
    """A numpy or tensor image (was: its multi-line repr cut at 80 characters, not saying
    which part of the pair was wrong)."""
    with pytest.raises(GlidectlError) as error:
        pairs_source([(image, "a cat")])
    assert str(error.value) == said
