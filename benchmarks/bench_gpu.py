"""GPU figures: training and sampling speed, memory, fp16, determinism.

    python benchmarks/bench_gpu.py                      # on a CUDA GPU: official models
    python benchmarks/bench_gpu.py --device cpu --tiny  # the same logic on tiny models (CI)
    python benchmarks/bench_gpu.py --kinds upsample --no-compile --merge  # add to a report
    python benchmarks/bench_gpu.py --sections busy sampling --merge       # likewise

On one H200 the base model's cases alone took 331 s (torch.compile's warm-up 263 s), so the
whole run passes 10 minutes: split it by --kinds and add the parts with --merge.

Sections (each prints its figures; all are written to --out as JSON; --sections picks some):
1. where an eager training step's time goes, base and upsampler at batch 1 and 16: the share
   of wall time the GPU spends in kernels, the host time of forward, backward and optimizer,
   the host calls that wait on the GPU, the ops with the most host and GPU time
   (torch.profiler; a low share means the step waits on Python and kernel launches).
2. training throughput (images/s) and peak memory of the official base and upsampler in bf16
   autocast with the engine's fused AdamW at batch 1, 16 and 64 (upsampler: the largest of
   64/32/16/8 that fits), eager, with gradient checkpointing, and channels_last (NHWC)
   against the default layout at batch 16 (torch.compile: section 7). Goals: base >= 400
   images/s, upsampler >= 75.
2b. the same steps with the network's forward and backward as CUDA graphs, each beside
   its eager twin on the same machine (what the host's per-kernel launch cost takes).
2c. glidectl's Trainer on the official base from scratch at batch 16 and 64 (upsampler: 16),
   eager and with train.cuda_graphs: images/s as the run's metrics give them.
3. sampling throughput: base, 25 dpm++2m steps with guidance 3, then the upsampler (ddpm
   fast27), batch 16. Goal: >= 20 upsampled images/s.
4. fp16 with a GradScaler through the real engine for 50 steps: no NaN, the loss falls.
5. two identical engine runs (train.deterministic on a GPU) give identical weights.
6. the suite's CUDA-only tests (pytest -k cuda).
7. training with torch.compile (last: its warm-up is the longest part of the run).
Weights are random (speed does not depend on them): nothing is downloaded. A section that
would pass --budget seconds is skipped and marked so.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("base", "upsample")
PHASES = ("forward", "backward", "optimizer")  # a training step's, named in its profile
SECTIONS = ("training", "busy", "graphs", "trainer", "sampling", "engine", "tests", "compile")
GOALS = {"base_images_per_s": 400.0, "upsample_images_per_s": 75.0,
         "sampling_upsampled_images_per_s": 20.0}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):  # the asked GPU's counters, not the current one's (cuda:0)
        with torch.cuda.device(device):
            torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)


def memory_word(device: str) -> str:
    """What :func:`_peak_gib` measures: the case's GPU peak, or the process's RSS high-water
    mark, which never falls between cases."""
    return "peak" if device.startswith("cuda") else "max RSS so far"


def check_only(device: str, tiny: bool) -> str | None:
    """Why this run's figures are no GPU figures (None for the real run: CUDA, official
    models)."""
    if device.startswith("cuda") and not tiny:
        return None
    where = "tiny models" if tiny else "no GPU"
    missing = ("GPU speed and memory (memory is this process's RSS), bf16 autocast (training "
               "and sampling run in fp32), fp16 with a GradScaler (the engine runs fp32), "
               "the CUDA-only tests"
               if not device.startswith("cuda") else "the official models' speed and memory")
    return (f"a logic check on {device} with {where}: it cannot measure {missing}; goals are "
            "not judged")


def default_out(device: str, tiny: bool) -> Path:
    """gpu.json holds only the real run's figures; a check writes beside it."""
    name = "gpu-check.json" if check_only(device, tiny) else "gpu.json"
    return ROOT / "benchmarks" / "results" / name


def model_options(kind: str, tiny: bool) -> Any:
    from glidectl.glide import official_options, preset_options

    if not tiny:
        return official_options(kind)
    opts = preset_options(kind, "tiny")
    return opts.replace(image_size=64, channel_mult="1,2,2") if kind == "upsample" else \
        opts.replace(image_size=32)


