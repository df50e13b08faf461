"""The gradio app around the backend, driven as a click is (``process_api``), no browser."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from glidectl.ui.backend import UiBackend


@pytest.fixture()
def fitted_run(models_dir, tmp_path) -> Path:
    """``tmp_path/m/my-run``'s ``schedule.json``: a 3-step bespoke file fitted to the run's
    checkpoint (a copy of the tiny model), in the models folder ``tmp_path/m``."""
    from test_bench_limits import bespoke_file

    step = tmp_path / "m" / "my-run" / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    return bespoke_file(step / "model.safetensors", tmp_path / "m" / "my-run" / "schedule.json",
                        3)


def test_a_click_serves_its_pngs_from_the_output_folder_not_copies(models_dir, tmp_path,
                                                                     monkeypatch):
    pytest.importorskip("gradio")
    from glidectl.ui.app import build_app

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    backend = UiBackend(models_dir, device="cpu", output_dir=tmp_path / "out")
    demo = build_app(backend)
    run = next(fn for fn in demo.fns.values() if fn.name == "run")
    inputs = ["a red circle", 2, "euler", 1, "fast27", 1.0, "3", "tiny.safetensors", "(none)",
              "(none)", 1.0, "fp32", False, "(default)", False]
    for _ in range(3):  # clicks for hours: gradio's cache must not gain a copy of each image
        gallery = asyncio.run(demo.process_api(run, inputs))["data"][0]
        served = [Path(item["image"]["path"]) for item in gallery]
        assert [p.parent.parent for p in served] == [tmp_path / "out"] * 2
        assert all(p.is_file() for p in served)
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))
    assert demo.delete_cache  # what gradio still caches is removed, at the latest at exit


def test_a_click_while_generating_runs_the_last_click_after_it(models_dir, tmp_path):
    """Generate had gradio's trigger mode "once": a click while a run was going was dropped
    without a word, so settings changed meanwhile were never made. Now the page keeps the
    last such click and runs it, with the settings then set, when the run ends."""
    pytest.importorskip("gradio")
    from glidectl.ui.app import build_app

    demo = build_app(UiBackend(models_dir, device="cpu", output_dir=tmp_path / "out"))
    run = next(i for i, fn in demo.fns.items() if fn.name == "run")
    generate = next(b._id for b in demo.blocks.values()
                    if getattr(b, "elem_id", None) == "generate")
    dependency = next(d for d in demo.get_config_file()["dependencies"] if d["id"] == run)
    assert dependency["targets"] == [(generate, "click")]
    assert dependency["trigger_mode"] == "always_last"


def test_a_click_s_warnings_name_the_page_s_controls(fitted_models_dir, tmp_path, capsys,
                                                     recwarn):
    """A click's warnings were shown (and printed) in glidectl sample's words: "sample with
    --grey", "sample with --guidance 3"."""
    pytest.importorskip("gradio")
    from glidectl.ui.app import build_app
    from glidectl.ui.backend import FITTED_SCHEDULE

    backend = UiBackend(fitted_models_dir, device="cpu", output_dir=tmp_path / "out")
    demo = build_app(backend)
    run = next(fn for fn in demo.fns.values() if fn.name == "run")
    inputs = ["a red circle", 1, "bespoke", 3, "fast27", 1.0, "3", "my-run/", "(none)",
              "(none)", 1.0, "fp32", False, FITTED_SCHEDULE, False]
    asyncio.run(demo.process_api(run, inputs))
    shown = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("Warning: ")]
    assert len(shown) == 3, shown
    assert "; sample with the Grey box ticked, or refit it with the terminal command " \
           "glidectl fit-steps " in shown[0]
    assert "; sample with Guidance set to 3, or refit it with the terminal command " \
           "glidectl fit-steps " in shown[1]
    assert all(" --guidance " in line for line in shown)  # the commands keep their flags
    # the page's toasts (gr.Warning, a Python warning outside a browser's request) say the
    # same, naming files as the page does; the terminal, the server's, names them in full
    assert all(f" --out {fitted_models_dir / 'my-run' / 'schedule.json'} " in line
               for line in shown)
    toasts = [str(w.message) for w in recwarn if "Schedule file" in str(w.message)]
    assert toasts == [backend.shown(line.removeprefix("Warning: ")) for line in shown]
    assert all(" --out my-run/schedule.json " in toast and str(fitted_models_dir) not in toast
               for toast in toasts)


