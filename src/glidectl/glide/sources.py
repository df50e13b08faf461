"""Default plugin: the ``openai`` model source (``openai:base`` → a cached OpenAI checkpoint).

A model source is any object with ``names() -> list[str]`` and
``resolve(name, download=True, progress=True) -> Path``; plugins register more with
``register_model_sources``. No torch import here: ``glidectl --help`` loads this module.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import GlidectlError
from ..hookspecs import hookimpl
from .download import Fetched, cache_dir, fetch
from .options import KINDS

OPENAI_BASE_URL = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021"


def remote_name(kind: str) -> str:
    """The file OpenAI's folder holds for a kind: ``base-inpaint`` is ``base_inpaint.pt``
    there (glide-text2im's download table), a mirror's too."""
    return kind.replace("-", "_") + ".pt"


class OpenAISource:
    """OpenAI's four released GLIDE checkpoints (Dec 2021), cached under the glidectl cache."""

    name = "openai"
    description = "OpenAI's released GLIDE checkpoints: " + ", ".join(KINDS)

    def names(self) -> list[str]:
        return list(KINDS)

    def _check(self, name: str) -> None:
        if name not in KINDS:
            raise GlidectlError(
                f"Unknown OpenAI model {name!r}; use one of {', '.join(KINDS)} "
                "(e.g. openai:base)."
            )

    def url(self, name: str) -> str:
        """Download URL; ``GLIDECTL_OPENAI_URL`` replaces the base (mirrors, tests)."""
        self._check(name)
        base = os.environ.get("GLIDECTL_OPENAI_URL") or OPENAI_BASE_URL
        _check_url(base)
        return f"{base.rstrip('/')}/{remote_name(name)}"

    def cache_path(self, name: str) -> Path:
        """Where the checkpoint lives once downloaded: ``<cache>/openai/<name>.pt``."""
        self._check(name)
        return cache_dir() / "openai" / f"{name}.pt"

    def resolve(self, name: str, download: bool = True, progress: bool = True,
                as_spec: bool = True) -> Path:
        """The cached file, downloaded first if missing (no network when it is cached).
        ``as_spec``: asked for as the model spec ``openai:NAME``, which a path could replace."""
        return self.fetch(name, download, progress, as_spec).path

    def fetch(self, name: str, download: bool = True, progress: bool = True,
              as_spec: bool = True, check_cached: bool = False) -> Fetched:
        """:meth:`resolve`, saying who put the file in the cache (``glidectl download``);
        ``check_cached``: a file already cached is checked as a download is."""
        path = self.cache_path(name)
        if path.is_file():
            if check_cached:
                _check_cached_file(path, name)
            return Fetched(path, "cache")
        if not download:
            raise GlidectlError(
                f"openai:{name} is not downloaded; run `glidectl download {name}` or put "
                f"{name}.pt at {str(path)!r}."
            )
        instead = (f"pass a checkpoint file or a training run folder (runs/NAME) in place of "
                   f"openai:{name}") if as_spec else ""
        return fetch(self.url(name), path, progress=progress, instead=instead,
                     check=lambda part: _official_file_problem(part, name))


def cached_official(path: str | Path) -> str | None:
    """NAME when ``path`` is the cached file of ``openai:NAME`` (itself, a link to it, or a
    link in the cache to a file elsewhere), else None: however a command came to the file,
    reading it checks that it holds NAME."""
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        folder = (cache_dir() / "openai").resolve()
        given = Path(path).expanduser()
        for found in (given.absolute().parent.resolve() / given.name, given.resolve()):
            if found.parent == folder and found.suffix == ".pt" and found.stem in KINDS:
                return found.stem
    return None


def _check_cached_file(path: Path, name: str) -> None:
    """One sentence when the file cached as ``openai:NAME`` (put there by hand, or left by
    another tool) is not OpenAI's NAME checkpoint, checked as a download is."""
    problem = _official_file_problem(path, name)
    if problem:
        raise GlidectlError(
            f"{str(path)!r}, the cached openai:{name}, is not OpenAI's {name} checkpoint: "
            f"{problem}; delete it and run glidectl download {name} again.")


def _official_file_problem(path: Path, name: str) -> str | None:
    """Why a downloaded ``path`` is not OpenAI's ``name`` checkpoint (torch loads here, at
    the download, not when ``glidectl --help`` imports this module)."""
    from .official_files import official_file_problem

    return official_file_problem(path, name)


def _check_url(base: str) -> None:
    """GLIDECTL_OPENAI_URL must be an address urllib fetches from (a folder path or a
    malformed URL was a ValueError traceback at the download)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(base)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https", "ftp", "file") \
            or not (parts.netloc or parts.scheme == "file"):
        raise GlidectlError(
            f"GLIDECTL_OPENAI_URL {base!r} is not a URL; set it to the address of the folder "
            "holding OpenAI's checkpoints, such as https://host/glide or, for a local folder, "
            "file:///path/to/folder (or unset it).")


@hookimpl
def register_model_sources(register):
    register("openai", OpenAISource())
