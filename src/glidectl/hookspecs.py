"""The plugin hooks. Each hook receives a callback so one plugin can add many things."""

from __future__ import annotations

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("glidectl")
hookimpl = HookimplMarker("glidectl")


@hookspec
def register_samplers(register):
    """Register samplers: ``register(name, sampler, aliases=())``, ``sampler`` a
    :class:`glidectl.samplers.spec.Sampler` or a bare function ``fn(denoiser, x, sigmas,
    extra=None, callback=None, noise_sampler=None)`` that returns the final image (shaped
    like ``x``); ``denoiser(x, sigma)`` gives the x0 estimate (README: register_samplers)."""


@hookspec
def register_schedules(register):
    """Register step schedules: ``register(name, fn, aliases=())`` with
    ``fn(n, sigma_min, sigma_max)`` → n descending σ's then 0."""


@hookspec
def register_dataset_presets(register):
    """Register dataset presets: ``register(name, preset, aliases=())``."""


@hookspec
def register_model_sources(register):
    """Register model sources (``openai`` in ``openai:base``):
    ``register(name, source, aliases=())``."""


@hookspec
def register_data_sources(register):
    """Register data sources (``hf`` in ``hf:NAME``): ``register(name, SourceType, aliases=())``."""


@hookspec
def register_commands(app):
    """Add Typer commands or sub-apps to the ``glidectl`` app."""
