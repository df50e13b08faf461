"""CI only (needs the full golden set): the carried cases are exact copies of the reference's,
and the redrawn tiny weights equal the stored ones bit for bit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from golden_data import CARRIED, tiny_reference_state
from safetensors.torch import load_file

from glidectl.glide import KINDS

COPIED = [
    "diffusion_golden.json", "tokenizer_golden.json", "state_dict_manifest.json",
    "gpt2/encoder.json", "gpt2/vocab.bpe",
    *[f"tiny_{kind}_{part}" for kind in KINDS
      for part in ("options.json", "case.safetensors")],
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", COPIED)
def test_carried_file_is_the_reference_file(golden, name):
    assert _sha(CARRIED / name) == _sha(golden / name)


def test_carried_diffusion_tensors_are_the_reference_ones_less_the_traces(golden):
    full = load_file(golden / "diffusion_golden.safetensors")
    carried = load_file(CARRIED / "diffusion_golden.safetensors")
    assert set(full) - set(carried) == {f"sample/{s}/trace_sample"
                                        for s in ("ddim", "p_sample", "plms")}
    for key, value in carried.items():
        assert torch.equal(value, full[key]), key


@pytest.mark.parametrize("kind", KINDS)
def test_redrawn_tiny_weights_are_the_stored_ones(golden, kind):
    stored = load_file(golden / f"tiny_{kind}_state_dict.safetensors")
    redrawn = tiny_reference_state(kind)
    assert set(redrawn) == set(stored)
    for key, value in redrawn.items():
        assert torch.equal(value, stored[key].float()), key
