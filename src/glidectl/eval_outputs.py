"""What ``glidectl eval`` leaves on disk: numbered folders, ``000_<slug>.png`` + ``.txt``
pairs with their parameters in PNG text chunks, ``grid.png``, ``metadata.json``, W&B tables.

Every file is written through a temp file and an atomic rename, so a killed run leaves
only whole files (and ``.name.PID@HOST.tmp`` leftovers that the next run removes).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from . import atomic
from .errors import GlidectlError, canonical_word, one_line
from .eval_settings import META_FILE


def slugify(text: str, max_len: int = 48) -> str:
    """A file-name-safe, lower-case slug of a prompt (``a red circle`` → ``a-red-circle``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "prompt"


def index_width(count: int) -> int:
    """Digits of the prompt index in a new run's file names: 3, or more for 1,000+ prompts."""
    return max(3, len(str(count - 1)))


def padded_widths(out: Path) -> set[int]:
    """Index widths of the images in ``out`` whose names show theirs (``007_…``: 3)."""
    return {len(m.group(1)) for p in out.glob("*.png")
            if (m := re.match(r"(0\d*)_", p.name))}


def image_stems(prompts: Sequence[str], i: int, n: int, width: int | None = None) -> list[str]:
    """File stems of prompt i's images: ``000_<slug>`` or ``000_<slug>_1 … _n``, the index
    padded to ``width`` digits (default :func:`index_width`)."""
    width = width or index_width(len(prompts))
    stem = f"{i:0{width}d}_{slugify(prompts[i])}"
    return [stem] if n == 1 else [f"{stem}_{k + 1}" for k in range(n)]


def next_eval_dir(root: str | Path = "eval") -> Path:
    """The first free numbered folder ``root/0001``, ``root/0002``, …"""
    root = Path(root)
    taken = {int(p.name) for p in root.iterdir() if p.name.isdigit()} if root.is_dir() else set()
    return root / f"{max(taken, default=0) + 1:04d}"


def latest_eval_dir(root: str | Path = "eval") -> Path | None:
    """The highest-numbered folder under ``root`` (what ``--resume`` continues by default)."""
    root = Path(root)
    if not root.is_dir():
        return None
    numbered = sorted((int(p.name), p) for p in root.iterdir() if p.name.isdigit() and p.is_dir())
    return numbered[-1][1] if numbered else None


LOCK_FILE = ".lock"  # locked by the eval writing the folder (:func:`claim_folder`)


def busy_message(out: Path, resumes: bool = True) -> str:
    """The sentence for an ``out`` another eval is writing; ``resumes``: the eval refused
    can --resume (an upsampler eval, ``--low-res DIR``, cannot)."""
    if not resumes:
        return (f"--out {str(out)!r} is being written by another glidectl eval; pass a new or "
                "empty --out (an upsampler eval writes a folder of its own).")
    return (f"--out {str(out)!r} is being written by another glidectl eval; wait for it to "
            "finish (or stop it and continue it with --resume), or pass another --out.")


def refuse_if_busy(out: Path, resumes: bool = True) -> None:
    """One sentence when another eval is writing ``out`` (checked before any model loads;
    :func:`claim_folder` is what keeps it out); ``resumes`` as :func:`busy_message`'s."""
    if atomic.is_locked(out / LOCK_FILE):
        raise GlidectlError(busy_message(out, resumes))


KILLED = "stopped without recording (killed?)"  # a "running" record no process writes


def recorded_run(out: Path) -> dict[str, Any] | None:
    """``out``'s metadata.json as a dict, or None when there is none or it is damaged (said
    where :func:`read_metadata` reads it)."""
    try:
        meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def killed_run(out: Path, held: bool = False) -> dict[str, Any] | None:
    """``out``'s metadata.json when it says ``"running"`` but no eval writes the folder (its
    lock is free; ``held``: this process holds it): its writer ended without recording how
    (``kill -9``, a crash, a power cut). None otherwise, also for a damaged file (said where
    it is read)."""
    meta = recorded_run(out)
    if meta is None or meta.get("status") != "running":
        return None
    return meta if held or not atomic.is_locked(out / LOCK_FILE) else None


def holds_files(out: Path) -> bool:
    """Whether ``out`` holds anything but an eval's lock file."""
    return out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir())


# what an eval writes into its folder (besides metadata.json): image/caption pairs, the grid,
# its lock and atomic writes' temp files
_EVAL_NAME = re.compile(r"\d{3,}_[a-z0-9-]+(?:_\d+)?\.(?:png|txt)|grid\.png|\.lock|\..+\.tmp")


