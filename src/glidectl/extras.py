"""How to install one of glidectl's optional extras, in the words that fit this install."""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """``pip install`` for the ``extra`` (``clip``, ``fid``, ``hf``, ``ui``): from the checkout
    for an editable install (``glidectl[...]`` would fetch another package from the index),
    and with the installed torch pinned in the same command, since pip, left free, replaces
    torch with the newest (CUDA) build to fit the newest torchvision."""
    import json
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    target = f'"glidectl[{extra}]"'
    try:
        direct = json.loads(metadata.distribution("glidectl").read_text("direct_url.json") or "{}")
        if direct.get("dir_info", {}).get("editable") and direct.get("url", "").startswith(
                "file://"):
            target = f'-e "{unquote(urlparse(direct["url"]).path)}[{extra}]"'
    except (metadata.PackageNotFoundError, ValueError, AttributeError, OSError):
        pass
    try:
        pin = f"torch=={metadata.version('torch').split('+')[0]} "
    except metadata.PackageNotFoundError:
        pin = ""
    return f"pip install {pin}{target}"