def make_step(kind: str, batch: int, *, device: str, tiny: bool, compile: bool,
              checkpointing: bool, channels_last: bool = False, graphs: bool = False) -> Any:
    """One forward + backward + AdamW step of ``kind`` at ``batch``, in bf16 autocast on a
    GPU (fp32 elsewhere), as a function returning the loss. ``graphs``: the network's forward
    and backward replayed as CUDA graphs (torch.cuda.make_graphed_callables), which takes
    the host's per-kernel launch cost out of the step."""
    import torch
    from torch.profiler import record_function

    from glidectl.config import TrainConfig
    from glidectl.diffusion import create_diffusion
    from glidectl.glide import create_model
    from glidectl.training.optimizers import make_optimizer

    opts = model_options(kind, tiny)
    torch.manual_seed(0)
    model = create_model(opts).to(device).train()
    model.set_gradient_checkpointing(checkpointing)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)  # oneDNN/cuDNN may prefer NHWC in bf16: measured, not assumed
    step_model = torch.compile(model) if compile else model
    diffusion = create_diffusion(opts.noise_schedule, opts.diffusion_steps)
    optim = make_optimizer(TrainConfig(lr=1e-5), model.named_parameters())  # the engine's
    size = opts.image_size
    x0 = torch.randn(batch, 3, size, size, device=device).clamp(-1, 1).to(memory_format=fmt)
    tokens = torch.randint(0, opts.n_vocab, (batch, opts.text_ctx), device=device)
    mask = torch.ones(batch, opts.text_ctx, dtype=torch.bool, device=device)
    extra = {}
    if opts.super_res:
        low = opts.low_res_size
        extra["low_res"] = torch.randn(batch, 3, low, low, device=device).clamp(-1, 1)
    dev_type = torch.device(device).type
    autocast = dev_type == "cuda"  # bf16 is emulated (slow) on most CPUs: check logic in fp32
    # CUDA graphs replay their captured casts: autocast must not cache them across calls
    amp = dict(device_type=dev_type, dtype=torch.bfloat16, enabled=autocast,
               cache_enabled=not graphs)
    if graphs:
        step_model = _graphed(model, diffusion, x0, tokens, mask, extra, amp)

    def one_step() -> float:  # the phases are named for busy_case's profile
        t = torch.randint(0, diffusion.num_timesteps, (batch,), device=device)
        with record_function("forward"), torch.autocast(**amp):
            losses = diffusion.training_losses(
                lambda xt, ts: step_model(xt, ts, tokens, mask, **extra), x0, t)
            loss = losses["loss"].mean()
        optim.zero_grad(set_to_none=True)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            optim.step()
        return float(loss.detach())

    one_step.precision = "bf16" if autocast else "fp32"  # type: ignore[attr-defined]
    one_step.graphs = graphs  # type: ignore[attr-defined]
    one_step.optimizer = type(optim).__name__ + (  # type: ignore[attr-defined]
        " (fused)" if optim.defaults.get("fused") else "")
    return one_step


def _graphed(model: Any, diffusion: Any, x0: Any, tokens: Any, mask: Any, extra: dict,
             amp: dict) -> Any:
    """``model`` as CUDA graphs of its forward and backward, called as the training loss
    calls the network; captured on the arguments one eager loss computation gives it."""
    import torch

    class Positional(torch.nn.Module):  # graphed callables take tensors by position only
        def __init__(self, net: Any):
            super().__init__()
            self.net = net

        def forward(self, x: Any, ts: Any, tok: Any, m: Any, *low_res: Any) -> Any:
            return self.net(x, ts, tok, m, low_res=low_res[0] if low_res else None)

    seen: list[tuple] = []

    def probe(xt: Any, ts: Any) -> Any:
        seen.append((xt.detach().clone(), ts.detach().clone()))
        return model(xt, ts, tokens, mask, **extra)

    cuda = [x0.device] if x0.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.autocast(**amp):  # the steps' draws stay
        t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), device=x0.device)
        diffusion.training_losses(probe, x0, t)
        graphed = torch.cuda.make_graphed_callables(
            Positional(model), (*seen[0], tokens, mask, *extra.values()),
            allow_unused_input=True)
    return lambda xt, ts, tok, m, low_res=None: graphed(
        xt, ts, tok, m, *([] if low_res is None else [low_res]))


