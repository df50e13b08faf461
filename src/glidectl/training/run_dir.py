"""A run folder before training: its name, its lock, the checks made and what a kill left
tidied away (the layout: :mod:`glidectl.runs`)."""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
from contextlib import suppress
from pathlib import Path

from .. import runs
from ..atomic import HeldLock, lock_file, probe_writable, remove_stale_temps
from ..config import GlideConfig, is_saved_config
from ..errors import GlidectlError
from ..out_dir import broken_link
from . import heartbeats
from .checkpointing import CheckpointManager, resolve_checkpoint, set_aside_after

# before the model is built; then what its checkpoint needs (Trainer._setup_model)
MIN_FREE_BYTES = 16 * 1024 * 1024


def next_run_name(output_dir: Path, prefix: str = "run") -> str:
    """The first free ``<prefix>-NNN`` under ``output_dir``."""
    taken = set()
    if output_dir.is_dir():
        for child in output_dir.iterdir():
            match = re.fullmatch(rf"{re.escape(prefix)}-(\d+)", child.name)
            if match:
                taken.add(int(match.group(1)))
    n = 1
    while n in taken:
        n += 1
    return f"{prefix}-{n:03d}"


def check_writable(directory: Path, needed_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise GlidectlError unless ``directory`` can be created, written and has free space."""
    if (link := broken_link(directory)) is not None:
        raise GlidectlError(f"Output folder {str(directory)!r} {link}; remove the link or "
                            "point it at a folder.")
    probe_parent = directory
    while not probe_parent.exists():
        if probe_parent.parent == probe_parent:
            break
        probe_parent = probe_parent.parent
    if probe_parent.exists() and not probe_parent.is_dir():
        raise GlidectlError(
            f"Output path {str(probe_parent)!r} is a file, not a folder; "
            "choose another --output-dir."
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe_writable(directory, b"ok")
    except OSError as exc:
        raise GlidectlError(
            f"Output folder {str(directory)!r} is not writable ({exc.strerror or exc}); "
            "choose another --output-dir or fix its permissions."
        ) from None
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise GlidectlError(
            # free rounded down, the need up: "only 16 MiB free but … at least 16 MiB" was
            # 15.9 against 16
            f"Output folder {str(directory)!r} has only {free // 2**20} MiB free but "
            + ("a run needs at least" if needed_bytes == MIN_FREE_BYTES
               else "a checkpoint needs about")
            + f" {-(-needed_bytes // 2**20)} MiB; free space or choose another --output-dir."
        )


def lock_run(run: runs.RunDir) -> HeldLock | None:
    """Hold an exclusive lock on the run folder until the returned lock is closed (or the
    process dies): a second process training the same run, or a second Trainer of this one
    while the first trains, stops here instead of both writing (and one truncating) its
    files; a Trainer of this one set up and not run (a notebook cell run again) is taken
    over (:meth:`RunClaim.begin` then refuses it)."""
    return lock_file(run.lock, (
        f"Run {str(run.root)!r} is being trained by another glidectl process (or another "
        "Trainer of this one); wait for it to finish (or stop it), or pick another --name."),
        in_use=False)


def pick_run(cfg: GlideConfig, resume: str | None) -> runs.RunDir:
    """The run folder to train, from the config and --resume, read from names alone: the
    checkpoint to resume is resolved by :func:`resume_point` once the run is locked (it may
    put back a step folder the run's own trainer has set aside for a moment). A ``~`` in
    ``train.output_dir`` is the home folder, as in ``data.source`` and ``model.init``."""
    output = Path(cfg.train.output_dir).expanduser()
    if resume and resume != runs.LATEST:
        return run_of_resume(resume)
    check_name(cfg.train.name)
    if resume == runs.LATEST:
        if cfg.train.name:
            return runs.RunDir(output / cfg.train.name)
        found = newest_checkpointed_run(output)
        if found is None:
            raise GlidectlError(
                f"--resume latest: no run with checkpoints under {str(output)!r}; "
                "pass --name or a checkpoint path."
            )
        return runs.RunDir(found)
    return runs.RunDir(output / (cfg.train.name or next_run_name(output)))


def newest_checkpointed_run(output: Path) -> Path | None:
    """The run folder in ``output`` whose last checkpoint was written last: by its
    ``checkpoints/latest`` pointer, else (a pointer removed by hand) its newest step
    folder, so such a run is neither missed nor passed over for an older one."""
    newest: tuple[float, Path] | None = None
    for child in sorted(output.iterdir()) if output.is_dir() else []:
        checkpoints = child / runs.CHECKPOINTS_DIR
        step = runs.latest_step_dir(checkpoints) \
            if child.is_dir() and not child.name.startswith(".") else None
        if step is None:
            continue
        pointer = checkpoints / runs.LATEST
        written = (pointer if pointer.is_file() else step).stat().st_mtime
        if newest is None or written > newest[0]:
            newest = (written, child)
    return None if newest is None else newest[1]


def trained_run_config(cfg: GlideConfig, root: Path,
                       resume: str | None) -> tuple[GlideConfig, str | None]:
    """``cfg`` naming the run folder it trains, and a note when it named another: a --resume
    PATH trains that path's run whatever train.name says, so its config.toml (and a later
    ``--resume latest`` from it) must name that run."""
    if not resume or resume == runs.LATEST:
        return cfg, None
    named = Path(cfg.train.output_dir).expanduser() / cfg.train.name
    if cfg.train.name and named.resolve() == root.resolve():
        return cfg, None
    trained = copy.deepcopy(cfg)
    trained.train.output_dir, trained.train.name = str(root.parent), root.name
    if not cfg.train.name:
        return trained, None
    return trained, (f"Note: --resume trains the run in {str(root)!r}; train.name "
                     f"{cfg.train.name!r} in {cfg.train.output_dir!r} names another folder, "
                     "so the run's config.toml records its own.")


# The keys of a run's config.toml that name files or folders (relative: to where it began).
RUN_PATH_KEYS = ("model.init", "model.vocab_dir", "data.source", "data.reg_source",
                 "validation.source", "validation.fid_weights", "preview.prompt_file",
                 "preview.low_res")


def check_beside_config(cfg: GlideConfig, config: Path) -> None:
    """One sentence for a relative path of ``cfg`` (a :data:`RUN_PATH_KEYS` key but
    ``model.init``, whose names ``scratch`` and ``base`` are no paths) that does not exist
    from the current folder, which relative paths are read from, when one of that name
    exists beside the ``config`` file (a config run from another folder)."""
    folder = Path(config).expanduser().parent
    if folder.resolve() == Path.cwd().resolve():
        return
    for key in (k for k in RUN_PATH_KEYS if k != "model.init"):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        for text in value if isinstance(value, list) else [value]:
            if not isinstance(text, str) or not text.strip():
                continue
            path = Path(text).expanduser()
            if path.is_absolute() or path.exists() or not (folder / path).exists():
                continue
            raise GlidectlError(
                f"{key} {text!r} does not exist relative to the current folder "
                f"({os.getcwd()}), which relative paths are read from, but "
                f"{str(folder / path)!r} beside the config file does; write that path (or an "
                "absolute one), or run from the config's folder.")


def started_in(root: Path) -> Path | None:
    """The folder the run in ``root`` was started from, told by its config.toml's relative
    ``train.output_dir``/``train.name`` (None when they do not lead to ``root``)."""
    output, name = runs.run_setting(root, "train", "output_dir"), \
        runs.run_setting(root, "train", "name")
    if not (isinstance(output, str) and isinstance(name, str) and name):
        return None
    rel, here = Path(output) / name, Path(root).resolve()
    if Path(output).expanduser().is_absolute() or ".." in rel.parts \
            or here.parts[-len(rel.parts):] != rel.parts:
        return None
    return here.parents[len(rel.parts) - 1]


def run_paths(root: Path) -> list[str]:
    """``--set`` items naming, by absolute paths, the files and folders that the relative
    paths of the run's config.toml name from the folder it was started in, when that is not
    the current one: ``--resume RUN`` from elsewhere reads the data it trained on (not
    whatever the same relative path holds here, nor nothing)."""
    from ..config import override

    start = started_in(root)
    if start is None or start == Path.cwd().resolve():
        return []
    items = []
    for key in RUN_PATH_KEYS:
        value = runs.run_setting(root, *key.split("."))
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and v for v in values):
            continue
        there = [v if Path(v).expanduser().is_absolute() or not (start / v).exists()
                 else str(start / v) for v in values]
        if there != values:
            items.append(override(key, there if isinstance(value, list) else there[0]))
    return items


def check_resume_seed(cfg: GlideConfig, root: Path) -> None:
    """One sentence when a resume sets another train.seed than the run trained with: the
    checkpoint's data cursor points into that seed's shuffle, and its noise follows it (a
    new seed re-read and skipped images of the epoch, and config.toml named a seed that
    made neither part)."""
    trained = runs.run_setting(root, "train", "seed")
    if isinstance(trained, int) and not isinstance(trained, bool) and \
            trained != cfg.train.seed:
        raise GlidectlError(
            f"Cannot resume {str(root)!r} with train.seed = {cfg.train.seed}: it trained with "
            f"train.seed = {trained}, whose data order, noise and (from scratch) network the "
            f"checkpoint goes on with; resume with train.seed = {trained}, or start a new run.")


def check_resume_init(cfg: GlideConfig, root: Path) -> None:
    """One sentence when a full run's resume sets another model.init than the run began
    from: the checkpoint's weights replace the whole network, so the new model.init would
    only be recorded in config.toml (and loaded, or downloaded, for nothing)."""
    began, given = runs.run_setting(root, "model", "init"), cfg.model.init
    if not isinstance(began, str) or _same_init(given, began, started_in(root)):
        return
    raise GlidectlError(
        f"Cannot resume {str(root)!r} with model.init = {given!r}: it began from model.init "
        f"= {began!r}, and a resume goes on with its checkpoint's weights, not model.init's; "
        f"resume with model.init = {began!r}, or start a new run (another train.name) to "
        f"train from {given!r}.")


def check_resume_trainable(cfg: GlideConfig, root: Path, step_dir: Path) -> None:
    """One sentence when a full run's resume sets another train.trainable than it trained:
    the checkpoint's optimizer state holds the moments of the parts that trained, which fit
    no other set (it said "loaded state dict contains a parameter group that doesn't match
    the size of optimizer's group")."""
    trained, given = runs.run_setting(root, "train", "trainable"), cfg.train.trainable
    if not isinstance(trained, str) or trained == given:
        return
    raise GlidectlError(
        f"Cannot resume {str(root)!r} with train.trainable = {given!r}: it trained "
        f"train.trainable = {trained!r}, whose optimizer state the checkpoint holds; resume "
        f"with train.trainable = {trained!r}, or start a new run (another train.name) with "
        f"model.init = {str(step_dir)!r} to train {_PARTS.get(given, given)}.")


_PARTS = {"all": "the whole network", "unet": "the UNet alone", "text": "the text encoder alone"}


def _same_init(given: str, began: str, start: Path | None) -> bool:
    """Whether model.init ``given`` (read from here) names what ``began`` named when the
    run began in ``start`` (None: unknown, taken as here): the same text, or one path."""
    if given == began:
        return True
    if "scratch" in (given, began):
        return False
    then = Path(began).expanduser()
    return Path(given).expanduser().resolve() == (
        then if then.is_absolute() else (start or Path.cwd()) / then).resolve()


def check_name(name: str) -> None:
    """One sentence unless ``name`` is a folder inside ``train.output_dir`` (sub-folders
    allowed): an absolute path or a ".." would put the run's files somewhere else."""
    if name and (Path(name).is_absolute() or Path(name).drive or name != name.strip()
                 or any(p in ("", ".", "..") for p in re.split(r"[/\\]", name))):
        raise GlidectlError(
            f"train.name {name!r} is not a folder name inside train.output_dir; give a plain "
            "name such as 'quickstart' (and --output-dir for where runs go).")


def run_of_resume(resume: str) -> runs.RunDir:
    """The run of a --resume PATH (a run, its checkpoints/ or a step folder), from its name
    alone: nothing is moved or read before the run's lock is held."""
    path = Path(resume).resolve()
    if path.exists() and not path.is_dir():  # a weights or state file: its folder was meant
        step = next((p for p in path.parents if runs.is_step_dir(p)), None)
        instead = (f"its checkpoint folder {str(step)!r}" if step is not None
                   else "a run folder or one of its checkpoints/step-NNNNNN folders")
        what = "a file" if path.is_file() else "not a folder"  # a FIFO, /dev/null
        raise GlidectlError(f"--resume {resume!r} is {what}; pass {instead}, or 'latest'.")
    _refuse_abandoned(resume, path)
    if path.name == runs.CHECKPOINTS_DIR:
        return runs.RunDir(path.parent)
    if runs.STEP_RE.fullmatch(path.name):
        if path.parent.name != runs.CHECKPOINTS_DIR and not runs.set_aside(path):
            # its run would be the folder two up: a home or project folder made a run
            if not path.exists():
                raise GlidectlError(f"--resume {resume!r} does not exist; pass 'latest', a run "
                                    "folder or one of its checkpoints/step-NNNNNN folders.")
            raise GlidectlError(
                f"--resume {resume!r} is a step folder outside a run's checkpoints/ folder, "
                f"so it has no run to go on in (training would make {str(path.parents[1])!r} "
                f"one); put it in RUN/checkpoints/ and resume that, or start a new run from "
                f"its weights with --set model.init={str(path)!r}.")
        return runs.RunDir(runs.run_of_step_dir(path))
    return runs.RunDir(path)


def resume_point(run: runs.RunDir, resume: str | None) -> Path | None:
    """The checkpoint to resume (None: a new run, which must have none), run lock held."""
    if resume:
        step_dir = resolve_checkpoint(resume, run.checkpoints)
        _refuse_abandoned(resume, step_dir.resolve())
        return step_dir
    if runs.latest_step_dir(run.checkpoints) is not None:
        raise GlidectlError(
            f"Run {str(run.root)!r} already has checkpoints; pass --resume latest to go on, "
            "or pick another --name."
        )
    if run.config.is_file() and not is_saved_config(run.config):
        raise GlidectlError(
            f"Run folder {str(run.root)!r} holds a config.toml glidectl did not write, which "
            "the run would replace with its resolved config; move it out of the run folder "
            "(and pass it there to --config), or pick another --name."
        )
    return None


def _refuse_abandoned(resume: str, step_dir: Path) -> None:
    """A step folder a resume from an earlier checkpoint set aside is not resumed (a path
    that is not there is left to :func:`resolve_checkpoint` to say so)."""
    if step_dir.is_dir() and step_dir.parent.name.startswith(runs.ABANDONED):
        raise GlidectlError(
            f"--resume {resume!r}: this checkpoint was set aside when its run resumed from "
            "an earlier one; start a new run from its weights with --set "
            f"model.init={str(step_dir)!r}, or move it back into checkpoints/ (and the "
            "step folders past its branch point out) to resume it.")


class RunClaim:
    """The run folder this process trains, locked (main process), and the folders it
    created for it, so a failed start can leave nothing new behind."""

    def __init__(self) -> None:
        self.created: list[Path] = []
        self._lock: HeldLock | None = None
        self._relock = False  # released at a run's end: run() again locks it again
        self._added: list[Path] = []  # the lock file and folders made in one that was there

    def take(self, cfg: GlideConfig, resume: str | None) -> tuple[runs.RunDir, Path | None]:
        """Pick, check and lock the run folder: (run, checkpoint to resume or None)."""
        run = pick_run(cfg, resume)
        unnamed = not (resume or cfg.train.name)
        for _ in range(100):
            self.created = [p for p in (run.root.parent, run.root) if not p.exists()][:1]
            check_writable(run.root)
            new_lock = [] if self.created or run.lock.exists() else [run.lock]
            try:
                self._lock = lock_run(run)
                self._added = new_lock
                break
            except GlidectlError:
                self.created = []  # another process's run: not ours to remove
                if not unnamed:
                    raise
            # started at the same instant as another unnamed run: take the next name
            run = runs.RunDir(run.root.parent / next_run_name(run.root.parent))
        else:  # never train a folder without its lock
            raise GlidectlError(
                f"No free run folder in {str(run.root.parent)!r}: 100 names in a row are being "
                "trained by other processes; set train.name (or --set train.name=NAME).")
        return run, resume_point(run, resume)

    def create(self, run: runs.RunDir) -> None:
        """Make the run's folders (main process), noting those new in a folder that was there."""
        if not self.created:
            self._added += [p for p in (run.previews, run.checkpoints) if not p.exists()]
        run.create()

    @property
    def superseded(self) -> bool:
        """A later Trainer of this process took the run folder over: it is that one's."""
        return self._lock is not None and self._lock.superseded

    def confirm(self) -> None:
        """The Trainer is set up: a lock its claim took over from another of this process
        stays its own (a failed set-up gives it back)."""
        if self._lock is not None:
            self._lock.confirm()

    def begin(self, root: Path) -> None:
        """The run's training starts (main process): its claim is in use from here on, unless
        a later Trainer of this process has taken it over; a run that ran to its end is
        locked again before it goes on."""
        if self._relock:
            self._lock, self._relock = lock_run(runs.RunDir(root)), False
        if self._lock is None:
            return
        if self.superseded:
            raise GlidectlError(f"A later Trainer of this process claimed run {str(root)!r} "
                                "after this one was set up; run that one (or set this one "
                                "up again).")
        self._lock.in_use = True

    def pause(self) -> None:
        """A run stopped before its end (``run(until=...)``, Ctrl-C): it keeps the folder,
        which a later Trainer of this process may take over until it runs again."""
        if self._lock is not None:
            self._lock.in_use = False

    def release(self) -> None:
        """Let another process train the run folder."""
        if self._lock is not None:
            self._relock = True
            self._lock.close()
            self._lock = None

    def drop_untrained(self, run: runs.RunDir) -> None:
        """A new run that stopped before its first step (its data gave no batch): its folder
        goes, as a failed start's does, so nothing names a run that never trained; a folder
        above it that this claim made goes too when nothing else is in it."""
        if not self.created or runs.latest_step_dir(run.checkpoints) is not None:
            return
        shutil.rmtree(run.root, ignore_errors=True)
        for folder in self.created:
            if folder != run.root:
                with suppress(OSError):  # another run's folder meanwhile: kept
                    folder.rmdir()
        self.created = []

    def undo(self) -> None:
        """A start that failed: the folders it created (nothing half-written) go, the lock too
        (and its file, made in a folder that was there: one --resume took for a run)."""
        for folder in self.created:
            shutil.rmtree(folder, ignore_errors=True)
        for path in reversed(self._added):  # folders (if empty), then the lock file, still held
            with suppress(OSError):
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink()
        self._added = []
        self.release()


def tidy_run(run: runs.RunDir, checkpoints: CheckpointManager, step: int,
             best_step: int | None, *, beating: bool = False, idle: bool = False) -> str | None:
    """Make the run folder fit to train on from ``step`` (main process, run lock held);
    returns the line to show when later checkpoints were set aside.

    A resume from an earlier checkpoint sets the later ones aside, with their branch's
    later preview grids; ``best`` is pointed at
    ``best_step`` again (a kill between a best checkpoint and its pointer, or the later
    checkpoints set aside, would leave it naming another step, or none, and pruning would
    delete it); what a ``kill -9`` left goes: temp files of writers that are gone, the
    processes' heartbeats, and,
    through pruning, checkpoints past ``keep_last`` and temp step folders (a kill between
    the final checkpoint and its pruning left them, and a finished run writes no checkpoint
    again). ``beating``: this run's processes write their heartbeats there already (several
    processes: the setup emptied the folder), so it stays. ``idle``: a resume with nothing
    to train, which trains no branch: the later checkpoints, ``latest`` and ``best`` stay,
    and it prunes to the ``keep_last`` of the run's ``config.toml`` (which it does not
    rewrite), not to the command's."""
    moved = set_aside_after(run.checkpoints, step, run.previews) if step and not idle \
        else None
    if not idle and best_step is not None and run.step_dir(best_step).is_dir() \
            and checkpoints.best() != run.step_dir(best_step):
        checkpoints.mark_best(best_step)
    for folder in run.written_folders():
        remove_stale_temps(folder)
    if not beating:
        heartbeats.remove(run.heartbeats)  # a killed multi-process run's
    if idle:
        checkpoints = CheckpointManager(checkpoints.directory, _recorded_keep_last(run))
    checkpoints.prune()
    if moved is None:
        return None
    folder, names, previews = moved
    also = (f", and its later previews ({', '.join(previews)}) to "
            f"{str(run.previews / folder.name)!r}" if previews else "")
    return (f"Resumed from step {step}: the later checkpoints ({', '.join(names)}) are from "
            f"the run before this resume and were moved, whole, to {str(folder)!r}{also}.")


def _recorded_keep_last(run: runs.RunDir) -> int:
    """``checkpoint.keep_last`` as the run's ``config.toml`` records it (0, keep all, when
    it cannot be read or is no count)."""
    keep = runs.run_setting(run.root, "checkpoint", "keep_last")
    return keep if isinstance(keep, int) and not isinstance(keep, bool) and keep >= 0 else 0


def resume_hint(run: runs.RunDir) -> str:
    """Where ``run`` can be resumed from, as the end of an error sentence."""
    last = runs.latest_step_dir(run.checkpoints)
    if last is None:  # --resume would refuse the folder: there is nothing to resume
        return "it has no checkpoint yet: run the same command again to start it over"
    world, nodes = launched(), machines()
    on = f" on {nodes} machines ({world // nodes} each)" if nodes > 1 else ""
    under = f" under {world} processes{on}, as this run" if world > 1 else ""
    return (f"its last checkpoint is {str(last)!r}: resume with --resume "
            f"{shlex.quote(str(run.root))}{under}")


def _env_int(name: str, default: int = 1) -> int:
    """A positive count the launcher set in the environment, else ``default``."""
    try:
        return max(1, int(os.environ[name]))
    except (KeyError, ValueError):
        return default


def launched() -> int:
    """The processes of this run as its launcher (accelerate, torchrun) set them, else 1."""
    return _env_int("WORLD_SIZE")


def machines() -> int:
    """The machines (nodes) of this run: its processes over those on this machine
    (torchrun's LOCAL_WORLD_SIZE, which accelerate launch sets too), else 1."""
    world = launched()
    local = _env_int("LOCAL_WORLD_SIZE", world)  # not set (or odd): one machine
    return world // local if local <= world and world % local == 0 else 1


def relaunch(command: str, world: int, nodes: int = 1, host: str | None = None,
             port: str | None = None) -> str:
    """``command`` (``glidectl train --resume RUN``) launched as a run of ``world``
    processes on ``nodes`` machines was: accelerate launch's --num_processes counts the
    processes of all machines, and each machine is launched with its own --machine_rank
    (``host``/``port``: the rank-0 machine's, where known). ``--multi_gpu`` is named
    because accelerate starts one process without it on a machine with fewer than two GPUs
    (a CPU machine's gloo run), which a checkpoint of ``world`` processes refuses."""
    if world <= 1:
        return command
    if nodes <= 1:
        return (f"accelerate launch --multi_gpu --num_processes {world} -m {command} (or your "
                f"launcher, with {world} processes in all, as this run)")
    each, where = world // nodes, "" if host else ", HOST the address of rank 0"
    return (f"accelerate launch --multi_gpu --num_machines {nodes} --num_processes {world} "
            f"--machine_rank RANK --main_process_ip {host or 'HOST'}"
            f"{f' --main_process_port {port}' if port else ''} -m {command} on each of the "
            f"{nodes} machines (RANK 0 to {nodes - 1}{where}"
            f"; --num_processes counts all {world} processes, {each} a machine), or your "
            f"launcher with {nodes} machines of {each} processes, as this run")
