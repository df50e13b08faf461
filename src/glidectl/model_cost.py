"""What a model costs, known without its weights: options, parameter count and FLOPs per call.

``eval --dry-run`` plans with these, so it works offline and downloads nothing: options come
from a local file's metadata, or, for a model source's model that is not downloaded, from
the source's published architecture (OpenAI's four).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import GlidectlError


def local_weights(spec: str) -> Path | None:
    """The weights file ``spec`` names when it is already on disk, else None (no download)."""
    from .glide.loading import resolve_spec

    try:
        return resolve_spec(spec, download=False)
    except GlidectlError:
        return None


def spec_options(spec: str) -> tuple[Any, Path | None]:
    """(ModelOptions or None, local file or None) of ``spec`` without loading weights.

    A local .safetensors file gives its recorded options; a local .pt is read (weights only,
    memory-mapped); an ``openai:<kind>`` spec not yet downloaded gives OpenAI's options.
    """
    from .glide.options import KINDS, official_options

    path = local_weights(spec)
    if path is not None:
        if path.suffix == ".safetensors":
            from .glide.checkpoints import metadata_options

            if (options := metadata_options(path)) is not None:
                return options, path
        from .glide.loading import read_checkpoint

        return read_checkpoint(path)[1], path
    source, _, name = str(spec).partition(":")
    if source == "openai" and name in KINDS:
        return official_options(name), None
    raise GlidectlError(
        f"Model {spec!r} is neither on disk nor a known architecture, so --dry-run cannot "
        "size it; download it first or pass a weights file."
    )


def check_models(base: str | None, upsampler: str | None, alone: bool = False) -> None:
    """One sentence, before anything about a run is said, when ``base`` or ``upsampler``
    names no usable model: no such file or run, a damaged .safetensors header, a model of
    the wrong kind or size for its stage (``alone``: the upsampler runs without a base, on
    ``--low-res`` input). Reads no weights (a .safetensors header only) and downloads
    nothing."""
    from .pipeline import check_pair

    found, names = {}, {}
    for stage, spec in (("base", base), ("upsample", upsampler)):
        if spec and (options := known_options(spec)) is not None:
            found[stage], names[stage] = options, spec
    check_pair(found.get("base"), found.get("upsample"), names, alone)


def known_options(spec: str) -> Any:
    """The model options of ``spec`` known without reading weights or downloading (OpenAI's
    models by name, a .safetensors file's header), else None; a spec naming no model is
    :func:`~glidectl.glide.loading.check_spec`'s sentence."""
    from .glide.checkpoints import metadata_options
    from .glide.loading import check_spec
    from .glide.options import KINDS, official_options

    path = check_spec(spec)
    if path is None:  # a model source's, not downloaded: OpenAI's are known
        source, _, name = str(spec).partition(":")
        return official_options(name) if source == "openai" and name in KINDS else None
    return metadata_options(path) if path.suffix == ".safetensors" else None


def model_cost(options: Any, batch: int, guided: bool) -> dict[str, Any]:
    """Parameters, fp32 weight bytes and FLOPs of one network call on ``batch`` images
    (twice the rows with guidance: cond and uncond share one call). Counted on fake tensors,
    so nothing is allocated."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from .glide.unet import create_model

    rows = batch * (2 if guided else 1)
    size = options.image_size
    with FakeTensorMode(), torch.no_grad():
        model = create_model(options)
        params = sum(p.numel() for p in model.parameters())
        kwargs: dict[str, Any] = {}
        if options.super_res:
            low = options.low_res_size
            kwargs["low_res"] = torch.zeros(rows, 3, low, low)
        if options.inpaint:
            kwargs["inpaint_image"] = torch.zeros(rows, 3, size, size)
            kwargs["inpaint_mask"] = torch.zeros(rows, 1, size, size)
        x = torch.zeros(rows, 3, size, size)
        tokens = torch.zeros(rows, options.text_ctx, dtype=torch.long)
        mask = torch.ones(rows, options.text_ctx, dtype=torch.bool)
        with FlopCounterMode(display=False) as counter:
            model(x, torch.zeros(rows), tokens, mask, **kwargs)
    return {"parameters": params, "weight_bytes": params * 4,
            "flops_per_call": int(counter.get_total_flops())}


def dry_run_plan(plan: Any, settings: Any, device: str, pipeline: Any = None,
                 vocab_dir: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(models, plan) without loading weights: sizes and FLOPs from each model's options;
    one timed call per stage only when the weights are already on disk (or loaded; GPT-2
    models read the vocabulary in ``vocab_dir``, None: the default one)."""
    from .pipeline import check_pair, stage_model_calls
    from .sampling import sigma_table_for

    stage_opts = settings.stage_options()
    specs = {"base": settings.base, "upsample": settings.upsampler}  # as the user gave them
    where = {"base": settings.where("base"), "upsample": settings.where("upsampler")}
    models, calls, per_call, flops = {}, {}, {}, {}
    pending = len(plan.pending_batches)
    found = {stage: spec_options(path) for stage, path in where.items() if path}
    check_pair(*(found[s][0] if s in found else None for s in ("base", "upsample")),
               {stage: specs[stage] for stage in found})  # what the real run would refuse
    for stage, (opts, path) in found.items():
        spec = specs[stage]
        guided = stage_opts[stage].guidance not in (None, 1.0)
        cost = model_cost(opts, settings.batch_size, guided)
        models[stage] = {"spec": spec, "path": str(path) if path else None,
                         "local": path is not None, "kind": opts.kind,
                         "image_size": opts.image_size, **cost}
        calls[stage] = pending * stage_model_calls(stage, stage_opts[stage],
                                                   sigma_table_for(opts))
        flops[stage] = calls[stage] * cost["flops_per_call"]
    local = all(m["local"] for m in models.values())
    if local and pipeline is None:
        from .pipeline import GlidePipeline

        pipeline = GlidePipeline.from_specs(where["base"], where["upsample"],
                                            loras=settings.where("loras"), device=device,
                                            precision=settings.precision, vocab_dir=vocab_dir)
    if pipeline is not None:
        for stage in calls:
            per_call[stage] = pipeline.time_call(stage, settings.batch_size, stage_opts[stage])
    info = {
        "prompts": len(plan.prompts), "prompts_done": len(plan.done), "n": settings.n,
        "images": len(plan.prompts) * settings.n, "batches": len(plan.batches),
        "batches_pending": pending, "model_calls": calls, "flops": flops,
        "seconds_per_call": per_call,
        "estimated_s": sum(calls[s] * per_call[s] for s in calls) if per_call else None,
        "estimate_basis": ("model calls × one timed call per stage on this machine" if per_call
                           else "no timing: weights not on disk (nothing was downloaded)"),
    }
    return models, info
