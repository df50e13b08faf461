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
    import os

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen, losses = [], objective.Objective.losses

    def watched(self, *args, **kwargs):  # the switches while the run trains
        seen.append((torch.are_deterministic_algorithms_enabled(),
                     torch.backends.cudnn.deterministic,
                     os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
        return losses(self, *args, **kwargs)

    monkeypatch.setattr(objective.Objective, "losses", watched)
    runs = []
    for name, on in (("a", True), ("b", True), ("c", False)):
        seen.clear()
        runs.append(Trainer(tiny(train=dict(steps=2, name=name, deterministic=on)),
                            quiet=True).run())
        # set for each run (CUBLAS_WORKSPACE_CONFIG before cuBLAS starts) ...
        assert set(seen) == {(on, on, ":4096:8" if on else None)}
        # ... and the caller's again once it ends
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.deterministic
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
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