def train_case(kind: str, batch: int, *, device: str, tiny: bool, compile: bool,
               checkpointing: bool, steps: int, warmup: int,
               channels_last: bool = False, graphs: bool = False) -> dict[str, Any]:
    """images/s and peak memory of forward + backward + AdamW step in bf16 autocast."""
    one_step = make_step(kind, batch, device=device, tiny=tiny, compile=compile,
                         checkpointing=checkpointing, channels_last=channels_last,
                         graphs=graphs)
    _reset_peak(device)
    t_compile = time.perf_counter()
    for _ in range(warmup):
        one_step()
    _sync(device)
    warm_s = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    losses = [one_step() for _ in range(steps)]
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"kind": kind, "batch": batch, "compile": compile, "checkpointing": checkpointing,
            "channels_last": channels_last, "images_per_s": batch * steps / seconds,
            "step_ms": 1000 * seconds / steps,
            "warmup_s": warm_s, "peak_memory_gib": _peak_gib(device),
            "memory": memory_word(device), "precision": one_step.precision,
            "optimizer": one_step.optimizer, "cuda_graphs": graphs,
            "finite": all(math.isfinite(v) for v in losses)}


def busy_case(kind: str, batch: int, *, device: str, tiny: bool, steps: int = 3) -> dict:
    """Where an eager training step's wall time goes: the share the GPU spends in kernels (the
    sum of the kernels' own times over the profiled steps' wall time), kernels per step, the
    host time of the forward, backward and optimizer phases, the host calls that wait on the
    GPU, and the ops with the most host and GPU time. A low busy share with host phases as
    long as the step means the step waits on Python and kernel launches."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    one_step = make_step(kind, batch, device=device, tiny=tiny, compile=False,
                         checkpointing=False)
    for _ in range(2):
        one_step()
    _sync(device)
    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            one_step()
        _sync(device)
        wall = time.perf_counter() - t0
    events = prof.events()
    figures: dict[str, Any] = {"kind": kind, "batch": batch, "step_ms": 1000 * wall / steps,
                               "optimizer": one_step.optimizer}
    host = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    figures["host_ms"] = {phase: sum(e.cpu_time_total for e in host if e.name == phase)
                          / 1000 / steps for phase in PHASES}
    waits = [e for e in host if e.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                             "cudaEventSynchronize", "cudaMemcpy",
                                             "aten::_local_scalar_dense")]
    figures["waits_per_step"] = len(waits) / steps
    figures["wait_ms"] = sum(e.cpu_time_total for e in waits) / 1000 / steps

    def top(key: str) -> list[list]:
        rows = sorted((a for a in prof.key_averages() if a.key not in PHASES),
                      key=lambda a: -getattr(a, key, 0))[:12]
        return [[a.key[:80], a.count / steps, round(getattr(a, key, 0) / 1000 / steps, 3)]
                for a in rows if getattr(a, key, 0) > 0]

    figures["top_host_ops"] = top("self_cpu_time_total")  # [name, calls/step, ms/step]
    if cuda:
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                   and e.name not in PHASES]  # the phases' GPU-side ranges are no kernels
        busy_us = sum(e.time_range.elapsed_us() for e in kernels)  # time on the GPU
        figures |= {"gpu_busy": busy_us / 1e6 / wall, "kernels_per_step": len(kernels) / steps,
                    "top_gpu_ops": top("self_device_time_total")}
    else:
        figures |= {"gpu_busy": None, "ops_per_step": len(events) / steps}
    return figures


def _is_oom(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower()


def training_section(args: argparse.Namespace, budget: Any,
                     compiled: bool = False) -> list[dict[str, Any]]:
    """The eager cases, or (``compiled``) the torch.compile ones, which the run takes last:
    their warm-up alone took 263 s for the base model on an H200."""
    import torch

    cases: list[dict[str, Any]] = []
    big = [2, 4] if args.tiny else [64, 32, 16, 8]  # upsampler: the largest that fits
    batches = [1, 2, 4] if args.tiny else [1, 16, 64]
    mid = batches[1]
    plan: list[tuple[str, int | None, bool, bool, bool]] = []
    for b in batches:
        plan.append(("base", b, False, False, False))
    plan += [("base", mid, False, False, True), ("base", batches[-1], False, True, False),
             ("base", mid, True, False, False)]
    plan += [("upsample", 1, False, False, False), ("upsample", mid, False, False, False),
             ("upsample", mid, False, False, True), ("upsample", None, False, True, False),
             ("upsample", mid, True, False, False)]
    plan = [p for p in plan if p[0] in args.kinds and p[2] == compiled]
    for kind, batch, comp, ckpt, nhwc in plan:
        label = f"train {kind} batch {batch or 'max'}{' compile' if comp else ''}" \
                f"{' checkpointing' if ckpt else ''}{' channels_last' if nhwc else ''}"
        if not budget(label):
            cases.append({"kind": kind, "batch": batch, "asked": batch, "compile": comp,
                          "checkpointing": ckpt, "channels_last": nhwc,
                          "skipped": "time budget"})
            continue
        for b in ([batch] if batch else big):
            try:
                case = train_case(kind, b, device=args.device, tiny=args.tiny, compile=comp,
                                  checkpointing=ckpt, steps=args.steps, warmup=args.warmup,
                                  channels_last=nhwc)
                break
            except RuntimeError as exc:  # torch.OutOfMemoryError is one
                if not _is_oom(exc) or b == (big[-1] if not batch else b):
                    case = {"kind": kind, "batch": b, "compile": comp, "checkpointing": ckpt,
                            "channels_last": nhwc, "error": str(exc).splitlines()[0][:200]}
                    break
                torch.cuda.empty_cache()
        case["asked"] = batch  # None: the largest that fits
        cases.append(case)
        _print_case(case)
    return cases


def graphs_section(args: argparse.Namespace, budget: Any) -> list[dict[str, Any]]:
    """Each case eager and then with the network's forward and backward as CUDA graphs, one
    after the other on the same machine: what the host's launch cost takes from a step."""
    if not args.device.startswith("cuda"):
        print("  skipped: CUDA graphs need a CUDA device", flush=True)
        return [{"skipped": "no CUDA device"}]
    pairs = [("base", 16), ("base", 64), ("base", 128), ("upsample", 16)]
    figures = []
    for kind, batch in pairs:
        if not budget(f"graphs {kind} {batch}"):
            figures.append({"kind": kind, "batch": batch, "skipped": "time budget"})
            continue
        pair = {"kind": kind, "batch": batch}
        for graphs in (False, True):
            name = "graphs" if graphs else "eager"
            try:
                case = train_case(kind, batch, device=args.device, tiny=args.tiny,
                                  compile=False, checkpointing=False, steps=args.steps,
                                  warmup=args.warmup, graphs=graphs)
                pair |= {f"{name}_images_per_s": case["images_per_s"],
                         f"{name}_step_ms": case["step_ms"],
                         f"{name}_peak_memory_gib": case["peak_memory_gib"],
                         f"{name}_finite": case["finite"]}
            except Exception as exc:  # a capture that fails is a finding, not a crash
                pair[f"{name}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            import torch

            torch.cuda.empty_cache()
        if "eager_images_per_s" in pair and "graphs_images_per_s" in pair:
            pair["speedup"] = pair["graphs_images_per_s"] / pair["eager_images_per_s"]
        print(f"  {kind:8s} batch {batch:3d}: eager "
              f"{pair.get('eager_images_per_s', float('nan')):7.1f} images/s, CUDA graphs "
              f"{pair.get('graphs_images_per_s', float('nan')):7.1f} images/s "
              f"(peak {pair.get('graphs_peak_memory_gib', float('nan')):.1f} GiB)"
              + (f"  {pair['graphs_error']}" if "graphs_error" in pair else ""), flush=True)
        figures.append(pair)
    return figures


def _print_case(case: dict[str, Any]) -> None:
    head = (f"  {case['kind']:8s} batch {case['batch']!s:>3s} compile={case['compile']!s:5s} "
            f"checkpointing={case['checkpointing']!s:5s} "
            f"channels_last={case['channels_last']!s:5s}")
    if "images_per_s" in case:
        print(f"{head} {case['images_per_s']:9.1f} images/s  {case['step_ms']:8.1f} ms/step  "
              f"{case['memory']} {case['peak_memory_gib']:6.2f} GiB  "
              f"warm-up {case['warmup_s']:.1f} s",
              flush=True)
    else:
        print(f"{head} {case.get('error') or case.get('skipped')}", flush=True)


def sampling_section(args: argparse.Namespace) -> dict[str, Any]:
    """Base (25 dpm++2m steps, guidance 3) + upsampler (ddpm fast27) at batch 16."""
    import torch

    from glidectl.glide import create_model
    from glidectl.pipeline import GlidePipeline

    batch = 4 if args.tiny else 16
    torch.manual_seed(0)
    base = create_model(model_options("base", args.tiny)).to(args.device).eval()
    up = create_model(model_options("upsample", args.tiny)).to(args.device).eval()
    if args.tiny:  # the tiny upsampler takes 16 px input: pair it with a 16 px base
        base = create_model(model_options("base", True).replace(image_size=16)).to(
            args.device).eval()
    pipe = GlidePipeline(base, up, precision="bf16" if args.device.startswith("cuda")
                         else "fp32")
    memory = memory_word(args.device)
    kwargs = dict(sampler="dpm++2m", steps=args.sample_steps, guidance=3.0,
                  upsample_sampler="ddpm", upsample_steps=args.upsample_steps,
                  batch_size=batch, output="tensor")
    pipe.generate(["warm-up"] * batch, **{**kwargs, "steps": 2, "upsample_steps": "2"})
    _sync(args.device)
    _reset_peak(args.device)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    out = pipe.generate([f"a photo number {i}" for i in range(batch)], timings=timings,
                        **kwargs)
    _sync(args.device)
    seconds = time.perf_counter() - t0
    figures = {"batch": batch, "images": int(out.shape[0]), "seconds": seconds,
               "steps": args.sample_steps, "upsample_steps": args.upsample_steps,
               "upsampled_images_per_s": out.shape[0] / seconds,
               "base_s": timings.get("base"), "upsample_s": timings.get("upsample"),
               "precision": pipe.precision.name, "peak_memory_gib": _peak_gib(args.device),
               "finite": bool(torch.isfinite(out).all())}
    print(f"  base {args.sample_steps} dpm++2m + upsampler {args.upsample_steps}, batch {batch}: "
          f"{figures['upsampled_images_per_s']:.2f} upsampled images/s "
          f"in {figures['precision']} (base {figures['base_s']:.2f} s, upsampler "
          f"{figures['upsample_s']:.2f} s, {memory} {figures['peak_memory_gib']:.2f} GiB)",
          flush=True)
    return figures


def _engine_run(root: Path, name: str, precision: str, steps: int, tiny: bool,
                deterministic: bool) -> Any:
    from glidectl.config import GlideConfig
    from glidectl.training.engine import Trainer

    cfg = GlideConfig()
    cfg.model.size = "tiny" if tiny else "small"
    cfg.data.source = "demo:shapes"
    cfg.data.resolution = 32 if tiny else 64
    cfg.train.output_dir = str(root)
    cfg.train.name = name
    cfg.train.steps = steps
    cfg.train.batch_size = 8 if tiny else 32
    cfg.train.lr = 3e-4
    cfg.train.precision = precision
    cfg.train.seed = 0
    cfg.train.deterministic = deterministic
    cfg.preview.every = 0
    cfg.checkpoint.every = 0
    return Trainer(cfg, quiet=True).run()


def trainer_section(args: argparse.Namespace, budget: Any) -> list[dict[str, Any]]:
    """glidectl's Trainer (what ``glidectl train`` and ``upsample`` run: data stream,
    accelerate, EMA, the non-finite guard) on each of ``--kinds`` from scratch at its own
    size (base at batch 16 and 64, upsampler at 16), eager and with ``train.cuda_graphs``:
    images/s from the run's own throughput meter (the log windows after the first, which
    holds the warm-up and the graph's recording), its share waiting for data, the last
    loss."""
    import torch

    from glidectl.config import GlideConfig
    from glidectl.training.engine import Trainer

    figures = []
    cuda = torch.cuda.is_available()
    plan = [(kind, batch) for kind in args.kinds for batch in (
        [2] if args.tiny else [16, 64] if kind == "base" else [16])]
    for kind, batch in plan:
        for graphs in (False, True):
            if not budget(f"trainer {kind} {batch} {'graphs' if graphs else 'eager'}"):
                figures.append({"kind": kind, "batch": batch, "cuda_graphs": graphs,
                                "skipped": "budget"})
                continue
            with tempfile.TemporaryDirectory(prefix="glidectl-bench-gpu-") as tmp:
                cfg = GlideConfig()
                cfg.model.kind = kind
                cfg.model.size = "tiny" if args.tiny else "official"
                size = 32 if args.tiny else model_options(kind, False).image_size
                cfg.data.source, cfg.data.resolution = "demo:shapes", size
                cfg.data.workers = 0 if args.tiny else 4  # drawn as fast as a GPU trains
                cfg.train.output_dir, cfg.train.name = tmp, "t"
                cfg.train.steps, cfg.train.batch_size = 3 * args.trainer_log, batch
                cfg.train.lr, cfg.train.seed, cfg.train.cuda_graphs = 1e-5, 0, graphs
                cfg.preview.every, cfg.checkpoint.every = 0, 0
                cfg.log.every = args.trainer_log
                case = _guarded(lambda cfg=cfg: _trainer_case(Trainer(cfg, quiet=True)))
            case.update({"kind": kind, "batch": batch, "cuda_graphs": graphs,
                         "precision": "bf16" if cuda else "fp32"})
            figures.append(case)
            print(f"  Trainer, {kind:8s} batch {batch:3d}, "
                  f"{'CUDA graphs' if graphs else 'eager      '}: "
                  + (case["error"] if "error" in case else
                     f"{case['images_per_s']:7.1f} images/s (data wait "
                     f"{100 * case['data_wait']:.0f} %), graphs recorded "
                     f"{case['graphs_recorded']}, last loss {case['last_loss']:.4f}"),
                  flush=True)
    return figures


def _trainer_case(trainer: Any) -> dict[str, Any]:
    run = trainer.run()
    later = [r for r in run.history if "images_per_s" in r][1:]
    return {"images_per_s": sum(r["images_per_s"] for r in later) / max(1, len(later)),
            "data_wait": sum(r["data_wait"] for r in later) / max(1, len(later)),
            "graphs_recorded": getattr(trainer.net, "recorded", 0),
            "last_loss": run.last_loss}


def engine_section(args: argparse.Namespace) -> dict[str, Any]:
    """fp16 + GradScaler for 50 steps (no NaN, loss falls); two identical runs with
    ``train.deterministic`` (on a GPU), same weights."""
    import torch
    from safetensors.torch import load_file

    cuda = torch.cuda.is_available()  # the engine trains on the GPU whatever --device says
    precision = "fp16" if cuda else "fp32"  # fp16 needs a GPU
    steps = args.engine_steps
    with tempfile.TemporaryDirectory(prefix="glidectl-bench-gpu-") as tmp:
        root, seconds, weights = Path(tmp), [], []
        for name in ("a", "b"):
            t0 = time.perf_counter()
            run = _engine_run(root, name, precision, steps, args.tiny, deterministic=cuda)
            seconds.append(time.perf_counter() - t0)
            step = f"step-{steps:06d}"
            weights.append(load_file(run.run_dir / "checkpoints" / step / "model.safetensors"))
            if name == "a":
                losses = [r["loss"] for r in run.history]
        k = max(1, len(losses) // 5)
        early, late = sum(losses[:k]) / k, sum(losses[-k:]) / k
        wa, wb = weights
        identical = wa.keys() == wb.keys() and all(bool((wa[n] == wb[n]).all()) for n in wa)
    figures = {"precision": precision, "steps": steps, "deterministic": cuda,
               "all_finite": all(math.isfinite(v) for v in losses),
               "loss_first": early, "loss_last": late, "loss_falls": late < early,
               "identical_weights": identical, "run_seconds": seconds}
    print(f"  {precision} engine{' (train.deterministic)' if cuda else ''}, {steps} steps: "
          f"loss {early:.4f} → {late:.4f} "
          f"({'falls' if late < early else 'does NOT fall'}), "
          f"{'finite' if figures['all_finite'] else 'NaN/inf seen'}; two identical runs: "
          f"{'identical' if identical else 'DIFFERENT'} weights "
          f"({seconds[0]:.0f} s and {seconds[1]:.0f} s)", flush=True)
    return figures


def cuda_tests_section(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-k", "cuda or gpu", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", str(ROOT / "tests")]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          timeout=args.test_timeout)
    tail = done.stdout.strip().splitlines()[-1:] or [done.stderr.strip()[-200:]]
    print(f"  pytest -k 'cuda or gpu': {tail[0]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"returncode": done.returncode, "summary": tail[0]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny models and batches (CPU checks)")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per case")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (compile, autotune)")
    ap.add_argument("--engine-steps", type=int, default=50)
    ap.add_argument("--trainer-log", type=int, default=10,
                    help="trainer section: steps per log window (3 windows a run)")
    ap.add_argument("--sample-steps", type=int, default=25, help="base dpm++2m steps")
    ap.add_argument("--upsample-steps", default="fast27", help="upsampler ddpm respacing")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for all sections")
    ap.add_argument("--skip-tests", action="store_true", help="do not run the CUDA tests")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                    help="which models' training cases to run")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                    help="which sections to run (with --merge, the others keep their figures)")
    ap.add_argument("--merge", action="store_true",
                    help="keep what the --out report already holds and this run does not "
                         "measure (another kind's cases, a section skipped here): one "
                         "report from runs that each fit a time limit")
    ap.add_argument("--test-timeout", type=float, default=240.0)
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON report (default benchmarks/results/gpu.json on a GPU with the "
                         "official models, else gpu-check.json beside it)")
    args = ap.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device here; pass --device cpu --tiny to check the logic")
    start = time.perf_counter()

    def budget(label: str) -> bool:
        left = args.budget - (time.perf_counter() - start)
        if left <= 0:
            print(f"  skipped ({label}): time budget of {args.budget:.0f} s used", flush=True)
        return left > 0

    cuda = args.device.startswith("cuda")
    name = torch.cuda.get_device_name(args.device) if cuda else args.device
    check = check_only(args.device, args.tiny)
    out = args.out or default_out(args.device, args.tiny)
    report: dict[str, Any] = {"device": name, "torch": torch.__version__, "tiny": args.tiny,
                              "goals": GOALS, "check_only": check}
    print(f"bench_gpu on {name} (torch {torch.__version__}{', tiny models' if args.tiny else ''})")
    if check:
        print(f"Note: {check}.", flush=True)
    run = set(args.sections) - ({"tests"} if args.skip_tests else set()) - (
        {"compile"} if args.no_compile else set())
    if "busy" in run:
        print("1. where an eager training step's time goes")
        report["busy"] = busy_section(args) if budget("busy") else [{"skipped": "budget"}]
    if "training" in run:
        print(f"2. training ({'bf16 autocast' if cuda else 'fp32'}, fused AdamW), eager")
        report["training"] = training_section(args, budget)
    if "graphs" in run:
        print("2b. training with the network as CUDA graphs, against eager")
        report["graphs"] = graphs_section(args, budget)
    if "trainer" in run:
        print("2c. glidectl's Trainer, eager and with train.cuda_graphs")
        report["trainer"] = trainer_section(args, budget)
    if "sampling" in run:
        print("3. sampling")
        report["sampling"] = _guarded(lambda: sampling_section(args)) if budget(
            "sampling") else {"skipped": "budget"}
    if "engine" in run:
        gpu = torch.cuda.is_available()  # the engine's device: a GPU wherever there is one
        print(f"4-5. engine: {'fp16 + GradScaler' if gpu else 'fp32 (fp16 needs a GPU)'}, "
              "determinism")
        report["engine"] = _guarded(lambda: engine_section(args)) if budget("engine") else {
            "skipped": "budget"}
    if "tests" in run and args.device.startswith("cuda"):
        print("6. CUDA-only tests")
        report["cuda_tests"] = _guarded(lambda: cuda_tests_section(args)) if budget(
            "tests") else {"skipped": "budget"}
    if "compile" in run:
        print("7. training with torch.compile")
        report.setdefault("training", [])
        report["training"] += training_section(args, budget, compiled=True)
    report["total_s"] = time.perf_counter() - start
    report["runs"] = [{"torch": torch.__version__, "kinds": args.kinds, "sections": sorted(run),
                       "total_s": report["total_s"]}]
    if args.merge and out.is_file():
        report = merged(json.loads(out.read_text(encoding="utf-8")), report)
    report["goals_met"] = goals_met(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"goals: {report['goals_met']}; total {report['total_s']:.0f} s; wrote {out}")
    return report


