"""How to install one of glidectl's optional extras, in the words that fit this install."""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """``pip install`` for the ``extra`` (``clip``, ``fid``, ``hf``, ``ui``): from the checkout
    for an editable install (``glidectl[...]`` would fetch another package from the index),
    and with the installed torch pinned in the same command, since pip, left free, replaces
    torch with the newest (CUDA) build to fit the newest torchvision. Beside a CPU torch,
    ``clip`` and ``fid`` first take the matching torchvision from PyTorch's CPU index."""
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
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return f"pip install {target}"
    version = torch_version.split("+")[0]
    hint = f"pip install torch=={version} {target}"
    vision = torchvision_for(version)
    if extra in ("clip", "fid") and torch_version.endswith("+cpu") and vision:
        # PyPI's torchvision is built for PyPI's CUDA torch and fails beside a CPU build
        return (f"pip install torch=={version} torchvision=={vision} --index-url "
                f"{CPU_INDEX}, then {hint}")
    return hint


CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def torchvision_for(torch_version: str) -> str | None:
    """The torchvision release made for torch ``2.M.P`` (0.(M+15).P), else None."""
    parts = torch_version.split("+")[0].split(".")
    if len(parts) != 3 or parts[0] != "2" or not all(p.isdigit() for p in parts):
        return None
    return f"0.{int(parts[1]) + 15}.{parts[2]}"


def import_problem(exc: BaseException, module: str, extra: str) -> str:
    """Why ``module`` (of the ``extra``) did not import, as a clause: "is not installed (pip
    install ...)" when it is itself missing, else :func:`broken_import`'s account."""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == module:
        return f"is not installed ({install_hint(extra)})"
    return broken_import(exc)


def broken_import(exc: BaseException) -> str:
    """Why an installed package does not import, as a clause ("does not import (...)"): the
    root exception and, when torchvision fails inside it, the versions at fault (pip's
    torchvision wheel is often built for another torch than the one installed)."""
    import traceback
    from importlib import metadata

    chain, seen = [exc], {id(exc)}
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) and id(nxt) not in seen:
        chain.append(nxt)
        seen.add(id(nxt))
    root = chain[-1]
    if isinstance(root, ModuleNotFoundError) and root.name:
        return f"does not import: it needs {root.name}, which is not installed"
    text = str(root).strip().splitlines()[0] if str(root).strip() else ""
    clause = f"does not import ({type(root).__name__}: {text})"
    frames = [f.filename for e in chain for f in traceback.extract_tb(e.__traceback__)]
    if not any("torchvision" in s for s in [*frames, *map(str, chain)]):
        return clause

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "none"

    return (f"{clause}: torchvision {version('torchvision')} fails to load with torch "
            f"{version('torch')}, so it is probably built for another torch; install the "
            "torchvision release made for your torch, or uninstall torchvision")