def _well_formed(meta: Any) -> bool:
    """Whether ``meta``, read from a metadata.json, has the shape of an eval's record where
    it has an eval's keys (a damaged or edited one has not)."""
    shapes = {"settings": dict, "models": dict, "sessions": list, "prompts": list,
              "paths": dict}

    def words(value: Any, kind: type = str) -> bool:  # null, or a list of ``kind``
        return value is None or isinstance(value, list) and all(
            isinstance(v, kind) for v in value)

    return (isinstance(meta, dict)
            and all(isinstance(meta.get(k, t()), t) for k, t in shapes.items())
            and all(isinstance(m, dict) and words(m.get("loras"), dict)
                    for m in meta.get("models", {}).values())
            and words(meta.get("plugins")) and words(meta.get("settings", {}).get("loras"))
            and isinstance(meta.get("device"), str | None))


def not_eval_record(meta: Any) -> bool:
    """Whether ``meta``, read from a metadata.json, is another program's: a JSON object that
    records neither the settings nor the status every eval's record holds (one with an
    eval's keys of the wrong shape is a damaged eval's)."""
    return _well_formed(meta) and not ({"settings", "status"} & meta.keys())


def missing_record(out: Path) -> str:
    """How ``out`` lacks an eval's metadata.json, for :func:`foreign_files`' sentences."""
    whose = "eval's " if (out / META_FILE).is_file() else ""  # another program's is there
    return f"no {whose}{META_FILE}"


def foreign_files(out: Path) -> str | None:
    """The files no eval writes (the first three, quoted) of a folder without an eval's
    metadata.json (none, or another program's, which is one of them): no eval's output;
    else None."""
    if not out.is_dir() or (out / META_FILE).is_file() and not not_eval_record(
            recorded_run(out)):
        return None
    foreign = sorted(p.name for p in out.iterdir()
                     if not (p.is_file() and _EVAL_NAME.fullmatch(p.name)))
    if not foreign:
        return None
    return ", ".join(map(repr, foreign[:3])) + (", …" if len(foreign) > 3 else "")


def refuse_foreign_files(out: Path) -> None:
    """One sentence when --skip-existing is given a folder without an eval's metadata.json
    that holds files no eval writes: its images would land among someone's own files (a
    plain eval refuses any folder that holds files)."""
    if (shown := foreign_files(out)) is not None:
        raise GlidectlError(
            f"--skip-existing: --out {str(out)!r} holds files no eval writes ({shown}) and "
            f"{missing_record(out)}, so it is no eval's output; pass an eval's folder, or an empty "
            "or new --out.")