def _guarded(section: Any) -> dict[str, Any]:
    """A section's figures, or the error that stopped it: the report keeps the others'."""
    try:
        return section()
    except Exception as exc:
        error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        print(f"  failed: {error}", flush=True)
        return {"error": error}


def busy_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    figures = []
    for kind in KINDS:  # cheap: both models, whatever --kinds says
        for batch in ([1, 2] if args.tiny else [1, 16]):  # batch 1: the fixed cost of a step
            case = busy_case(kind, batch, device=args.device, tiny=args.tiny,
                             steps=1 if args.tiny else 3)  # tiny: a logic check
            busy, host = case["gpu_busy"], case["host_ms"]
            print(f"  {kind:8s} batch {batch:3d} eager: {case['step_ms']:.1f} ms/step profiled "
                  f"(host: forward {host['forward']:.1f}, backward {host['backward']:.1f}, "
                  f"optimizer {host['optimizer']:.1f} ms; {case['waits_per_step']:.0f} waits "
                  f"{case['wait_ms']:.1f} ms), "
                  + (f"GPU busy {100 * busy:.0f} %, {case['kernels_per_step']:.0f} kernels/step"
                     if busy is not None else f"{case['ops_per_step']:.0f} events/step (no GPU)"),
                  flush=True)
            for name, calls, ms in case["top_host_ops"][:6]:
                print(f"      host {ms:8.2f} ms/step {calls:7.0f}x  {name}")
            for name, calls, ms in case.get("top_gpu_ops", [])[:6]:
                print(f"      gpu  {ms:8.2f} ms/step {calls:7.0f}x  {name}")
            figures.append(case)
    return figures


