"""Step schedules and the σ ⇄ t adapter of the GLIDE denoiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glidectl.diffusion import create_diffusion
from glidectl.errors import GlidectlError
from glidectl.samplers.denoiser import GlideDenoiser
from glidectl.samplers.schedules import (
    build_sigmas,
    get_sigmas_exponential,
    get_sigmas_karras,
    sigmas_from_alphas_cumprod,
)

COS = sigmas_from_alphas_cumprod(create_diffusion("squaredcos_cap_v2").alphas_cumprod)
LINEAR = sigmas_from_alphas_cumprod(create_diffusion("linear").alphas_cumprod)


def test_cosine_sigma_table_needs_clamping() -> None:
    assert COS[-1] > 15_000 and 50 < COS[-11] < 100  # golden README: ≈ 20,000 and 71


def test_karras_runs_from_sigma_max_to_sigma_min_then_zero() -> None:
    sigmas = get_sigmas_karras(5, 0.01, 80.0, rho=7.0)
    assert len(sigmas) == 6 and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.01)
    mid = (80.0 ** (1 / 7) + 0.5 * (0.01 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert sigmas[2].item() == pytest.approx(mid)
    assert torch.all(sigmas[:-1].diff() < 0)


def test_exponential_is_even_in_log_sigma() -> None:
    sigmas = get_sigmas_exponential(4, 0.1, 100.0)
    ratios = sigmas[1:-1] / sigmas[:-2]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 0.1))


@pytest.mark.parametrize("schedule", ["karras", "exponential"])
def test_sigma_space_schedules_clamp_sigma_max(schedule: str) -> None:
    assert build_sigmas(schedule, 10, COS)[0].item() == pytest.approx(80.0)
    assert build_sigmas(schedule, 10, COS, sigma_max=160)[0].item() == pytest.approx(160.0)
    assert build_sigmas(schedule, 10, LINEAR, sigma_max=1e6)[0].item() == pytest.approx(
        LINEAR[-1])
    assert build_sigmas(schedule, 10, COS)[-2].item() == pytest.approx(COS[0])


def test_respaced_schedule_uses_glide_timesteps(carried) -> None:
    from safetensors.torch import load_file

    dg = load_file(str(carried / "diffusion_golden.safetensors"))
    for section in ("10", "ddim25", "fast27", "10,10,10"):
        ts = dg[f"respace/{section}/timestep_map"].numpy()
        sigmas = build_sigmas("respaced", section, COS)
        np.testing.assert_allclose(sigmas[:-1].numpy(), COS[ts[::-1]])
        assert sigmas[-1] == 0


def test_bad_steps_are_user_errors() -> None:
    with pytest.raises(GlidectlError):
        build_sigmas("karras", "fast27", COS)
    with pytest.raises(GlidectlError):
        build_sigmas("cosine", 10, COS)
    for steps in (2.5, "2.5", "1e3"):  # a number, so no hint about respacing strings
        with pytest.raises(GlidectlError) as err:
            build_sigmas("karras", steps, COS)
        assert "whole number of steps" in str(err.value) and "respacing" not in str(err.value)


@pytest.mark.parametrize("steps", ["\u00b2", "\u0663", "\uff13", "1_0"])
def test_steps_of_other_digits_are_user_errors(steps: str) -> None:
    # str.isdigit() took "²" (then int() raised a ValueError traceback) and "٣", "３" as 3
    with pytest.raises(GlidectlError, match="whole number of steps"):
        build_sigmas("karras", steps, COS)
    assert build_sigmas("karras", " +3 ", COS).shape == (4,)  # a sign and spaces: still 3


def test_denoiser_maps_sigma_to_fractional_original_timesteps() -> None:
    den = GlideDenoiser(torch.nn.Identity(), create_diffusion().alphas_cumprod)
    assert den.sigma_to_t(float(COS[417])) == pytest.approx(417, abs=1e-9)
    t = den.sigma_to_t(math.sqrt(COS[416] * COS[417]))  # halfway in log σ
    assert t == pytest.approx(416.5)
    assert den.t_to_sigma(t) == pytest.approx(math.sqrt(COS[416] * COS[417]))
    assert den.sigma_to_t(1e9) == 999 and den.sigma_to_t(1e-9) == 0


class _RecordT(torch.nn.Module):
    """A fake GLIDE network that predicts ε = 0 and records the timesteps it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def forward(self, x, t, text_emb=None, **kwargs):
        self.seen.append(float(t[0]))
        return torch.zeros(x.shape[0], 6, *x.shape[2:])


