"""``train.cuda_graphs``: the network's training forward and backward replayed as CUDA graphs.

An eager GLIDE step launches some 6,000 kernels from Python, so on a fast GPU the host sets
the pace (``benchmarks/bench_gpu.py --sections busy``: an H200 computes during 10-31 % of an
official-base step). :func:`torch.cuda.make_graphed_callables` records one forward and one
backward per input signature (shapes, dtypes, which extra inputs) and replays each with one
launch; inputs are copied into the graph's own buffers, gradients flow to the parameters
as usual, and the optimizer, EMA and loss stay eager around it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..errors import ConfigError

MAX_GRAPHS = 4  # input signatures recorded; further ones (aspect buckets) train eagerly
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # accelerate's word → dtype


class _Positional(torch.nn.Module):
    """The network called with tensors only, by position (what graphed callables take)."""

    def __init__(self, net: torch.nn.Module, extra: tuple[str, ...]):
        super().__init__()
        self.net, self.extra = net, extra

    def forward(self, x: torch.Tensor, ts: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        # Accelerate wraps the instance's forward in its autocast (which caches casts, which
        # a graph cannot replay); the graph records under this module's own autocast instead.
        forward = self.net.__dict__.get("_original_forward", self.net.forward)
        return forward(x, ts, tokens, mask, **dict(zip(self.extra, extra, strict=True)))


class GraphedNetwork:
    """Calls like the prepared ``model`` (``(x_t, ts, tokens, mask, **extra)``): in training
    mode with gradients on, through a CUDA graph of ``net`` (the unwrapped model) recorded
    for that input signature; otherwise (no gradient, eval mode, a fifth signature) eagerly
    through ``model``. ``autocast``: the dtype accelerate's mixed precision computes in
    (None: fp32); outputs are fp32, as accelerate's wrapper returns them. ``capture``:
    :func:`torch.cuda.make_graphed_callables` (a test passes a stand-in on the CPU)."""

    def __init__(self, net: torch.nn.Module, model: Callable[..., torch.Tensor], *,
                 autocast: torch.dtype | None, capture: Callable[..., Any] | None = None):
        self.net, self.model, self.autocast = net, model, autocast
        self._capture = capture or torch.cuda.make_graphed_callables
        self._graphs: dict[tuple, Callable[..., torch.Tensor]] = {}
        self.eager_calls = 0  # training calls that found no graph (more signatures than kept)

    KEEPS_GRADS = True  # zero the gradients in place: see _record

    @property
    def recorded(self) -> int:
        """How many input signatures have a graph."""
        return len(self._graphs)

    def __call__(self, x: torch.Tensor, ts: torch.Tensor, tokens: torch.Tensor,
                 mask: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.net.training):
            return self.model(x, ts, tokens, mask, **extra)
        names = tuple(sorted(extra))
        args = (x, ts, tokens, mask, *(extra[n] for n in names))
        key = (names, *((a.shape, a.dtype, a.device, a.requires_grad, a.is_contiguous(),
                         a.is_contiguous(memory_format=torch.channels_last)) for a in args))
        graphed = self._graphs.get(key)
        if graphed is None:
            if len(self._graphs) >= MAX_GRAPHS:
                self.eager_calls += 1
                return self.model(x, ts, tokens, mask, **extra)
            graphed = self._graphs[key] = self._record(names, args)
        return graphed(*args).float()

    def _record(self, names: tuple[str, ...], args: tuple[torch.Tensor, ...]
                ) -> Callable[..., torch.Tensor]:
        """The graphed forward (and its backward) for inputs shaped like ``args``.

        A graphed backward returns the same gradient buffers on every replay, and autograd
        keeps a returned gradient as a parameter's ``.grad`` when it has none: the next
        micro-batch's replay would then overwrite what gradient accumulation holds
        (pytorch/pytorch#181723). So every trainable parameter gets its own ``.grad``
        here, which the loop zeroes in place (:attr:`KEEPS_GRADS`) and never drops."""
        with torch.no_grad():
            for p in self.net.parameters():
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
        device = args[0].device.type
        with torch.autocast(device, dtype=self.autocast or torch.float32,
                            enabled=self.autocast is not None, cache_enabled=False):
            return self._capture(_Positional(self.net, names), args, allow_unused_input=True)


def check_cuda_graphs(tc: Any, processes: int) -> None:
    """``train.cuda_graphs`` with a setting it cannot work with: one clear error."""
    if not tc.cuda_graphs:
        return
    clash = ("train.compile" if tc.compile else
             "train.gradient_checkpointing" if tc.gradient_checkpointing else
             f"{processes} processes" if processes > 1 else None)
    if clash is not None:
        raise ConfigError(
            f"train.cuda_graphs records the network for one process without torch.compile "
            f"or gradient checkpointing, but this run has {clash}; set "
            f"train.cuda_graphs = false (or turn {clash} off).")


def graphed_network(tc: Any, accelerator: Any, model: torch.nn.Module,
                    net: torch.nn.Module, autocast: str) -> tuple[Any, str | None]:
    """What a training step calls: ``model`` itself, or with ``train.cuda_graphs`` on a CUDA
    device a :class:`GraphedNetwork` of ``net``; and a note when the option is set but the
    run trains elsewhere (None otherwise)."""
    if not tc.cuda_graphs:
        return model, None
    if accelerator.device.type != "cuda":  # one config for a laptop and a GPU node
        return model, (f"Warning: train.cuda_graphs needs a CUDA device; training on "
                       f"{accelerator.device.type} eagerly.")
    check_cuda_graphs(tc, accelerator.num_processes)
    # The graph's backward hands its gradients over from the stream it was recorded on;
    # autograd says so once a run (a cross-stream event, no host wait): not the user's concern.
    warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
    return GraphedNetwork(net, model, autocast=AUTOCAST.get(autocast)), None