def test_number_boxes_pass_what_was_typed_and_refuse_out_of_range_in_one_sentence(
        models_dir, tmp_path):
    """Images per run, Base steps, Guidance and LoRA scale were sliders: the page set a number
    typed past an end (steps 5000, guidance 35) to that end without a word, and one sent past
    it got gradio's "Value 40 is greater than maximum value 16.", naming no box; a fraction
    of a step ran at its whole part. Now the boxes have no bounds for the browser to clamp
    to: a number in ``sample``'s range is used as typed, any other is one sentence naming
    the box and its range, and nothing is generated."""
    pytest.importorskip("gradio")
    import json

    import gradio as gr

    from glidectl.ui.app import build_app

    out = tmp_path / "out"
    demo = build_app(UiBackend(models_dir, device="cpu", output_dir=out))
    index = {"Images per run": 1, "Base steps": 3, "Guidance": 5, "LoRA scale": 10}  # in run
    boxes = {c["props"]["label"]: (c["type"], c["props"].get("minimum"),
                                   c["props"].get("maximum"))
             for c in demo.get_config_file()["components"] if c["props"].get("label") in index}
    assert boxes == dict.fromkeys(index, ("number", None, None))  # nothing for JS to clamp to
    run = next(fn for fn in demo.fns.values() if fn.name == "run")
    inputs = ["a red circle", 1, "euler", 1, "fast27", 1.0, "3", "tiny.safetensors", "(none)",
              "(none)", 1.0, "fp32", False, "(default)", False]

    def typed(label: str, value: float | None) -> list:
        return [value if i == index[label] else v for i, v in enumerate(inputs)]

    for label, value, message in (
        ("Images per run", 40, "Images per run must be from 1 to 16; got 40."),
        ("Base steps", 20000, "Base steps must be from 1 to 10000; got 20000."),
        ("Base steps", 2.5, "Base steps must be a whole number; got 2.5."),
        ("Guidance", 150, "Guidance must be from 0 to 100; got 150."),
        ("LoRA scale", -11.0, "LoRA scale must be from -10 to 10; got -11."),
        ("Guidance", None, "Guidance is empty; type a number from 0 to 100."),
    ):
        with pytest.raises(gr.Error) as refused:
            asyncio.run(demo.process_api(run, typed(label, value)))
        assert refused.value.message == message
    assert not list(out.rglob("*.png"))
    data = asyncio.run(demo.process_api(run, typed("Guidance", 35)))["data"]  # past 20
    assert json.loads(data[2])["guidance"] == 35


def test_number_boxes_sent_no_number_through_the_api_are_one_sentence(models_dir, tmp_path,
                                                                      capsys):
    """gradio passes any JSON a client sends on to the click: "abc" as Base steps was
    "invalid literal for int() with base 10: 'abc'" in the page and a traceback in the
    server's terminal (Guidance "abc": float()'s; Images per run [1]: TypeError)."""
    pytest.importorskip("gradio")
    import gradio as gr

    from glidectl.ui.app import build_app

    out = tmp_path / "out"
    demo = build_app(UiBackend(models_dir, device="cpu", output_dir=out))
    run = next(fn for fn in demo.fns.values() if fn.name == "run")
    inputs = ["a red circle", 1, "euler", 1, "fast27", 1.0, "3", "tiny.safetensors", "(none)",
              "(none)", 1.0, "fp32", False, "(default)", False]
    for i, value, message in (
        (3, "abc", "Base steps must be a number from 1 to 10000; got 'abc'."),
        (5, "abc", "Guidance must be a number from 0 to 100; got 'abc'."),
        (1, [1], "Images per run must be a number from 1 to 16; got [1]."),
        (1, True, "Images per run must be a number from 1 to 16; got True."),
        (10, 10**400, "LoRA scale must be from -10 to 10; got 1.00e+400."),
    ):
        with pytest.raises(gr.Error) as refused:
            asyncio.run(demo.process_api(run, [value if j == i else v
                                               for j, v in enumerate(inputs)]))
        assert refused.value.message == message
    assert "Traceback" not in capsys.readouterr().err
    assert not list(out.rglob("*.png"))


def test_picking_a_fitted_schedule_sets_guidance_to_the_value_it_was_fitted_at(
        fitted_run, tmp_path):
    """Picking a file fitted at guidance 3.25 left Guidance as it was, on a slider stepping by
    0.5: the page said "Guidance set to 3.25" with no way to drag there. Now the pick sets it,
    on the box's step, and the box (no end) takes one fitted above 20 as it is."""
    pytest.importorskip("gradio")
    import json

    from glidectl.ui.app import build_app
    from glidectl.ui.backend import FITTED_SCHEDULE

    data = json.loads(fitted_run.read_text())
    demo = build_app(UiBackend(tmp_path / "m", device="cpu", output_dir=tmp_path / "out"))
    box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "guidance")
    on_schedule = next(fn for fn in demo.fns.values() if fn.name == "on_schedule")
    for guidance in (3.25, 37.5):
        fitted_run.write_text(json.dumps({**data, "guidance": guidance}))
        sampler, steps, update, *_ = asyncio.run(demo.process_api(
            on_schedule, [FITTED_SCHEDULE, "my-run/", "dpm++2m", "(none)", 25, 3.0, False, None,
                          "(none)"]
        ))["data"]
        assert (sampler["value"], steps["value"], update["value"]) == ("bespoke", 3, guidance)
        assert box.maximum is None and "maximum" not in update
        stops = guidance / box.step  # on the box's step: the browser marks it valid
        assert abs(stops - round(stops)) < 1e-9