def test_fractional_t_reaches_the_network_unless_quantised() -> None:
    net = _RecordT()
    sigma = math.sqrt(COS[416] * COS[417])
    x = torch.ones(1, 3, 2, 2)
    den = GlideDenoiser(net, create_diffusion().alphas_cumprod, clip=False)
    torch.testing.assert_close(den(x, sigma), x)  # ε = 0 → D = x
    den.quantize_t = True
    den(x, sigma)
    assert net.seen[0] == pytest.approx(416.5) and net.seen[1] in (416.0, 417.0)


@pytest.mark.parametrize("name", ["karras", "exponential", "logsnr", "polyexponential",
                                  "optimised"])
@pytest.mark.parametrize("n", [1, 2, 7, 10, 23])
def test_get_sigmas_gives_n_descending_sigmas_then_zero(name: str, n: int) -> None:
    from glidectl.samplers import get_sigmas

    sigmas = get_sigmas(name, n, 0.002, 80.0)
    assert len(sigmas) == n + 1 and sigmas[-1] == 0 and sigmas.dtype == torch.float64
    assert sigmas[0].item() == pytest.approx(80.0)
    if n > 1:
        assert sigmas[-2].item() == pytest.approx(0.002)
    assert torch.all(sigmas[:-1].diff() < 0)


@pytest.mark.parametrize("name", ["karras", "exponential", "polyexponential", "optimised"])
def test_get_sigmas_stays_in_the_range_asked(name: str) -> None:
    """σ^(1/ρ)^ρ and exp(log σ) can land an ulp outside the ends: polyexponential's σ_0
    was 80.00000000000004 at σ_max 80 (guidance_interval=(0, 80) skipped its first step)."""
    from glidectl.samplers import get_sigmas

    for lo, hi in ((float(COS[0]), 80.0), (1.0, 1.0000001), (0.002, 0.0020000001),
                   (0.0292, 157.40761), (0.01, 14.6146)):
        for n in (1, 2, 5, 10, 25):
            sigmas = get_sigmas(name, n, lo, hi)[:-1]
            assert lo <= sigmas.min().item() and sigmas.max().item() <= hi, (lo, hi, n)


def test_logsnr_is_even_in_log_snr() -> None:
    from glidectl.samplers import get_sigmas

    log_snr = -2 * get_sigmas("logsnr", 6, 0.01, 100.0)[:-1].log()
    torch.testing.assert_close(log_snr.diff(), torch.full((5,), log_snr.diff()[0].item(),
                                                          dtype=torch.float64))


def test_polyexponential_rho_one_is_exponential_and_rho_above_one_favours_low_sigma() -> None:
    from glidectl.samplers import get_sigmas

    exp = get_sigmas("exponential", 8, 0.01, 50.0)
    torch.testing.assert_close(get_sigmas("polyexponential", 8, 0.01, 50.0), exp)
    assert get_sigmas("polyexponential", 8, 0.01, 50.0, rho=2.0)[4] < exp[4]


