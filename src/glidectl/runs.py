"""The layout of a training run folder, in one place (training, loading, LoRA and export use it).

::

    runs/<name>/
      config.toml        the run's config
      .lock              locked by the process training the run, so no second one writes
      .heartbeats/       <rank>.json: what each process of a multi-process run is at (read
                         by the others' watchdogs; gone when the run ends)
      metrics.jsonl      one JSON record per logged step (and per validation)
      previews/          step-NNNNNN.png grids
      trackers/          TensorBoard event files, W&B's offline folder, ...
      base.safetensors   a LoRA run's scratch base network
      checkpoints/
        latest           text: the newest step folder's name (written just before the
                         folder is renamed into place: a name not there yet is skipped)
        best             text: the step folder with the lowest val_loss (checkpoint.keep_best)
        step-000500/
          model.safetensors, ema.safetensors   full weights (EMA: the average)
          lora/, lora-ema/                     LoRA adapters instead of full weights
          state/                               resume state: safetensors and JSON, no pickles

Only standard-library imports here: the CLI resolves paths without importing torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import GlidectlError

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
HEARTBEATS_DIR = ".heartbeats"
PREVIEWS_DIR = "previews"
TRACKERS_DIR = "trackers"
CHECKPOINTS_DIR = "checkpoints"
BASE_FILE = "base.safetensors"
LATEST = "latest"
BEST = "best"
STATE_DIR = "state"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
ADAPTER_DIR = "lora"
EMA_ADAPTER_DIR = "lora-ema"
ADAPTER_CONFIG = "adapter_config.json"
STEP_RE = re.compile(r"step-(\d+)")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def step_of(step_dir: Path) -> int | None:
    """step-000500 → 500 (None for another name)."""
    match = STEP_RE.fullmatch(Path(step_dir).name)
    return int(match.group(1)) if match else None


def make_folder(path: Path) -> None:
    """Make one of a run's folders (and those above it); a file or a broken link in its
    place is one sentence."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        what = "a broken symbolic link" if path.is_symlink() and not path.exists() \
            else "a file"
        raise GlidectlError(f"{str(path)!r} is {what}, where the run keeps a folder; "
                            "remove or rename it.") from None


@dataclass(frozen=True)
class RunDir:
    """runs/<name>/ and the paths inside it."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def heartbeats(self) -> Path:
        return self.root / HEARTBEATS_DIR

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def previews(self) -> Path:
        return self.root / PREVIEWS_DIR

    @property
    def trackers(self) -> Path:
        return self.root / TRACKERS_DIR

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def base(self) -> Path:
        return self.root / BASE_FILE

    def step_dir(self, step: int) -> Path:
        return self.checkpoints / step_dir_name(step)

    def create(self) -> None:
        for path in (self.root, self.previews, self.checkpoints):
            make_folder(path)

    def written_folders(self) -> list[Path]:
        """The folders training writes files into: the run, previews/, checkpoints/ and each
        step folder with its subfolders (where a ``kill -9`` may leave a temp file)."""
        folders = [self.root, self.previews, self.checkpoints]
        for step in steps_in(self.checkpoints):
            step_folder = self.step_dir(step)
            folders += [step_folder, *(p for p in step_folder.rglob("*") if p.is_dir())]
        return folders


#: checkpoints/<ABANDONED>step-N/: the checkpoints after step N, set aside by a resume from it
ABANDONED = "abandoned-after-"


def set_aside(step_dir: Path) -> bool:
    """Whether ``step_dir`` is a step folder a resume set aside
    (``checkpoints/abandoned-after-step-K/step-N``)."""
    return Path(step_dir).parent.name.startswith(ABANDONED)


def run_of_step_dir(step_dir: Path) -> Path:
    """runs/<name>/checkpoints/step-N (or a set-aside checkpoints/abandoned-after-…/step-N)
    → runs/<name>."""
    step_dir = Path(step_dir).resolve()
    return step_dir.parents[2] if set_aside(step_dir) else step_dir.parent.parent


def no_checkpoint_yet(path: Path) -> str | None:
    """The sentence for a run folder (it has a config.toml) with no checkpoint yet; else None.
    While a process trains it (its lock is held) the first is worth waiting for; else its
    training stopped before writing one, and none will come."""
    from .atomic import is_locked

    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or latest_under(path) is not None:
        return None
    if not is_locked(path / LOCK_FILE):
        return (f"Run {str(path)!r} has no checkpoint, and no process is training it (its "
                "training stopped before the first); train it again to start it over.")
    return (
        f"Run {str(path)!r} has no checkpoint yet (training writes one every checkpoint.every "
        "steps and when it stops); wait for the first."
    )


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a training run's folder: its config.toml beside checkpoints/ or
    previews/."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and any(
        (path / folder).is_dir() for folder in (CHECKPOINTS_DIR, PREVIEWS_DIR))


def run_holding(path: str | Path) -> tuple[Path, str] | None:
    """The training run ``path`` belongs to and what of it ``path`` is: ``"folder"`` (the run
    itself), ``"checkpoints"`` (its checkpoints/) or ``"checkpoint"`` (a step folder, a
    pointer or anything else inside checkpoints/); None for a path outside any run."""
    path = Path(path)
    if path.name in ("", ".", "..") or ".." in path.parts:  # no names to read: absolute
        path = Path(os.path.abspath(path))
    if is_run_folder(path):
        return path, "folder"
    for depth, folder in enumerate([path, *path.parents][:5]):  # step-N/state/x: 3 deep
        if folder.name == CHECKPOINTS_DIR and is_run_folder(folder.parent):
            return folder.parent, "checkpoint" if depth else "checkpoints"
    return None


def portable_name(path: str | Path) -> str:
    """``path`` as a record that names no local folder, the same from any folder: for a
    path in a training run, the run's name and the path within it
    (``my-lora/checkpoints/step-000002/lora-ema``), else the file's or folder's own name."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    run = _run_above(path)
    return path.name if run is None else "/".join([run.name, *path.relative_to(run).parts])


