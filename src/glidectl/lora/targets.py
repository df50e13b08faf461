"""Which GLIDE modules get LoRA adapters: named presets and custom module-name regexes.

Module names are OpenAI's (``input_blocks.4.1.qkv``, ``transformer.resblocks.0.mlp.c_fc``).
Patterns are matched against the whole name (``re.fullmatch``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import GlidectlError

if TYPE_CHECKING:  # torch loads with the first network: config checks run without it
    from torch import nn

_UNET = r"(?:input_blocks|middle_block|output_blocks)\.(?:\d+\.)*"
PRESETS: dict[str, tuple[str, ...]] = {
    # UNet attention (1x1 Conv1d) and the text transformer's attention (Linear).
    "attention": (
        _UNET + r"(?:qkv|encoder_kv|proj_out)",
        r"transformer\.resblocks\.\d+\.attn\.(?:c_qkv|c_proj)",
    ),
    "mlp": (r"transformer\.resblocks\.\d+\.mlp\.(?:c_fc|c_proj)",),
    # ResBlock convolutions (3x3 in/out convs and 1x1 skip projections).
    "conv": (_UNET + r"(?:in_layers\.2|out_layers\.3|skip_connection)",),
}
PRESETS["all"] = PRESETS["attention"] + PRESETS["mlp"] + PRESETS["conv"]


def supported() -> tuple[type[nn.Module], ...]:
    """The module types LoRA adapts."""
    from torch import nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d)


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise GlidectlError(
            f"{where}: {pattern!r} is not a valid regular expression ({exc})."
        ) from None


def check_targets(
    targets: list[str] | tuple[str, ...], patterns: list[str] | tuple[str, ...]
) -> None:
    """Fail early on unknown presets and invalid regexes (before a run directory exists)."""
    check_presets(targets)
    check_patterns(patterns)


def check_presets(targets: list[str] | tuple[str, ...]) -> None:
    """One sentence for a ``lora.targets`` entry that is no preset (also at config load)."""
    for name in targets:
        if name not in PRESETS:
            raise GlidectlError(
                f"lora.targets: unknown preset {name!r}; use any of {', '.join(PRESETS)}."
            )


def check_patterns(patterns: list[str] | tuple[str, ...]) -> None:
    """One sentence for a ``lora.patterns`` entry that is no regular expression (also at
    config load)."""
    for p in patterns:
        _compile(p, "lora.patterns")


def resolve_targets(
    model: nn.Module,
    targets: list[str] | tuple[str, ...],
    patterns: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """Names of the Linear/Conv1d/Conv2d modules that the presets and patterns select.

    Unknown presets, invalid or unmatched custom patterns, and an empty selection are errors.
    """
    check_targets(targets, patterns)
    compiled = [re.compile(p) for name in targets for p in PRESETS[name]]
    custom = [(_compile(p, "lora.patterns"), p) for p in patterns]
    modules = [(n, m) for n, m in model.named_modules() if n]
    adaptable = supported()
    for rx, raw in custom:
        hits = [(n, m) for n, m in modules if rx.fullmatch(n)]
        if not any(isinstance(m, adaptable) for _, m in hits):
            what = (
                f"only matches {hits[0][0]!r} ({type(hits[0][1]).__name__}), which LoRA "
                "cannot adapt"
                if hits else "matches no module"
            )
            raise GlidectlError(
                f"lora.patterns: {raw!r} {what}; patterns must fully match Linear/Conv names "
                "such as 'input_blocks\\.4\\.1\\.qkv' or 'out\\.2'."
            )
        compiled.append(rx)
    names = [
        n for n, m in modules
        if isinstance(m, adaptable) and any(rx.fullmatch(n) for rx in compiled)
    ]
    if not names:
        raise GlidectlError(
            "LoRA selects no module of this network; set lora.targets (attention, mlp, conv, all) "
            "or lora.patterns."
        )
    return names
