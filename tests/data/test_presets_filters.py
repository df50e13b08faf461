"""Each preset's filter is a pure function: metadata → caption or a rejection reason."""

from __future__ import annotations

import sys

from glidectl import plugins
from glidectl.config import DataConfig
from glidectl.data.preset_api import DatasetPreset, Reject
from glidectl.data.presets import (
    select_alamy,
    select_datacomp,
    select_laion,
    select_simple,
    select_synthetic,
)

OPTS = DataConfig()
LAION = {"original_width": 800, "original_height": 600, "similarity": 0.31, "NSFW": "UNLIKELY",
         "caption": "json caption"}


def test_builtin_presets_are_registered_through_the_plugin_hook():
    entry = plugins.dataset_presets().entry("laion")
    assert entry.plugin == "glidectl.data.presets"
    assert isinstance(entry.obj, DatasetPreset)
    assert set(plugins.dataset_presets().names()) >= {
        "simple", "laion", "alamy", "synthetic", "datacomp"}


def test_register_dataset_presets_plugin_module_does_not_import_torch():
    import subprocess

    code = ("import sys, glidectl.data.presets as p; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_simple_uses_caption_then_metadata_text():
    assert select_simple({}, "  a  cat\t ", OPTS) == "a cat"
    assert select_simple({"text": "from meta"}, None, OPTS) == "from meta"
    assert select_simple({}, None, OPTS) == Reject("missing_caption")
    assert select_simple({}, "   ", OPTS) == Reject("empty_caption")


def test_laion_defaults_accept_a_typical_sample():
    assert select_laion(LAION, "a photo of a dog", OPTS) == "a photo of a dog"
    assert select_laion(LAION, None, OPTS) == "json caption"


def test_laion_rejects_low_similarity():
    opts = DataConfig(similarity_range=[0.28, 1.0])
    assert select_laion({**LAION, "similarity": 0.2}, "x", opts) == Reject("similarity")
    assert select_laion({**LAION, "similarity": 0.3}, "x", opts) == "x"


def test_laion_rejects_high_similarity_above_upper_bound():
    opts = DataConfig(similarity_range=[0.0, 0.4])
    assert select_laion({**LAION, "similarity": 0.45}, "x", opts) == Reject("similarity")


def test_laion_rejects_small_original_size():
    opts = DataConfig(min_size=512)
    assert select_laion({**LAION, "original_height": 400}, "x", opts) == Reject(
        "too_small_original")
    assert select_laion(LAION, "x", opts) == "x"


def test_laion_rejects_extreme_aspect_ratio():
    wide = {**LAION, "original_width": 5000, "original_height": 500}
    assert select_laion(wide, "x", OPTS) == Reject("aspect_ratio")
    assert select_laion(wide, "x", DataConfig(aspect_range=[0.1, 10.0])) == "x"


def test_laion_rejects_high_punsafe_and_pwatermark():
    assert select_laion({**LAION, "punsafe": 0.51}, "x", OPTS) == Reject("punsafe")
    assert select_laion({**LAION, "pwatermark": 0.9}, "x", OPTS) == Reject("watermark")
    assert select_laion({**LAION, "punsafe": 0.5, "pwatermark": 0.5}, "x", OPTS) == "x"
    strict = DataConfig(max_punsafe=0.1, max_pwatermark=0.8)
    assert select_laion({**LAION, "punsafe": 0.2}, "x", strict) == Reject("punsafe")
    assert select_laion({**LAION, "pwatermark": 0.7}, "x", strict) == "x"
    off = DataConfig(max_punsafe=1.0, max_pwatermark=1.0)
    assert select_laion({**LAION, "punsafe": 1.0, "pwatermark": 1.0}, "x", off) == "x"
    assert select_laion({**LAION, "punsafe": None, "pwatermark": "n/a"}, "x", strict) == "x"


def test_laion_nsfw_tag_filter():
    assert select_laion({**LAION, "NSFW": "NSFW"}, "x", OPTS) == Reject("nsfw")
    assert select_laion({**LAION, "NSFW": "unsure"}, "x", OPTS) == "x"
    assert select_laion({**LAION, "NSFW": "NSFW"}, "x",
                        DataConfig(nsfw_allowed=["UNLIKELY", "UNSURE", "NSFW"])) == "x"
    untagged = {k: v for k, v in LAION.items() if k != "NSFW"}
    assert select_laion(untagged, "x", OPTS) == "x"


def test_laion_skip_words_match_whole_words_case_insensitively():
    opts = DataConfig(skip_words=["watermark", "stock photo"])
    assert select_laion(LAION, "Cat WATERMARK", opts) == Reject("skip_word")
    assert select_laion(LAION, "a stock photo of a cat", opts) == Reject("skip_word")
    assert select_laion(LAION, "watermarked cat", opts) == "watermarked cat"


def test_laion_without_metadata_is_rejected():
    assert select_laion({}, "x", OPTS) == Reject("missing_metadata")


def test_laion_ignores_non_numeric_fields():
    meta = {**LAION, "similarity": "n/a", "original_width": None}
    assert select_laion(meta, "x", OPTS) == "x"


def test_alamy_keeps_english_captions_from_metadata():
    assert select_alamy({"caption": "A red bus in London"}, None, OPTS) == "A red bus in London"
    assert select_alamy({"caption": "Ein roter Bus", "language": "de"}, None, OPTS) == Reject(
        "not_english")
    assert select_alamy({"caption": "Красный автобус"}, None, OPTS) == Reject("not_english")
    assert select_alamy({"title": "Sunset", "language": "en-GB"}, None, OPTS) == "Sunset"
    assert select_alamy({}, None, OPTS) == Reject("missing_caption")


def test_synthetic_prefers_short_then_long_caption():
    meta = {"short_caption": "a cat", "long_caption": "a fluffy cat on a sofa"}
    assert select_synthetic(meta, "txt", OPTS) == "a cat"
    assert select_synthetic({"short_caption": " ", "long_caption": "long"}, None, OPTS) == "long"
    assert select_synthetic({}, "fallback", OPTS) == "fallback"
    assert select_synthetic({}, None, OPTS) == Reject("missing_caption")


def test_datacomp_picks_the_caption_with_the_better_clip_score():
    meta = {"caption": "IMG_0001.jpg", "clip_l14_similarity_score": 0.12,
            "generated_caption": "a dog on a beach", "generated_clip_l14_similarity_score": 0.31}
    assert select_datacomp(meta, None, OPTS) == "a dog on a beach"
    meta["clip_l14_similarity_score"] = 0.35
    assert select_datacomp(meta, None, OPTS) == "IMG_0001.jpg"


def test_datacomp_falls_back_and_filters_by_similarity():
    assert select_datacomp({"caption": "only original"}, None, OPTS) == "only original"
    meta = {"caption": "c", "clip_b32_similarity_score": 0.1}
    assert select_datacomp(meta, None, DataConfig(similarity_range=[0.2, 1.0])) == Reject(
        "similarity")
