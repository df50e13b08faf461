"""A library caller's own (image, caption) pairs as training data (glidectl.data.pairs)."""

from __future__ import annotations

import pytest
from PIL import Image

from glidectl.data import build_dataset
from glidectl.data.pairs import pairs_source
from glidectl.data.stats import DataError


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