def _case_key(case: dict[str, Any]) -> tuple:
    """Which training case a report entry is: the batch asked for (None: the largest that
    fits), which reports before ``asked`` give as ``batch``."""
    asked = case["asked"] if "asked" in case else case.get("batch")
    return (case.get("kind"), asked, *(case.get(k) for k in ("compile", "checkpointing",
                                                               "channels_last")),
            case.get("cuda_graphs", False))


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with what ``old`` measured and ``new`` did not: training cases it did not run
    (the other kind's, compiled ones) or skipped, busy shares it did not profile, and
    sections it skipped or did not run."""
    if old.get("device") != new["device"] or old.get("tiny") != new["tiny"]:
        sys.exit(f"bench_gpu: --merge: the report holds {old.get('device')} figures "
                 f"(tiny={old.get('tiny')}), not {new['device']}'s (tiny={new['tiny']}); "
                 "give another --out")
    out = dict(new)
    cases = {_case_key(c): c for c in old.get("training", [])}  # old order, new figures
    for case in new.get("training", []):
        if "skipped" not in case or "skipped" in cases.get(_case_key(case), case):
            cases[_case_key(case)] = case
    out["training"] = list(cases.values())
    if "busy" in old:
        profiled = {(c.get("kind"), c.get("batch")) for c in new.get("busy", [])
                    if "skipped" not in c}
        out["busy"] = [c for c in old["busy"]
                       if (c.get("kind"), c.get("batch")) not in profiled] + [
            c for c in new.get("busy", []) if "skipped" not in c]
    if "graphs" in old and "graphs" not in new:
        out["graphs"] = old["graphs"]
    if "trainer" in old:  # keyed by case: a run of one kind keeps the other's figures

        def key(c: dict[str, Any]) -> tuple:
            return c.get("kind", "base"), c.get("batch"), c.get("cuda_graphs")

        kept = {key(c): c for c in old["trainer"]}
        kept |= {key(c): c for c in new.get("trainer", []) if "skipped" not in c}
        out["trainer"] = list(kept.values())
    for section in ("sampling", "engine", "cuda_tests"):
        if section in old and not {"skipped", "error"} & old[section].keys() and (
                section not in new or {"skipped", "error"} & new[section].keys()):
            out[section] = old[section]
    out["runs"] = old.get("runs", [{"torch": old.get("torch"), "kinds": list(KINDS),
                                    "total_s": old.get("total_s")}]) + new["runs"]
    out["total_s"] = sum(r.get("total_s") or 0 for r in out["runs"])
    return out


def goals_met(report: dict[str, Any]) -> dict[str, bool | None]:
    """Best measured figure against each goal (None when not measured, or on a check run,
    whose figures are no GPU's)."""
    def best(kind: str) -> float | None:
        rates = [c["images_per_s"] for c in report.get("training", [])
                 if c.get("kind") == kind and "images_per_s" in c]
        return max(rates) if rates else None

    if report.get("check_only"):
        return dict.fromkeys(GOALS)
    sampling = report.get("sampling", {}).get("upsampled_images_per_s")
    figures = {"base_images_per_s": best("base"), "upsample_images_per_s": best("upsample"),
               "sampling_upsampled_images_per_s": sampling}
    return {k: None if v is None else v >= GOALS[k] for k, v in figures.items()}


if __name__ == "__main__":
    main()