def _run_above(path: Path) -> Path | None:
    """The training run folder ``path`` (absolute) is in: by its config.toml, else by the
    layout (``RUN/checkpoints/[abandoned-after-…/]step-N/…``, as export names a step)."""
    held = run_holding(path)
    if held is not None:
        return held[0]
    for folder in [path, *path.parents][:4]:  # step-N/lora/adapter_model.safetensors: 2 deep
        if STEP_RE.fullmatch(folder.name) and (
                folder.parent.name == CHECKPOINTS_DIR or set_aside(folder)):
            return folder.parents[2] if set_aside(folder) else folder.parent.parent
    return None


def run_setting(run: str | Path, section: str, key: str) -> object | None:
    """``[section] key`` of a run folder's config.toml; None when the file is missing,
    unreadable or not TOML, or does not set it."""
    from .config import tomllib  # tomli before Python 3.11

    try:
        data = tomllib.loads((Path(run) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    table = data.get(section)
    return table.get(key) if isinstance(table, dict) else None


def state_dir(step_dir: Path) -> Path:
    return Path(step_dir) / STATE_DIR


def is_step_dir(path: Path) -> bool:
    return Path(path).is_dir() and STEP_RE.fullmatch(Path(path).name) is not None


def pruned_step_dir(path: str | Path) -> str | None:
    """The run's checkpoint step folder (``RUN/checkpoints/step-N``) that ``path`` is or lies
    in, as written or through a link, named as the user would name it; training's
    ``checkpoint.keep_last`` pruning deletes it whole, with anything else put in it (and a
    step not written yet is a checkpoint to pruning, which then keeps it in place of one,
    until training writes that step over it). None for a path in no step folder."""
    path = Path(path).expanduser()
    absolute = Path(os.path.abspath(path))
    for chain in ((absolute, *absolute.parents), (path.resolve(), *path.resolve().parents)):
        for folder in chain:
            if (STEP_RE.fullmatch(folder.name) and folder.parent.name == CHECKPOINTS_DIR
                    and is_run_folder(folder.parent.parent)):
                inside = chain[0] == absolute and not path.is_absolute()
                return os.path.relpath(folder) if inside else str(folder)
    return None


def steps_in(checkpoints: Path) -> list[int]:
    """Steps of the complete step folders in a checkpoints/ folder, oldest first."""
    checkpoints = Path(checkpoints)
    if not checkpoints.is_dir():
        return []
    return sorted(int(m.group(1)) for child in checkpoints.iterdir()
                  if (m := STEP_RE.fullmatch(child.name)) and child.is_dir())


def read_pointer(checkpoints: Path, name: str = LATEST) -> Path | None:
    """The step folder a pointer file (``latest``, ``best``) names, if it exists (None for a
    damaged or unreadable pointer: readers then take the highest complete step)."""
    pointer = Path(checkpoints) / name
    if not pointer.is_file():
        return None
    try:
        target = pointer.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:  # unreadable
        return None
    if target and STEP_RE.fullmatch(target) and (Path(checkpoints) / target).is_dir():
        return Path(checkpoints) / target
    return None


def set_aside_copies(checkpoints: Path, step: int) -> list[Path]:
    """The step folders of ``step`` that resumes from earlier checkpoints set aside in
    ``checkpoints/abandoned-after-…/`` (one a branch left there), oldest branch first."""
    found = Path(checkpoints).glob(f"{ABANDONED}*/{step_dir_name(step)}")
    return sorted((p for p in found if p.is_dir()), key=lambda p: p.stat().st_mtime)


def missing_step(path: Path) -> str | None:
    """The sentence for ``RUN/checkpoints/step-N`` that is not there while its run is: set
    aside by a resume from an earlier checkpoint (named), past the run's newest checkpoint,
    or pruned (``checkpoint.keep_last``), naming the steps kept; for ``RUN/checkpoints/best``
    of a run that keeps none; else None."""
    path = Path(path)
    if path.name == BEST and path.parent.name == CHECKPOINTS_DIR and path.parent.is_dir() \
            and not path.exists():  # an export or --base of RUN/checkpoints/best
        why = ("has no best checkpoint yet (none was validated at a checkpoint)"
               if run_setting(path.parent.parent, "checkpoint", "keep_best") is True else
               "keeps no best checkpoint (that takes checkpoint.keep_best = true with a "
               "[validation] section)")
        return (f"{str(path)!r} is not there: its run {why}; pass the run folder for its "
                "latest, or one of its step-N folders.")
    if path.exists() or not STEP_RE.fullmatch(path.name) or path.parent.name != CHECKPOINTS_DIR \
            or not path.parent.is_dir():
        return None
    step, steps = step_of(path), steps_in(path.parent)
    aside = set_aside_copies(path.parent, step)
    if aside:
        more = len(aside) - 1
        others = f" (and {more} older branch{'es' * (more > 1)})" if more else ""
        return (f"{str(path)!r} is not there: its run resumed from an earlier checkpoint, "
                f"which set this step of the branch before aside in {str(aside[-1])!r}"
                f"{others}; pass that folder.")
    kept = [step_dir_name(s) for s in steps]
    shown = ", ".join(kept[-4:]) if kept else "none"
    if not steps:
        return (f"{str(path)!r} is not there: its run has no checkpoint yet; train it first "
                "(checkpoint.every), or pass another model.")
    if step > steps[-1]:
        return (f"{str(path)!r} is not there: its run's newest checkpoint is {kept[-1]} (it "
                f"keeps {shown}); pass one of those, or the run folder for its latest.")
    keep = run_setting(path.parent.parent, "checkpoint", "keep_last")
    why = ("no checkpoint was written at that step" if isinstance(keep, int)
           and (keep == 0 or len(kept) < keep) else "checkpoint.keep_last prunes older steps")
    return (f"{str(path)!r} is not there: its run keeps {len(kept)} checkpoint"
            f"{'s' if len(kept) != 1 else ''} ({shown}; {why}); pass one of those, or the "
            "run folder for its latest.")


def followed_pointer(path: Path) -> Path:
    """A run's pointer file (``RUN/checkpoints/latest`` or ``best``) as the step folder it
    names, so a model spec or export may name the best checkpoint by it; any other path as it
    is. A pointer to a step that is gone is one sentence."""
    if path.name not in (LATEST, BEST) or path.parent.name != CHECKPOINTS_DIR \
            or not path.is_file():
        return path
    step = read_pointer(path.parent, path.name)
    if step is None:
        from .errors import GlidectlError

        named = path.read_text(encoding="utf-8", errors="replace").strip()[:60]
        raise GlidectlError(f"{str(path)!r} names the checkpoint {named!r}, which is not in "
                            f"{str(path.parent)!r} (pruned, or never finished); pass one of "
                            "its step-N folders.")
    return step


def latest_step_dir(checkpoints: Path) -> Path | None:
    """The step folder ``latest`` names, else the highest complete step, else None."""
    found = read_pointer(checkpoints, LATEST)
    if found is not None:
        return found
    steps = steps_in(checkpoints)
    return Path(checkpoints) / step_dir_name(steps[-1]) if steps else None


def latest_under(path: Path) -> Path | None:
    """The latest step folder of a run folder (``path/checkpoints``) or a checkpoints folder;
    a step folder is itself."""
    path = Path(path)
    if is_step_dir(path):
        return path
    for candidate in (path / CHECKPOINTS_DIR, path):
        if candidate.is_dir():
            found = latest_step_dir(candidate)
            if found is not None:
                return found
    return None


def step_weights(step_dir: Path, ema: bool | None = None) -> Path | None:
    """A step folder's weights file: EMA first (unless ``ema`` is False), else the raw one;
    ``ema=True`` wants the EMA file only."""
    names = {True: [EMA_FILE], False: [MODEL_FILE], None: [EMA_FILE, MODEL_FILE]}[ema]
    for name in names:
        if (Path(step_dir) / name).is_file():
            return Path(step_dir) / name
    return None


def step_adapter(step_dir: Path, ema: bool | None = None) -> Path | None:
    """A step folder's LoRA adapter folder, with the same EMA preference as weights."""
    names = {True: [EMA_ADAPTER_DIR], False: [ADAPTER_DIR],
             None: [EMA_ADAPTER_DIR, ADAPTER_DIR]}[ema]
    for name in names:
        if (Path(step_dir) / name / ADAPTER_CONFIG).is_file():
            return Path(step_dir) / name
    return None
