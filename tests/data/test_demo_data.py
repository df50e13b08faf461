"""demo:shapes / demo:colors are deterministic, balanced and scoreable."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import ImageFilter

from glidectl.config import DataConfig
from glidectl.data import build_dataset
from glidectl.data.demo import COLOURS, SHAPES, make_demo_sample, parse_caption, score_image
from glidectl.errors import GlidectlError


def test_demo_samples_are_deterministic_and_captioned():
    a, b = make_demo_sample("shapes", 7), make_demo_sample("shapes", 7)
    assert a.caption == b.caption and a.image.tobytes() == b.image.tobytes()
    assert a.caption == f"a {a.colour} {a.shape} on a {a.background} background"


def test_demo_classes_are_balanced():
    samples = [make_demo_sample("shapes", i, 16) for i in range(36)]
    combos = {(s.colour, s.shape, s.background) for s in samples}
    assert len(combos) == len(COLOURS) * len(SHAPES) * 2


def test_score_image_accepts_every_generated_picture():
    for name, n in (("shapes", 72), ("colors", 12)):
        for i in range(n):
            s = make_demo_sample(name, i, 64)
            result = score_image(s.image, s.caption)
            assert result["ok"], (s.caption, result)


def test_score_image_catches_wrong_colour_and_shape_and_background():
    s = make_demo_sample("shapes", 0, 64)  # a red circle on white
    assert parse_caption(s.caption) == ("red", "circle")
    wrong = score_image(s.image, "a blue square on a white background")
    assert wrong["colour_ok"] is False and wrong["shape_ok"] is False and not wrong["ok"]
    assert wrong["colour"] == "red" and wrong["shape"] == "circle"
    assert wrong["background_ok"] is True and wrong["score"] == pytest.approx(1 / 3)
    # the background's colour word was taken for the shape's, and a background the demos
    # never draw was dropped: "a circle on a red background" scored this picture 1.0
    assert parse_caption("a circle on a red background") == (None, "circle")
    for caption, score in (("a circle on a red background", 1 / 2),
                           ("a red circle on a blue background", 2 / 3)):
        result = score_image(s.image, caption)
        assert result["background_ok"] is False and not result["ok"], result
        assert result["score"] == pytest.approx(score), result


def _drawn(shape: str, colour: str, background: str, size: int, seed: int):
    import random

    from glidectl.data.demo import BACKGROUNDS, draw_shape

    return draw_shape(shape, COLOURS[colour], BACKGROUNDS[background], size,
                      random.Random(seed))


def test_red_triangle_on_black_scores_one_third_for_a_red_circle_on_white():
    image = _drawn("triangle", "red", "black", 16, 0)
    result = score_image(image, "a red circle on a white background")
    assert (result["colour_ok"], result["shape_ok"], result["background_ok"]) == (
        True, False, False)
    assert result["score"] == pytest.approx(1 / 3) and not result["ok"]


@pytest.mark.parametrize("size, allowed", [(12, 1), (16, 1), (32, 0), (64, 0)])
def test_circle_square_triangle_and_diamond_are_told_apart(size, allowed):
    """Exact at 32 and 64 px; at 16 px a shape is 8-11 pixels across (6-8 at 12 px) and a
    small diamond can be as round as a circle: one miss allowed at both (none today; the
    width-profile scorer before missed 3 of these 96 at 16 px)."""
    from glidectl.data.demo import SHAPE_CLASSES

    wrong = []
    for seed in range(24):
        for shape in SHAPE_CLASSES:
            image = _drawn(shape, list(COLOURS)[seed % 6], ("white", "black")[seed % 2],
                           size, seed)
            found = score_image(image, "a red circle")["shape"]
            if found != shape:
                wrong.append((shape, seed, found))
    assert len(wrong) <= allowed, wrong


def _with_stray_pixels(image, seed: int):
    """Two pixels of the shape's colour stuck to its outline, as model samples have."""
    import random

    arr = np.asarray(image).copy()
    bg = arr[0, 0].astype(int)
    fg = np.abs(arr.astype(int) - bg).sum(-1) > 200
    ys, xs = np.nonzero(fg)
    colour = arr[ys[len(ys) // 2], xs[len(xs) // 2]]
    rng = random.Random(seed)
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    spots = [(top - 1, rng.randint(left, right)), (bottom + 1, rng.randint(left, right)),
             (rng.randint(top, bottom), left - 1), (rng.randint(top, bottom), right + 1)]
    for y, x in rng.sample(spots, 2):
        arr[y, x] = colour
    from PIL import Image

    return Image.fromarray(arr)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_stray_pixel_on_the_outline_does_not_change_the_shape(shape):
    """16 px model samples often carry a pixel or two beside the outline; a profile-based
    scorer read such squares as circles (19 of 48 squares of one model)."""
    wrong = []
    for seed in range(24):
        image = _with_stray_pixels(
            _drawn(shape, list(COLOURS)[seed % 6], ("white", "black")[seed % 2], 16, seed), seed)
        found = score_image(image, "a red circle")["shape"]
        if found != shape:
            wrong.append((seed, found))
    assert len(wrong) <= 1, wrong


def test_rotated_blurred_noisy_shapes_are_told_apart():
    """Drawn shapes degraded the way 16 px samples are (turned up to 8°, blurred, noisy):
    partial edge pixels count in part (the binary-mask fit got 17 of 240 wrong, the width
    profiles 53)."""
    import random

    from PIL import Image

    from glidectl.data.demo import SHAPE_CLASSES

    wrong = []
    for seed in range(60):
        rng, noise = random.Random(seed), np.random.default_rng(seed)
        for shape in SHAPE_CLASSES:
            image = _drawn(shape, list(COLOURS)[seed % 6], ("white", "black")[seed % 2], 16,
                           seed)
            big = image.resize((64, 64), Image.Resampling.BICUBIC).rotate(
                rng.uniform(-8, 8), resample=Image.Resampling.BICUBIC,
                fillcolor=image.getpixel((0, 0)))
            big = big.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 3.0)))
            arr = np.asarray(big.resize((16, 16), Image.Resampling.BOX), dtype=np.float64)
            arr += noise.normal(0, rng.uniform(5, 20), arr.shape)
            found = score_image(arr.clip(0, 255).astype(np.uint8), "a red circle")["shape"]
            if found != shape:
                wrong.append((shape, seed, found))
    assert len(wrong) <= 2, wrong


