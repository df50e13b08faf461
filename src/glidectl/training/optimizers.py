"""``train.optimizer``: AdamW (default), 8-bit AdamW (bitsandbytes, CUDA) or Adafactor.

- ``adamw``: GLIDE's own optimiser; two fp32 moments per trained weight.
- ``adamw8bit``: the same update with 8-bit moments (bitsandbytes): about 75 % less optimiser
  memory, what makes full finetuning of the 385M-parameter base fit on smaller GPUs.
- ``adafactor``: factored second moments (row and column averages), no first moment: the least
  optimiser memory, at some cost in stability (torch's ``torch.optim.Adafactor``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..config import TrainConfig
from ..errors import GlidectlError
from .adapters import is_text_param

OPTIMIZERS = ("adamw", "adamw8bit", "adafactor")


def make_optimizer(
    tc: TrainConfig, named: Iterable[tuple[str, torch.nn.Parameter]]
) -> torch.optim.Optimizer:
    """The optimizer ``tc.optimizer`` names, with the run's lr, betas, eps and weight decay;
    the text transformer's weights in a group of their own at ``lr * text_lr_scale``."""
    named = list(named)
    params = [p for _, p in named]
    groups: list[dict[str, Any]] = [{"params": params}]
    if tc.text_lr_scale != 1:
        text = [p for n, p in named if is_text_param(n)]
        rest = [p for n, p in named if not is_text_param(n)]
        groups = [g for g in ({"params": rest}, {"params": text, "lr": tc.lr * tc.text_lr_scale})
                  if g["params"]]
    if tc.optimizer == "adamw":
        # One fused kernel per step instead of a dozen small ops per tensor (see
        # benchmarks/bench_train_step.py); every device torch has fused AdamW for takes it.
        return torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.adam_beta1, tc.adam_beta2),
                                 eps=tc.adam_eps, weight_decay=tc.weight_decay,
                                 fused=all(p.is_floating_point() for p in params) or None)
    if tc.optimizer == "adafactor":
        return torch.optim.Adafactor(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.optimizer == "adamw8bit":
        return _adamw8bit(tc, groups)
    raise GlidectlError(
        f"train.optimizer must be one of {', '.join(OPTIMIZERS)}; got {tc.optimizer!r}."
    )


def _adamw8bit(tc: TrainConfig, params: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if not torch.cuda.is_available():
        raise GlidectlError(
            "train.optimizer = \"adamw8bit\" needs a CUDA GPU (bitsandbytes' 8-bit kernels); "
            "on this machine use \"adamw\" or \"adafactor\"."
        )
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # ImportError, or a broken CUDA setup raising at import
        raise GlidectlError(
            f"train.optimizer = \"adamw8bit\" needs bitsandbytes, which did not import "
            f"({type(exc).__name__}); pip install bitsandbytes or use \"adamw\"."
        ) from None
    return bnb.optim.AdamW8bit(params, lr=tc.lr, betas=(tc.adam_beta1, tc.adam_beta2),
                               eps=tc.adam_eps, weight_decay=tc.weight_decay)