def test_optimised_schedule_reproduces_its_stored_positions() -> None:
    from glidectl.samplers import get_sigmas
    from glidectl.samplers.tuned import POSITIONS

    sigmas = get_sigmas("optimised", 10, 0.002, 80.0)[:-1]
    u = (math.log(80.0) - sigmas.log()) / math.log(80.0 / 0.002)
    torch.testing.assert_close(u, torch.tensor(POSITIONS[10], dtype=torch.float64),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("schedule", ["polyexponential", "logsnr", "optimised"])
def test_every_schedule_works_with_build_sigmas_and_a_model_table(schedule: str) -> None:
    sigmas = build_sigmas(schedule, 9, COS)
    assert len(sigmas) == 10 and sigmas[0].item() == pytest.approx(80.0)
    assert sigmas[-2].item() == pytest.approx(COS[0])


def test_get_sigmas_rejects_bad_input_in_one_sentence() -> None:
    from glidectl.samplers import get_sigmas

    with pytest.raises(GlidectlError, match="Did you mean 'karras'"):
        get_sigmas("karas", 10, 0.002, 80.0)
    with pytest.raises(GlidectlError, match="sigma_min < sigma_max"):
        get_sigmas("karras", 10, 80.0, 0.002)
    with pytest.raises(GlidectlError, match="whole number"):
        get_sigmas("karras", 0, 0.002, 80.0)
    with pytest.raises(GlidectlError, match="build_sigmas"):
        get_sigmas("respaced", 10, 0.002, 80.0)
    for n in (True, 2.0):
        with pytest.raises(GlidectlError, match="whole number"):
            get_sigmas("karras", n, 0.002, 80.0)
    # each was AttributeError, TypeError, RuntimeError or ZeroDivisionError from inside; an
    # infinite sigma_max was blamed on the schedule
    for args, options, said in [
        ((3, 5, 0.1, 80.0), {}, "get_sigmas() takes a schedule name (karras, exponential, …) "
         "or a schedule file's path, got 3 (int)."),
        (("karras", 5, "0.1", 80.0), {}, "get_sigmas(): sigma_min= takes a finite number, got "
         "'0.1' (str)."),
        (("karras", 3, torch.tensor([0.1, 0.2]), 80.0), {}, "get_sigmas(): sigma_min= takes a "
         "finite number, got tensor([0.1000, 0.2000]) (Tensor)."),
        (("karras", 5, 0.1, float("inf")), {}, "get_sigmas(): sigma_max= takes a finite "
         "number, got inf (float)."),
        (("karras", 5, 0.1, 80.0), {"rho": 0}, "get_sigmas(): rho= takes a finite number above "
         "0, got 0 (int)."),
        (("karras", 5, 0.1, 80.0), {"rho": "x"}, "get_sigmas(): rho= takes a finite number "
         "above 0, got 'x' (str)."),
        # float64 cancels karras' last σ's to 0 (was: zeros returned as σ's)
        (("karras", 50, 0.002, 1e300), {}, "The karras schedule from σ 1e+300 down to 0.002 "
         "in 50 steps ends in σ's float64 cannot hold apart (…, 1.88728e+290, 1.47444e+288, 0, "
         "0): the range is too wide; give a smaller sigma_max or larger sigma_min."),
    ]:
        with pytest.raises(GlidectlError) as info:
            get_sigmas(*args, **options)
        assert str(info.value) == said
    assert float(get_sigmas("karras", 3, np.float32(0.1), np.float64(80.0))[0]) == 80.0


def test_a_huge_step_count_is_one_sentence_not_out_of_memory() -> None:
    """get_sigmas/build_sigmas with 10**9 steps allocated 8 GB arrays until the process was
    killed for memory (or raised torch's RuntimeError/numpy's MemoryError)."""
    from glidectl.samplers import get_sigmas
    from glidectl.samplers.schedules import MAX_STEPS

    for call in (lambda: get_sigmas("karras", 10**9, 0.002, 80.0),
                 lambda: get_sigmas("optimised", np.int64(10**9), 0.002, 80.0),
                 lambda: build_sigmas("exponential", "1000000000", COS)):
        with pytest.raises(GlidectlError, match=r"^The \w+ schedule takes at most 1000000 "
                                                r"steps, got 1000000000; pass fewer steps\.$"):
            call()
    assert len(get_sigmas("exponential", MAX_STEPS, 0.002, 80.0)) == MAX_STEPS + 1


def test_build_sigmas_names_an_argument_of_the_wrong_kind() -> None:
    """A schedule of None was an AttributeError from the registry, sigma_max='x' float()'s
    ValueError, and a sigma_min above sigma_max was blamed on sigma_max as "this model's
    smallest σ" (the caller's own sigma_min)."""
    for args, options, said in [
        ((None, 5, COS), {}, "build_sigmas() takes a schedule name (karras, exponential, "
         "respaced, …) or a schedule file's path, got None (NoneType)."),
        (("karras", 5, COS), {"sigma_max": "x"}, "build_sigmas(): sigma_max= takes a finite "
         "number, or None for the model's own, got 'x' (str)."),
        (("karras", 5, COS), {"sigma_min": float("nan")}, "build_sigmas(): sigma_min= takes a "
         "finite number, or None for the model's own, got nan (float)."),
        (("karras", 5, COS), {"sigma_min": 100.0, "sigma_max": 10.0}, "build_sigmas(): "
         "sigma_min=100 is not below sigma_max 10 (the smaller of sigma_max= and this model's "
         "largest σ); pass a smaller sigma_min."),
    ]:
        with pytest.raises(GlidectlError) as info:
            build_sigmas(*args, **options)
        assert str(info.value) == said
    sigmas = build_sigmas("karras", 5, COS, sigma_min=np.float32(0.5), sigma_max=np.int64(10))
    assert float(sigmas[0]) == 10.0 and float(sigmas[-2]) == pytest.approx(0.5)


def test_get_sigmas_takes_numpy_and_torch_integers() -> None:
    from glidectl.samplers import get_sigmas

    want = get_sigmas("karras", 5, 0.002, 80.0)
    for n in (np.int64(5), torch.tensor(5).numpy()[()], np.arange(6)[5]):
        torch.testing.assert_close(get_sigmas("karras", n, 0.002, 80.0), want, rtol=0, atol=0)


def test_a_schedule_file_may_be_a_pathlib_path(tmp_path) -> None:
    """get_sigmas and build_sigmas took a schedule file's path as text only: a Path was
    "takes a schedule name … or a schedule file's path, got PosixPath(…)"."""
    from pathlib import Path

    from glidectl.samplers import get_sigmas
    from glidectl.samplers.tuned import write_schedule_file

    path = tmp_path / "s.json"
    write_schedule_file(path, {4: get_sigmas("exponential", 4, 0.01, 80.0)}, 0.01, 80.0, "test")
    assert isinstance(path, Path)
    torch.testing.assert_close(get_sigmas(path, 4, 0.01, 80.0),
                               get_sigmas(str(path), 4, 0.01, 80.0), rtol=0, atol=0)
    torch.testing.assert_close(build_sigmas(path, 4, COS), build_sigmas(str(path), 4, COS),
                               rtol=0, atol=0)
    from glidectl.sampling import stage_word  # generate(schedule=Path(...)) refused it too

    assert stage_word("schedule", path) == str(path)


def test_a_schedule_option_that_breaks_the_sigmas_is_named_not_a_traceback() -> None:
    """get_sigmas('karras', …, rho=1e-300) was OverflowError's traceback, and rho=1e300 was
    blamed on the schedule ("Schedule 'karras' must return 5 descending σ's …")."""
    from glidectl.errors import PluginError
    from glidectl.samplers import get_sigmas

    for schedule, rho, what in [("karras", 1e-300, "would overflow float64"),
                                ("karras", 1e300, "would give σ's that do not descend"),
                                ("polyexponential", 1e300, "would give σ's that do not")]:
        with pytest.raises(GlidectlError) as info:
            get_sigmas(schedule, 5, 0.002, 80.0, rho=rho)
        assert not isinstance(info.value, PluginError)
        assert str(info.value).startswith(f"get_sigmas(): the {schedule} schedule with "
                                          f"rho={rho!r} in 5 steps {what}"), info.value
        assert str(info.value).endswith("; pass options nearer its defaults, rho="
                                        f"{7.0 if schedule == 'karras' else 1.0}.")
    assert len(get_sigmas("karras", 5, 0.002, 80.0, rho=3.0)) == 6  # a usual ρ is untouched


def test_a_stopped_fit_s_count_given_as_digits_is_warned_of(tmp_path) -> None:
    """generate(steps="7") (digits: "that count on any schedule, as --steps 7 is") on a file
    a stopped fit left without 7 steps' σ's sampled interpolated σ's with no warning."""
    import json

    from glidectl.samplers import get_sigmas
    from glidectl.samplers.tuned import unfitted_warning, write_schedule_file

    path = tmp_path / "s.json"
    write_schedule_file(path, {4: get_sigmas("exponential", 4, 0.01, 80.0)}, 0.01, 80.0, "test",
                        sampler="unipc", not_fitted=[7])
    assert json.loads(path.read_text())["not_fitted"] == [7]
    said = unfitted_warning(path, 7)
    assert said and "holds no σ's for 7 steps" in said
    assert unfitted_warning(path, "7") == unfitted_warning(path, " 7") == said
    assert unfitted_warning(path, "4") is None