def test_a_diamond_is_never_the_right_shape():
    for shape in SHAPES:
        result = score_image(_drawn("diamond", "blue", "white", 32, 3),
                             f"a blue {shape} on a white background")
        assert result["shape"] == "diamond" and result["shape_ok"] is False
        assert result["score"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("rgb, expected", [
    ((255, 255, 255), "white"), ((230, 235, 240), "white"), ((0, 0, 0), "black"),
    ((30, 20, 25), "black"), ((128, 0, 0), None), ((128, 128, 0), None), ((128, 128, 128), None),
])
def test_background_must_be_near_white_or_black(rgb, expected):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (16, 16), rgb)
    ImageDraw.Draw(image).rectangle((5, 5, 10, 10), fill=COLOURS["green"])
    result = score_image(image, f"a green square on a {expected or 'black'} background")
    assert result["background"] == expected
    assert result["background_ok"] is (expected is not None)


def test_caption_without_background_is_scored_on_what_it_names():
    result = score_image(_drawn("square", "cyan", "black", 32, 1), "a cyan square")
    assert result["background_ok"] is None and result["score"] == 1.0 and result["ok"]


def test_score_image_takes_tensors_and_survives_blur_and_noise():
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(36):
        s = make_demo_sample("shapes", i, 64)
        blurry = s.image.resize((16, 16)).resize((64, 64)).filter(ImageFilter.GaussianBlur(1.5))
        arr = (np.asarray(blurry, dtype=np.float64) + rng.normal(0, 15, (64, 64, 3))).clip(0, 255)
        import torch

        tensor = torch.from_numpy(arr / 127.5 - 1).permute(2, 0, 1).float()
        hits += score_image(tensor, s.caption)["ok"]
    assert hits >= 32


def test_blank_picture_fails_the_score():
    from PIL import Image

    result = score_image(Image.new("RGB", (64, 64), (255, 255, 255)), "a red circle")
    assert result["colour_ok"] is False and result["shape_ok"] is False


def test_demo_dataset_renders_at_the_training_size(byte_tok):
    ds = build_dataset(DataConfig(source="demo:colors", demo_size=3), tokenizer=byte_tok,
                       image_size=32, text_ctx=40)
    samples = list(ds)
    assert len(samples) == 3 and samples[0]["image"].shape == (3, 32, 32)


def test_unknown_demo_name_suggests_the_nearest():
    with pytest.raises(GlidectlError, match="Did you mean 'demo:shapes'"):
        build_dataset(DataConfig(source="demo:shape"), tokenizer="byte", image_size=16,
                      text_ctx=8)


def test_only_prompts_in_the_demos_words_are_demo_prompts():
    """eval's prompt_following scored "a red car parked in the rain" as a demo red."""
    from glidectl.data.demo import is_demo_prompt

    for prompt in ("a red circle on a white background", "A plain red picture.",
                   "a zorblax on a black background", "an purple square on a black background"):
        assert is_demo_prompt(prompt), prompt
    for prompt in ("a red car parked in the rain", "red", "a red circle on a white background, "
                   "black and white", "a photo of a blue square on a white background"):
        assert not is_demo_prompt(prompt), prompt


def test_score_image_names_a_batch_given_for_one_image():
    """A [N, 3, H, W] batch from ``generate(output="tensor")`` is one sentence saying to
    score its images one at a time (was numpy's "axes don't match array")."""
    import torch

    s = make_demo_sample("shapes", 0, 32)
    one = torch.from_numpy(np.asarray(s.image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
    assert score_image(one, s.caption)["ok"]
    assert score_image(np.asarray(s.image.convert("RGBA")), s.caption)["ok"]
    with pytest.raises(GlidectlError) as error:
        score_image(one[None].repeat(2, 1, 1, 1), s.caption)
    assert str(error.value) == (
        "score_image takes one image (PIL, an [H, W, 3] array or a [3, H, W] tensor), got "
        "Tensor of shape [2, 3, 32, 32]; score a batch one image at a time: "
        "[score_image(x, caption) for x in images].")
