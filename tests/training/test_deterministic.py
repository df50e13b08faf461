"""train.deterministic: torch's deterministic-kernel switches for the run, and one sentence
when an operation has no deterministic kernel."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from glidectl.errors import GlidectlError
from glidectl.training import objective
from glidectl.training.engine import Trainer


@pytest.fixture(autouse=True)
def _switches_back():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic = before[1]


def _weights(result) -> dict[str, torch.Tensor]:
    step = f"step-{result.step:06d}"
    return load_file(str(result.run_dir / "checkpoints" / step / "model.safetensors"))


def test_a_deterministic_run_sets_the_switches_and_trains_as_a_plain_one(tiny, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    runs = []
    for name, on in (("a", True), ("b", True), ("c", False)):
        runs.append(Trainer(tiny(train=dict(steps=2, name=name, deterministic=on)),
                            quiet=True).run())
        assert torch.are_deterministic_algorithms_enabled() is on  # set for each run
        assert torch.backends.cudnn.deterministic is on
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # before cuBLAS starts
    a, b, c = (_weights(r) for r in runs)
    assert a.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)  # CPU: same


def test_an_operation_without_a_deterministic_kernel_is_one_sentence(tiny, monkeypatch):
    losses = objective.Objective.losses

    def with_put(self, *args, **kwargs):  # put_(accumulate=False) has none, on CPUs too
        torch.zeros(2).put_(torch.tensor([0]), torch.tensor([1.0]), accumulate=False)
        return losses(self, *args, **kwargs)

    monkeypatch.setattr(objective.Objective, "losses", with_put)
    with pytest.raises(GlidectlError) as err:
        Trainer(tiny(train=dict(steps=2, deterministic=True)), quiet=True).run()
    text = str(err.value)
    assert text.startswith("train.deterministic: put_ has no deterministic kernel in torch ")
    assert "set train.deterministic = false" in text and "\n" not in text
    Trainer(tiny(train=dict(steps=1, name="plain")), quiet=True).run()  # off: it trains
