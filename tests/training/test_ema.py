"""The EMA update: one foreach call where every weight is fp32 beside its shadow, else one
tensor at a time; the same values either way."""

from __future__ import annotations

import torch

from glidectl.training.ema import EMA


def _weights(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=gen))
            for shape in ((3, 4), (5,), (2, 3, 3, 3))]


def test_the_foreach_update_equals_the_update_of_each_tensor(monkeypatch):
    params = _weights(0)
    fused, each = EMA(params, 0.99, warmup=True), EMA(params, 0.99, warmup=True)
    calls = []
    foreach = torch._foreach_lerp_
    monkeypatch.setattr(torch, "_foreach_lerp_", lambda *a: calls.append(1) or foreach(*a))
    for step in range(3):
        with torch.no_grad():
            for p in params:
                p.add_(0.1 * (step + 1))
        fused.update()
        each.update_each(each.current_decay(), [p.detach() for p in params])
        each.num_updates += 1
    assert len(calls) == 3  # one call a step, not one per tensor
    assert all(torch.equal(a, b) for a, b in zip(fused.shadow, each.shadow, strict=True))


def test_weights_in_another_precision_are_averaged_in_fp32():
    params = [torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16)),
              torch.nn.Parameter(torch.zeros(2))]
    ema = EMA(params, 0.5)
    with torch.no_grad():
        params[0].fill_(3.0)
        params[1].fill_(1.0)
    ema.update()
    assert [s.dtype for s in ema.shadow] == [torch.float32, torch.float32]
    assert torch.equal(ema.shadow[0], torch.full((4,), 2.0))
    assert torch.equal(ema.shadow[1], torch.full((2,), 0.5))