@contextmanager
def claim_folder(out: Path, numbered: bool, resumes: bool = True) -> Iterator[Path]:
    """Create and lock ``out`` for one eval, until the block ends: a second eval into the
    same folder is refused in one sentence instead of writing its images among (and over)
    the first's. ``numbered``: ``out`` is the next ``eval/NNNN``; when another eval took it
    meanwhile, the next free number is taken instead. A folder made here that the block
    leaves with nothing in it is removed. ``resumes`` as :func:`busy_message`'s."""
    while True:
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=not numbered)
            break
        except FileExistsError:
            out = next_eval_dir(out.parent)
    lock = atomic.lock_file(out / LOCK_FILE, busy_message(out, resumes))
    try:
        yield out
    except BaseException:
        if created and not holds_files(out):
            with suppress(OSError):
                (out / LOCK_FILE).unlink()
                out.rmdir()
        raise
    finally:
        if lock is not None:
            lock.close()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temp file and an atomic rename."""
    atomic.write_json(path, data)


def stop_status(exc: BaseException) -> dict[str, str]:
    """How metadata.json records a run stopped by ``exc``: ``"interrupted"`` (Ctrl-C), else
    ``"failed"`` with the ``error``."""
    if isinstance(exc, KeyboardInterrupt):
        return {"status": "interrupted"}
    error = str(exc) if isinstance(exc, GlidectlError) else f"{type(exc).__name__}: {exc}"
    return {"status": "failed", "error": error}


class RunRecord:
    """metadata.json at ``path`` while a run writes its folder: :meth:`running` records it
    as running, and an exception leaving the block (Ctrl-C, a failure) rewrites that record
    with :func:`stop_status`'s, so only a writer that ended without a word (``kill -9``)
    leaves ``"running"`` (:func:`killed_run`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: dict[str, Any] | None = None
        self.rest: dict[str, Any] = {}

    def running(self, header: dict[str, Any], **rest: Any) -> None:
        write_json(self.path, {**header, "status": "running", **rest})
        self.header, self.rest = header, rest

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and self.header is not None:
            with suppress(Exception):  # a disk that took no image may take no record either
                write_json(self.path, {**self.header, **stop_status(exc), **self.rest})


def read_metadata(path: Path) -> dict[str, Any] | None:
    """A run's metadata.json, or None when there is none."""
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if not _well_formed(meta):
        raise GlidectlError(
            f"{str(path)!r} is not a metadata.json glidectl wrote (damaged or edited); "
            "delete it or pick another --out."
        )
    if not_eval_record(meta):  # another program's file: never to be replaced by an eval's
        raise GlidectlError(
            f"{str(path)!r} is no eval's metadata.json (it records no eval's settings or "
            f"status), so {str(path.parent)!r} holds no eval to continue; pick another --out.")
    return meta


def is_whole_png(path: Path) -> bool:
    """Whether ``path`` is an image whose every chunk is there and checks out (a truncated or
    damaged PNG is not); reads the file without decoding it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except (OSError, ValueError, SyntaxError):
        return False
    return True


def clean_temp_files(out: Path) -> None:
    """Remove half-written files a killed run left behind: temp files whose writer is gone
    (:func:`glidectl.atomic.remove_stale_temps`; a ``sample`` writing into the folder keeps
    its own), and the ``.name.tmp`` ones of evals before the temp names held the process id
    (an eval holds its folder's lock)."""
    atomic.remove_stale_temps(out)
    for tmp in out.glob(".*.tmp"):
        if not atomic.TEMP_NAME.fullmatch(tmp.name) \
                and tmp.name.endswith((".png.tmp", ".txt.tmp", ".json.tmp")):
            tmp.unlink(missing_ok=True)


def write_pair(out: Path, stem: str, image: Any, prompt: str, text: dict[str, str]) -> None:
    """``stem.txt`` (the prompt), then ``stem.png`` with ``text`` chunks: a PNG on disk means
    its caption is there too."""
    from .images import save_png

    atomic.write_text(out / f"{stem}.txt", prompt + "\n")
    save_png(image, out / f"{stem}.png", text)


def _int(text: dict[str, str], key: str) -> int | None:
    value = text.get(key, "")
    return int(value) if value.isdigit() else None


def read_back(out: Path, prompts: Sequence[str], stems: Sequence[Sequence[str]],
              fresh: set[int], chunk: int) -> Iterator[tuple[list[dict[str, Any]], list[Any]]]:
    """The run's images read back from disk ``chunk`` at a time, in order, each with its
    record for metadata.json (seed and candidate come from the PNG's own text chunks): a
    run of 30,000 images holds one chunk of them, not all."""
    from PIL import Image

    records: list[dict[str, Any]] = []
    images: list[Any] = []
    for i, prompt in enumerate(prompts):
        for k, stem in enumerate(stems[i]):
            with Image.open(out / f"{stem}.png") as im:
                text = dict(getattr(im, "text", {}))
                images.append(im.convert("RGB"))
            records.append({
                "file": f"{stem}.png", "caption_file": f"{stem}.txt", "prompt_index": i,
                "prompt": prompt, "image_index": k, "seed": _int(text, "seed"),
                "candidate": _int(text, "candidate"), "generated_this_session": i in fresh,
            })
            if len(images) == chunk:
                yield records, images
                records, images = [], []
    if images:
        yield records, images


GRID_FILE = "grid.png"
# what an eval's --out is, said when it is named like an image file
EVAL_OUT = "the folder a run's images are written to (000_PROMPT.png, …, metadata.json)"
GRID_MAX = 256  # images grid.png holds at most (--grid-max): the first prompts'


def grid_prompts(prompts: int, per_prompt: int, grid_max: int) -> int:
    """How many prompts, from the first, grid.png shows: every one while their images are
    at most ``grid_max``, else as many whole prompts as fit (at least one)."""
    return min(prompts, max(1, grid_max // per_prompt))


def grid(images: Sequence[Any], captions: Sequence[str], per_prompt: int = 1) -> Any:
    """The images, enlarged to ≥ 128 px with their captions under them
    (``captioned_grid``): one row per prompt when a prompt has several images, else a
    ceil-sqrt grid."""
    from .images import captioned_grid

    size = images[0].size
    return captioned_grid([im if im.size == size else im.resize(size) for im in images],
                          list(captions), cols=per_prompt if per_prompt > 1 else None,
                          min_size=128)


def check_wandb_mode(mode: str) -> str:
    """``mode`` as its word of :data:`glidectl.config.WANDB_MODES` (in any case); raise for
    another."""
    from .config import WANDB_MODES

    mode = canonical_word(mode, WANDB_MODES)
    if mode not in WANDB_MODES:
        raise GlidectlError(f"--wandb-mode {mode!r} is not a W&B mode; use "
                            f"{', '.join(WANDB_MODES)}.")
    return mode


WANDB_NOT_IN_PROJECT = "/\\#?%:"  # characters W&B refuses in a project's name


def check_wandb(mode: str, project: str | None = None) -> None:
    """Raise before any work when W&B logging cannot start: wandb absent, a mode not in
    :data:`glidectl.config.WANDB_MODES`, or a project name W&B refuses."""
    check_wandb_mode(mode)
    if project is not None and (bad := [c for c in project if c in WANDB_NOT_IN_PROJECT]):
        raise GlidectlError(f"--wandb-project {project!r} holds {bad[0]!r}, which W&B does not "
                            f"take in a project's name ({' '.join(WANDB_NOT_IN_PROJECT)}); "
                            "name it without (--wandb-entity sets the team or user).")
    if project is not None and not 0 < len(project) <= 128:
        raise GlidectlError(f"--wandb-project must be 1 to 128 characters, got {len(project)}; "
                            "give W&B a shorter project name.")
    try:
        import wandb
    except ImportError:
        raise GlidectlError("--wandb-project is set but wandb is not installed; pip install "
                            "wandb, or drop --wandb-project.") from None
    if project is not None and _wandb_online(mode) and not _wandb_key(wandb):
        raise GlidectlError(f"--wandb-mode {mode} logs to W&B's servers, but no W&B API key "
                            "is set up here; run `wandb login` (or set WANDB_API_KEY), pass "
                            "--wandb-mode offline, or drop --wandb-project.")


def _wandb_online(mode: str) -> bool:
    """Whether W&B runs online in ``mode`` (``auto``: as ``WANDB_MODE`` says, else online)."""
    return mode == "online" or (mode == "auto" and os.environ.get("WANDB_MODE", "online")
                                not in ("offline", "dryrun", "disabled"))


def _wandb_key(wandb: Any) -> bool:
    """Whether W&B holds an API key, checked without a prompt or the network (its own
    lines about it are not shown)."""
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return bool(wandb.login(prompt=False, verify=False))
        except Exception:  # an old wandb without prompt=: wandb.init says what is wrong
            return True


def log_wandb(project: str, entity: str, mode: str, out: Path,
              meta: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """One W&B run with a table of (prompt, image, seed, metrics) and the grid; its id and
    the tables' keys with their row counts. The images go as the run's files, read one at a
    time (never all in memory), in tables of at most ``wandb.Table.MAX_ROWS`` rows: W&B
    cuts a longer table to that many with only a log line (``eval/images``, then
    ``eval/images_2``, …)."""
    check_wandb(mode, project)
    import wandb

    from .config import wandb_init_mode
    try:
        run = wandb.init(
            project=project, entity=entity or None, mode=wandb_init_mode(mode),
            name=f"eval-{out.name}", dir=str(out), job_type="eval",
            config={"settings": meta["settings"], "models": meta["models"]},
        )
    except Exception as exc:  # wandb raises many kinds (auth, network, usage, disk)
        fix = ("run `wandb login`, pass --wandb-mode offline, or drop --wandb-project"
               if _wandb_online(mode) else "check --wandb-entity and that --out can be written, "
               "or drop --wandb-project")
        raise GlidectlError(f"Could not start a W&B run in project {project!r}: "
                            f"{one_line(str(exc)).rstrip('.')}; {fix}.") from None
    names, rows = list(meta["metrics"]), meta["images"]
    per_table = wandb.Table.MAX_ROWS
    tables: dict[str, Any] = {}
    for start in range(0, len(rows), per_table):
        table = wandb.Table(columns=["prompt", "image", "seed", *names])
        for rec in rows[start:start + per_table]:
            vals = [rec["metrics"].get(m) for m in names]
            table.add_data(rec["prompt"], wandb.Image(str(out / rec["file"]),
                                                      caption=rec["prompt"]),
                           rec["seed"], *vals)
        tables["eval/images" + (f"_{len(tables) + 1}" if tables else "")] = table
    summary = {f"eval/{m}": s["mean"] for m, s in meta["metrics"].items() if "mean" in s}
    fid = meta["metrics"].get("fid") or {}  # FID and KID: numbers of their own, no "mean"
    summary.update({f"eval/{k}": v for k, v in fid.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)})
    run.log({**tables, "eval/grid": wandb.Image(str(out / meta["grid"])), **summary})
    run.finish()
    return run.id, {key: len(t.data) for key, t in tables.items()}