def test_picking_a_fitted_schedule_ticks_grey_as_it_was_fitted(fitted_run, tmp_path):
    """Picking a file fitted to grey sampling's ODE set sampler, steps and guidance but left
    the Grey box unticked, so the first click warned "sample with the Grey box ticked". Now
    the pick sets Grey as the file records it (a file from before grey was recorded leaves
    the box as it is), and sampling with what the pick set says nothing about grey."""
    pytest.importorskip("gradio")
    import json

    from glidectl.ui.app import build_app
    from glidectl.ui.backend import FITTED_SCHEDULE

    data = json.loads(fitted_run.read_text())
    backend = UiBackend(tmp_path / "m", device="cpu", output_dir=tmp_path / "out")
    demo = build_app(backend)
    on_schedule = next(fn for fn in demo.fns.values() if fn.name == "on_schedule")
    for recorded in (True, False, None):
        fitted_run.write_text(json.dumps({**data, "grey": recorded} if recorded is not None
                                   else data))
        *_, grey, _ = asyncio.run(demo.process_api(
            on_schedule, [FITTED_SCHEDULE, "my-run/", "dpm++2m", "(none)", 25, 3.0, False, None,
                          "(none)"]
        ))["data"]
        assert grey.get("value", "left") == ("left" if recorded is None else recorded)
        if recorded is not None:
            result = backend.generate("a red circle", n=1, seed=3, sampler="bespoke",
                                      base_steps=3, schedule=FITTED_SCHEDULE, base="my-run/",
                                      grey=grey["value"])
            assert not [w for w in result.warnings if "grey" in w.lower()], result.warnings


def test_leaving_the_fitted_schedule_puts_back_the_steps_guidance_and_grey_it_set(
        fitted_run, tmp_path):
    """Picking the fitted file sets sampler, steps, Guidance and Grey from it; picking another
    schedule then put back only a sampler that needs the file, so the file's steps, guidance
    and grey stayed on a schedule they were not chosen for (the recommended sampler then ran
    at the bespoke solver's 3 steps). Now each goes back to what the page recommends (the
    model's steps and guidance; Grey as the models recommend) while it still holds what the
    pick set; one the user changed since is left as they set it."""
    pytest.importorskip("gradio")
    import json

    from gradio.state_holder import SessionState

    from glidectl import plugins
    from glidectl.ui.app import _recommended_values, build_app
    from glidectl.ui.backend import FITTED_SCHEDULE, OWN_SCHEDULE

    fitted_run.write_text(json.dumps({**json.loads(fitted_run.read_text()), "guidance": 3.25,
                                "grey": True}))
    backend = UiBackend(tmp_path / "m", device="cpu", output_dir=tmp_path / "out")
    demo = build_app(backend)
    on_schedule = next(fn for fn in demo.fns.values() if fn.name == "on_schedule")
    sampler0, steps0, guidance0 = _recommended_values(backend, "my-run/",
                                                      plugins.samplers().names())
    assert (steps0, guidance0, backend.recommends_grey("my-run/")) == (25, 3.0, False)
    session = SessionState(demo)  # one page: what the pick set is kept between events

    def pick(schedule: str, sampler: str, steps: int, guidance: float, grey: bool
             ) -> list[dict]:
        """The page's controls on picking ``schedule`` with these values set."""
        return asyncio.run(demo.process_api(on_schedule, [
            schedule, "my-run/", sampler, "(none)", steps, guidance, grey, None, "(none)"],
            state=session))["data"][:4]

    def values(updates: list[dict]) -> list:
        return [u.get("value", "left") for u in updates]

    assert values(pick(FITTED_SCHEDULE, "dpm++2m", 25, 3.0, False)) == [
        "bespoke", 3, 3.25, True]
    assert values(pick(OWN_SCHEDULE, "bespoke", 3, 3.25, True)) == [
        sampler0, steps0, 3.0, False]
    assert values(pick("karras", sampler0, 25, 3.0, False)) == ["left"] * 4  # nothing picked
    # Steps and Guidance changed after the pick are the user's; Grey as the pick set it
    # goes back
    assert values(pick(FITTED_SCHEDULE, "dpm++2m", 25, 3.0, False)) == [
        "bespoke", 3, 3.25, True]
    assert values(pick("karras", "bespoke", 12, 5.0, True)) == [
        sampler0, "left", "left", False]
    # the same for Grey; a sampler the file does not need stays
    pick(FITTED_SCHEDULE, "dpm++2m", 25, 3.0, False)
    assert values(pick(OWN_SCHEDULE, "unipc", 3, 3.25, False)) == ["left", 25, 3.0, "left"]
    # and the same value set by hand again after leaving is not taken back later
    assert values(pick("karras", "unipc", 3, 3.25, True)) == ["left"] * 4


def test_the_no_base_model_note_names_no_server_path(tmp_path):
    """With an empty models folder the page said "…in the models folder (/srv/…/models)":
    the server's path, which the page's other messages never show."""
    pytest.importorskip("gradio")
    from glidectl.ui.app import build_app

    empty = tmp_path / "server-side-models"
    empty.mkdir()
    demo = build_app(UiBackend(empty, device="cpu", output_dir=tmp_path / "out"))
    note = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "no-base")
    assert note.visible and "models folder (`glidectl ui --models-dir`)" in note.value
    assert str(empty) not in note.value and "server-side-models" not in note.value
