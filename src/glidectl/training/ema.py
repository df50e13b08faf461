"""Exponential moving average of the trainable weights, kept in fp32.

Previews and exports use the average through :meth:`EMA.swapped`, which stores the
training weights, copies the average in, and puts the training weights back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def ema_note(decay: float, warmup: bool, total_steps: int) -> str | None:
    """A warning when the EMA that previews, ``export`` and ``sample`` use would still be
    mostly the starting weights (scratch noise, zero LoRA adapters, the base of a finetune)
    at the end of the run, else None."""
    if decay <= 0 or warmup or total_steps <= 0:
        return None
    kept = decay ** total_steps
    if kept <= 0.5:
        return None
    return (f"Warning: train.ema_decay = {decay:g} without train.ema_warmup keeps "
            f"{kept:.0%} of the starting weights in the EMA after {total_steps} steps, and "
            "previews, export and sample use the EMA; set train.ema_warmup = true or lower "
            "train.ema_decay (0 = no EMA).")


class EMA:
    """fp32 shadow copies of ``params``, updated after every optimizer step."""

    def __init__(self, params: Iterable[torch.nn.Parameter], decay: float, warmup: bool = False):
        self.params = [p for p in params]
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = [p.detach().to(torch.float32).clone() for p in self.params]
        self._stored: list[torch.Tensor] | None = None

    def current_decay(self) -> float:
        """The decay used for the next update: warmup grows it as (1+n)/(10+n)."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        """shadow ← d·shadow + (1−d)·param, in fp32."""
        d = self.current_decay()
        self.num_updates += 1
        params = [p.detach() for p in self.params]
        if all(p.dtype == torch.float32 and p.device == s.device
               for s, p in zip(self.shadow, params, strict=True)):
            # one call for every tensor: on a GPU a few fused launches rather than one per
            # tensor; the same values as :meth:`update_each`
            torch._foreach_lerp_(self.shadow, params, 1.0 - d)
        else:
            self.update_each(d, params)

    @torch.no_grad()
    def update_each(self, d: float, params: list[torch.Tensor]) -> None:
        """:meth:`update` one tensor at a time, cast to the fp32 shadow's device (weights
        kept in another precision or on another device)."""
        for s, p in zip(self.shadow, params, strict=True):
            s.lerp_(p.to(device=s.device, dtype=torch.float32), 1.0 - d)

    @torch.no_grad()
    def store(self) -> None:
        """Remember the training weights (to put back with :meth:`restore`)."""
        self._stored = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def copy_to(self) -> None:
        """Overwrite the training weights with the averages."""
        for s, p in zip(self.shadow, self.params, strict=True):
            p.copy_(s.to(device=p.device, dtype=p.dtype))

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by :meth:`store`."""
        if self._stored is None:
            raise RuntimeError("EMA.restore() called without a matching store().")
        for saved, p in zip(self._stored, self.params, strict=True):
            p.copy_(saved)
        self._stored = None

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Run a block with the EMA weights in the model; training weights come back after."""
        self.store()
        self.copy_to()
        try:
            yield
        finally:
            self.restore()

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": [s.detach().cpu() for s in self.shadow],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow):
            raise ValueError(
                f"EMA state has {len(shadow)} tensors but the model trains {len(self.shadow)}."
            )
        self.num_updates = int(state["num_updates"])
        for s, saved in zip(self.shadow, shadow, strict=True):
            s.copy_(saved)
