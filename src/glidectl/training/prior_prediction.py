"""OneTrainer's PRIOR_PREDICTION concepts: samples trained towards the base model's own
prediction at the same x_t, t and text, so the run keeps what the base model does on them.

OneTrainer (``GenericTrainer.train``) predicts the whole batch once more under
``BaseModelSetup.prior_model`` and without gradient, and puts that prediction in those
samples' target; ``prior_model`` exists only for LoRA training (its adapters unhooked). A
run's adapter offers it as ``prior_model(model)``; a run without one (a full finetune, which
has no base model beside the one it trains) leaves those concepts out with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def leave_out_unless_possible(dataset: Any, adapter: Any) -> str | None:
    """Without ``adapter.prior_model``, the source's PRIOR_PREDICTION samples are left out
    before the stream starts: the warning that says so, or None."""
    leave_out = getattr(getattr(dataset, "source", None), "leave_out_prior_prediction", None)
    if leave_out is None or hasattr(adapter, "prior_model"):
        return None
    note = leave_out()
    return None if note is None else f"Warning: {note}"


def prior_targets(batch: dict[str, Any], adapter: Any, net: torch.nn.Module,
                  model_fn: Callable[..., torch.Tensor]
                  ) -> tuple[torch.Tensor, Callable[..., torch.Tensor]] | None:
    """``(rows, prior_fn)`` for ``training_losses(prior=...)`` when the batch holds
    PRIOR_PREDICTION samples, else None: ``prior_fn`` is ``model_fn`` on ``net`` (the
    unwrapped model, so no process waits on another's extra forward) inside
    ``adapter.prior_model``."""
    flags = batch.get("prior_prediction")
    if not flags or not any(flags):
        return None

    def prior_fn(x_t: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        with adapter.prior_model(net):
            return model_fn(x_t, ts, net=net)

    return torch.tensor([bool(f) for f in flags]), prior_fn
