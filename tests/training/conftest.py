"""Training fixtures: tiny configs (see tests/tiny_configs.py) on demo or folder data."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from tiny_configs import tiny_config

from glidectl.config import GlideConfig, save_config


@pytest.fixture
def tiny(tmp_path: Path):
    """``tiny(**sections)`` → a tiny config under this test's tmp_path."""
    return lambda **sections: tiny_config(tmp_path, **sections)


@pytest.fixture
def config_file(tmp_path: Path):
    """``config_file(cfg)`` → the config saved as a TOML file."""

    def write(cfg: GlideConfig, name: str = "glide.toml") -> Path:
        path = tmp_path / name
        save_config(cfg, path)
        return path

    return write


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Eight small captioned PNGs (image + same-named .txt)."""
    folder = tmp_path / "images"
    folder.mkdir()
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
               "yellow": (230, 220, 30)}
    for i in range(8):
        name, rgb = list(colours.items())[i % 4]
        im = Image.new("RGB", (40 + 4 * i, 36), rgb)
        im.putpixel((i, i), (255, 255, 255))
        im.save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"a {name} square number {i}\n")
    return folder
