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
        if tc.text_lr_scale == 0 and not rest:
            raise GlidectlError(
                "train.text_lr_scale = 0 trains nothing here: every weight that trains is the "
                "text transformer's, which it gives a learning rate of 0; set "
                "train.text_lr_scale above 0."
            )
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


def check_available(tc: TrainConfig) -> None:
    """One sentence when ``train.optimizer`` cannot run on this machine (before the model is
    built)."""
    if tc.optimizer == "adamw8bit" and not torch.cuda.is_available():
        raise GlidectlError(
            "train.optimizer = \"adamw8bit\" needs a CUDA GPU (bitsandbytes' 8-bit kernels); "
            "on this machine use \"adamw\" or \"adafactor\"."
        )


def _adamw8bit(tc: TrainConfig, params: list[dict[str, Any]]) -> torch.optim.Optimizer:
    check_available(tc)
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # ImportError, or a broken CUDA setup raising at import
        raise GlidectlError(
            f"train.optimizer = \"adamw8bit\" needs bitsandbytes, which did not import "
            f"({type(exc).__name__}); pip install bitsandbytes or use \"adamw\"."
        ) from None
    return bnb.optim.AdamW8bit(params, lr=tc.lr, betas=(tc.adam_beta1, tc.adam_beta2),
                               eps=tc.adam_eps, weight_decay=tc.weight_decay)


# The parameter-group settings a config sets, as resume reports them when they change.
CONFIG_SETTINGS = ("lr", "betas", "eps", "weight_decay")
# How AdamW computes, not what: a resume keeps the checkpoint's, so a run begun before
# glidectl used fused AdamW (2026-11-30) goes on with the kernel it trained with.
KERNEL_SETTINGS = ("fused", "foreach")


def family(groups: list[dict[str, Any]]) -> str | None:
    """``adamw`` or ``adafactor``, told apart by their parameter groups' keys (None: unknown).
    The 8-bit AdamW counts as ``adamw``."""
    keys = {k for g in groups for k in g}
    return "adafactor" if "beta2_decay" in keys else "adamw" if "betas" in keys else None


def text_lr_scale(groups: list[dict[str, Any]]) -> float | None:
    """The ``train.text_lr_scale`` parameter groups were made with (1 for one group; None
    when there are more than two, or no peak LRs to divide)."""
    if len(groups) == 1:
        return 1.0
    lrs = [g.get("initial_lr", g.get("lr")) for g in groups]
    if len(lrs) != 2 or not all(isinstance(lr, float) and lr > 0 for lr in lrs):
        return None
    return lrs[1] / lrs[0]


def settings(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter group's settings (everything but its parameters)."""
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def _differ(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except (RuntimeError, TypeError):  # tensors: not a setting a config gives
        return False


def _scale_of(loaded: list[dict[str, Any]], fresh: list[dict[str, Any]],
              index: int) -> tuple[float, float] | None:
    """Group ``index``'s peak LR over group 0's, in the checkpoint's groups (``loaded``) and
    in the config's, when the two differ (``train.text_lr_scale``), else None."""
    try:
        was = loaded[index]["initial_lr"] / loaded[0]["initial_lr"]
        now = fresh[index]["initial_lr"] / fresh[0]["initial_lr"]
    except (KeyError, ZeroDivisionError, TypeError):
        return None
    return (was, now) if abs(was - now) > 1e-9 * max(abs(was), abs(now), 1e-30) else None


def reapply_settings(optimizer: torch.optim.Optimizer, scheduler: Any,
                     fresh: list[dict[str, Any]]) -> list[str]:
    """Give a resumed optimizer the config's settings again (``load_state_dict`` brings back
    the checkpoint's, so a changed ``train.lr`` or ``weight_decay`` was silently ignored) and
    its LR scheduler the config's peak LRs at the resumed step. Returns "name old → new" for
    each setting of :data:`CONFIG_SETTINGS` that changed; unchanged settings give the same
    numbers bit for bit."""
    changed: dict[str, str] = {}
    loaded = [dict(g) for g in optimizer.param_groups]  # the checkpoint's, before any change
    for index, (group, want) in enumerate(zip(optimizer.param_groups, fresh, strict=True)):
        for key, value in want.items():
            if key == "lr" or key in KERNEL_SETTINGS and key in group:
                continue  # the LR at this step: the scheduler's, below; the kernel: as saved
            name = "lr" if key == "initial_lr" else key  # the peak LR is the config's
            if name == "lr" and index:  # another group's LR: train.lr × its scale
                name, value_of = "text_lr_scale", _scale_of(loaded, fresh, index)
                if name not in changed and value_of is not None:
                    changed[name] = f"text_lr_scale {value_of[0]:g} → {value_of[1]:g}"
                group[key] = value
                continue
            if name in CONFIG_SETTINGS and name not in changed and key in group \
                    and _differ(group[key], value):
                changed[name] = f"{name} {group[key]} → {value}"
            group[key] = value
    _match_amp_scaling(optimizer)
    inner = getattr(scheduler, "scheduler", scheduler)  # under accelerate's wrapper
    lambdas = getattr(inner, "lr_lambdas", None)
    if lambdas is not None:
        inner.base_lrs = [g.get("initial_lr", g["lr"]) for g in fresh]
        lrs = [base * f(inner.last_epoch)
               for base, f in zip(inner.base_lrs, lambdas, strict=True)]
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        inner._last_lr = lrs
    return [changed[k] for k in (*CONFIG_SETTINGS, "text_lr_scale") if k in changed]


def _match_amp_scaling(optimizer: Any) -> None:
    """Tell a GradScaler what an AdamW resumed unfused (its checkpoint's kernel) takes: only
    fused AdamW unscales gradients itself, as torch sets it when it builds one."""
    inner = getattr(optimizer, "optimizer", optimizer)  # under accelerate's wrapper
    if isinstance(inner, torch.optim.AdamW) and getattr(inner, "_step_supports_amp_scaling",
                                                        False):
        inner._step_supports_amp_scaling = all(g.get("fused") for g in inner.param_groups)
