"""The gradio app around the backend, driven as a click is (``process_api``), no browser."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from glidectl.ui.backend import UiBackend


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


def test_a_click_s_warnings_name_the_page_s_controls(fitted_models_dir, tmp_path, capsys,
                                                     recwarn):
    """A click's warnings were shown (and printed) in glidectl sample's words: "sample with
    --grey", "sample with --guidance 3"."""
    pytest.importorskip("gradio")
    from glidectl.ui.app import build_app
    from glidectl.ui.backend import FITTED_SCHEDULE

    demo = build_app(UiBackend(fitted_models_dir, device="cpu", output_dir=tmp_path / "out"))
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
    # the page's toasts (gr.Warning, a Python warning outside a browser's request) say the same
    assert [str(w.message) for w in recwarn if "Schedule file" in str(w.message)] == [
        line.removeprefix("Warning: ") for line in shown]
