"""The sampler seam: built-ins are default plugins; third-party samplers register the same way."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from glidectl import plugins
from glidectl.errors import PluginError
from glidectl.hookspecs import hookimpl
from glidectl.samplers import Sampler
from glidectl.samplers.analytic import GaussianDenoiser
from glidectl.samplers.schedules import get_sigmas_karras


def sample_halfway(denoiser, x, sigmas, extra=None, callback=None):
    """A throwaway sampler: each step moves x halfway to the denoised prediction."""
    for i in range(len(sigmas) - 1):
        x = (x + denoiser(x, float(sigmas[i]))) / 2
    return x


class ThrowawayPlugin:
    @hookimpl
    def register_samplers(self, register):
        register("halfway", Sampler(sample_halfway), aliases=("half",))


@pytest.fixture
def throwaway_plugin():
    plugins.load_plugins()
    plugins.pm.register(ThrowawayPlugin(), name="throwaway")
    plugins.refresh()
    yield
    plugins.pm.unregister(name="throwaway")
    plugins.refresh()


def test_register_samplers_from_a_throwaway_plugin(throwaway_plugin) -> None:
    entry = plugins.samplers().entry("half")
    assert entry.name == "halfway" and entry.plugin == "throwaway"
    den = GaussianDenoiser(0.5, 0.5)
    out = entry.obj(den, torch.full((3,), 10.0, dtype=torch.float64),
                    get_sigmas_karras(3, 0.1, 10.0))
    assert den.calls == 3 and out.shape == (3,)


def test_register_samplers_builtins_come_from_the_default_plugin() -> None:
    assert "glidectl.samplers.builtin" in plugins.DEFAULT_PLUGINS
    registry = plugins.samplers()
    for name in ("ddpm", "ddim", "plms", "euler", "euler_a", "heun", "dpm++2m", "dpm++",
                 "dpm++2s_a", "dpm++2m_sde", "dpm++3m", "unipc", "unipc_bh1", "ipndm", "deis"):
        assert registry.entry(name).plugin == "glidectl.samplers.builtin"
    assert registry.get("dpm++") is registry.get("dpm++2m")
    # stochastic samplers are the ones that take the injected noise
    assert registry.get("ddpm").accepts("noise_sampler")
    assert not registry.get("heun").accepts("noise_sampler")


def test_a_name_registered_twice_names_both_plugins(throwaway_plugin) -> None:
    class Clash:
        @hookimpl
        def register_samplers(self, register):
            register("euler", Sampler(sample_halfway))

    plugins.pm.register(Clash(), name="clash")
    plugins.refresh()
    try:
        with pytest.raises(PluginError, match="registered twice") as info:
            plugins.samplers()
        assert "'glidectl.samplers.builtin'" in str(info.value) and "'clash'" in str(info.value)
        assert str(info.value).endswith("it is glidectl's own, so rename it in plugin 'clash' "
                                        "or uninstall that plugin.")
    finally:
        plugins.pm.unregister(name="clash")
        plugins.refresh()


def _dpm3m():
    if importlib.util.find_spec("glidectl_dpm3m") is None:
        pytest.skip("example plugin not installed: pip install -e plugins/glidectl-dpm3m")
    import glidectl_dpm3m

    return glidectl_dpm3m.sample_dpmpp_3m_sde


def test_dpm3m_plugin_ode_limit_converges_at_third_order() -> None:
    sample = _dpm3m()
    den = GaussianDenoiser(0.5, 0.5)
    errors = []
    for steps in (20, 40, 80):
        sigmas = get_sigmas_karras(steps, 0.02, 80.0)
        x = den.prior((256,), 80.0, torch.Generator().manual_seed(0))
        exact = den(den.ode_solution(x, 80.0, 0.02), 0.02)
        errors.append((sample(den, x, sigmas, eta=0.0) - exact).abs().max().item())
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert min(orders) > 2.75, (errors, orders)


def test_dpm3m_plugin_sde_reaches_the_data_variance() -> None:
    sample = _dpm3m()
    den = GaussianDenoiser(0.5, 0.5)
    g = torch.Generator().manual_seed(4)
    x = den.prior((20_000,), 80.0, g)
    out = sample(den, x, get_sigmas_karras(100, 0.02, 80.0),
                 noise_sampler=lambda s, sn: torch.randn(x.shape, generator=g, dtype=x.dtype))
    assert out.mean().item() == pytest.approx(0.5, abs=0.015)
    assert out.var().item() == pytest.approx(0.25, rel=0.05)


def sigmas_linear(n, sigma_min, sigma_max):
    """A throwaway schedule: σ evenly spaced, then 0."""
    return torch.cat([torch.linspace(sigma_max, sigma_min, n, dtype=torch.float64),
                      torch.zeros(1, dtype=torch.float64)])


class SchedulePlugin:
    @hookimpl
    def register_schedules(self, register):
        register("linear_sigma", sigmas_linear, aliases=("lin",))
        register("broken", lambda n, lo, hi: torch.linspace(lo, hi, n + 1))
        register("wordy", lambda n, lo, hi: "80, 1, 0")
        register("endless", lambda n, lo, hi: [float("inf"), *sigmas_linear(n - 1, lo, hi)])
        register("below", lambda n, lo, hi: [hi, 1.0, -1.0, -2.0, 0.0][-(n + 1):])


def test_register_schedules_from_a_throwaway_plugin() -> None:
    from glidectl.samplers import get_sigmas
    from glidectl.samplers.schedules import build_sigmas, sigmas_from_alphas_cumprod

    plugins.load_plugins()
    plugins.pm.register(SchedulePlugin(), name="schedules")
    plugins.refresh()
    try:
        entry = plugins.schedules().entry("lin")
        assert entry.name == "linear_sigma" and entry.plugin == "schedules"
        torch.testing.assert_close(get_sigmas("lin", 3, 1.0, 3.0),
                                   torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64))
        from glidectl.diffusion import create_diffusion

        table = sigmas_from_alphas_cumprod(create_diffusion().alphas_cumprod)
        assert build_sigmas("linear_sigma", 5, table)[0].item() == pytest.approx(80.0)
        out = plugins.samplers().get("unipc")(GaussianDenoiser(0.5, 0.5),
                                              torch.full((2,), 3.0, dtype=torch.float64),
                                              get_sigmas("lin", 6, 0.1, 3.0))
        assert out.shape == (2,)
        with pytest.raises(PluginError) as info:
            get_sigmas("broken", 4, 0.1, 3.0)
        assert str(info.value).startswith(
            "Plugin 'schedules' failed in schedule 'broken': it returned 5 values "
            "[0.1, 0.825, 1.55, 2.275, …], not 4 descending σ's followed by 0; switch it off")
        with pytest.raises(PluginError, match="'wordy': it returned str, not a tensor or list"):
            get_sigmas("wordy", 2, 0.1, 3.0)
        # descending and ending in 0, but σ_max = inf: the model's NaN would be blamed
        with pytest.raises(PluginError, match=r"'endless': it returned NaN or infinite σ's "
                           r"\[inf, 3, 0\.1, 0\]"):
            get_sigmas("endless", 3, 0.1, 3.0)
        # descending and ending in 0, but below 0 on the way: the sampler would be blamed
        with pytest.raises(PluginError, match=r"'below': it returned σ's at or below 0 before "
                           r"the last \[3, 1, -1, -2, …\]; σ's are above 0"):
            get_sigmas("below", 4, 0.1, 3.0)
    finally:
        plugins.pm.unregister(name="schedules")
        plugins.refresh()


def test_register_schedules_builtins_come_from_the_default_plugin() -> None:
    registry = plugins.schedules()
    for name in ("karras", "exponential", "logsnr", "polyexponential", "optimised"):
        assert registry.entry(name).plugin == "glidectl.samplers.builtin"


@pytest.mark.parametrize("name,own", [("dpm++2m", "exponential"), ("dpm++3m", "exponential"),
                                      ("unipc", "exponential"), ("unipc_bh1", "exponential"),
                                      ("ddim", "respaced"), ("heun", "karras")])
def test_schedule_auto_is_the_samplers_own(name: str, own: str) -> None:
    from glidectl.diffusion.schedules import get_named_beta_schedule
    from glidectl.samplers.schedules import build_sigmas, sigmas_from_alphas_cumprod
    from glidectl.sampling import StageOptions

    betas = get_named_beta_schedule("squaredcos_cap_v2", 1000)
    table = sigmas_from_alphas_cumprod(np.cumprod(1 - betas))
    assert plugins.samplers().get(name).schedule == own
    torch.testing.assert_close(StageOptions(sampler=name, steps=12).sigmas(table),
                               build_sigmas(own, 12, table))


def test_a_plugins_bare_function_sampler_has_karras_as_its_own_schedule() -> None:
    from glidectl.eval_settings import EvalSettings, Stage

    class BarePlugin:
        @hookimpl
        def register_samplers(self, register):
            register("bare_halfway", sample_halfway)

    plugins.load_plugins()
    plugins.pm.register(BarePlugin(), name="bare")
    plugins.refresh()
    try:
        stage = EvalSettings(base_stage=Stage("bare_halfway", 3)).base_stage
        assert stage.schedule == "karras"
    finally:
        plugins.pm.unregister(name="bare")
        plugins.refresh()


def test_a_plugin_samplers_own_schedule_that_is_not_registered_is_its_plugins_mistake(
        ) -> None:
    """It said "Unknown schedule 'lineer'" to a user who passed no --schedule."""
    from glidectl.errors import GlidectlError
    from glidectl.sampling import StageOptions

    class TypoPlugin:
        @hookimpl
        def register_samplers(self, register):
            register("typo_halfway", Sampler(sample_halfway, schedule="karas"))

    plugins.load_plugins()
    plugins.pm.register(TypoPlugin(), name="typo")
    plugins.refresh()
    table = np.linspace(0.01, 100.0, 50)
    try:
        with pytest.raises(GlidectlError) as info:
            StageOptions(sampler="typo_halfway", steps=3).sigmas(table)
        assert str(info.value) == (
            "The typo_halfway sampler (plugin 'typo') names schedule='karas' as its own, which "
            "is not registered (did you mean 'karras'?); pass --schedule, or fix its "
            "Sampler(schedule=...).")
        assert len(StageOptions(sampler="typo_halfway", steps=3, schedule="karras")
                   .sigmas(table)) == 4
    finally:
        plugins.pm.unregister(name="typo")
        plugins.refresh()


def test_an_unknown_schedule_lists_the_unregistered_kinds_before_the_registrys_note(
        monkeypatch) -> None:
    """The note on plugins left out was spliced into the list: "... name them there to load
    them, respaced (GLIDE's own timesteps), or a schedule file ..."."""
    from glidectl.errors import GlidectlError
    from glidectl.samplers.schedules import build_sigmas

    monkeypatch.setattr(plugins.schedules(), "unknown_note", "Plugins X are left out.")
    with pytest.raises(GlidectlError) as info:
        build_sigmas("lineer", 3, np.linspace(0.01, 100.0, 50))
    assert str(info.value).endswith(
        ", respaced (GLIDE's own timesteps), or a schedule file FILE.json from glidectl "
        "fit-steps. Plugins X are left out.")


@pytest.mark.parametrize("hook, name, aliases, said", [
    ("register_schedules", "auto", (), "registers schedule 'auto', which is glidectl's word "
     "for the sampler's own schedule; rename it."),
    ("register_schedules", "mine", ("respaced",), "registers schedule 'respaced', which is "
     "glidectl's word for GLIDE's own timesteps; rename it."),
    # listed by `glidectl plugins`, but --schedule and get_sigmas read such a name as a file
    ("register_schedules", "steps.JSON", (), "registers schedule 'steps.JSON', which "
     "--schedule would read as a schedule file (a name ending in .json); rename it."),
    ("register_samplers", "al", "xy", "registers sampler 'al' with aliases='xy'; pass a "
     "tuple of names, such as aliases=('xy',)."),
    ("register_samplers", 123, (), "registers sampler name 123; a name is a non-empty string "
     "without ':'."),
    ("register_samplers", "a:b", (), "registers sampler name 'a:b'; a name is a non-empty "
     "string without ':'."),
    ("register_samplers", "", (), "registers sampler name ''; a name is a non-empty string "
     "without ':'."),
])
def test_names_a_registry_cannot_take_are_refused_naming_the_plugin(hook, name, aliases, said):
    """`auto` and `respaced` ran a plugin's schedule from the library and not from the CLI;
    aliases="xy" registered x and y; an int name was an AttributeError."""
    class Odd:
        pass

    def register(self, register):
        register(name, lambda *a, **k: None, aliases=aliases)

    setattr(Odd, hook, hookimpl(register))
    plugins.load_plugins()
    plugins.pm.register(Odd(), name="odd")
    plugins.refresh()
    try:
        with pytest.raises(PluginError) as info:
            plugins.schedules() if hook == "register_schedules" else plugins.samplers()
    finally:
        plugins.pm.unregister(name="odd")
        plugins.refresh()
    assert str(info.value) == f"Plugin 'odd' {said}"


def test_aliases_in_any_iterable_but_a_string_register():
    """Sets, frozensets and generators of aliases registered before names were checked."""
    class Many:
        @hookimpl
        def register_samplers(self, register):
            register("many_set", lambda *a, **k: None, aliases={"ms"})
            register("many_gen", lambda *a, **k: None, aliases=(a for a in ["mg"]))

    plugins.load_plugins()
    plugins.pm.register(Many(), name="many")
    plugins.refresh()
    try:
        found = plugins.samplers()
        assert found.entry("ms").name == "many_set" and found.entry("mg").name == "many_gen"
    finally:
        plugins.pm.unregister(name="many")
        plugins.refresh()
