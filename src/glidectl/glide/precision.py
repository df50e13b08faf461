"""Whether a device runs a low-precision dtype natively (fast) or through slow fallbacks."""

from __future__ import annotations

import torch


def native_low_precision(device: str | torch.device, dtype: torch.dtype) -> bool:
    """True when convs/matmuls in ``dtype`` are hardware-accelerated on ``device``.

    On CPUs without AVX512-BF16/AMX (e.g. AVX2-only), oneDNN has no bf16/fp16 kernels and
    PyTorch falls back to reference loops that are ~50-150x slower than float32; callers
    should warn before running autocast there.
    """
    device = torch.device(device)
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        mkldnn = torch.ops.mkldnn
        if dtype == torch.bfloat16:
            return bool(mkldnn._is_mkldnn_bf16_supported())
        if dtype == torch.float16:
            return bool(mkldnn._is_mkldnn_fp16_supported())
    return True
