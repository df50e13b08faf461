"""Experiment trackers through accelerate (``init_trackers``/``log``): W&B, TensorBoard and
accelerate's others, writing inside the run folder (``runs/<name>/trackers/``).

``log.trackers`` names them; the older ``log.wandb_project`` still switches W&B on. Only the
main process creates trackers (accelerate's own rule); scalars go to every tracker, preview
grids go as images to every tracker that takes images.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .. import runs
from ..config import GlideConfig, LogConfig, to_dict, wandb_init_mode
from ..config_schema import check_trackers
from ..errors import GlidectlError, write_error

# characters W&B refuses in a project name (its own check, at wandb.init)
WANDB_FORBIDDEN = "/\\#?%:"
WANDB_PROJECT_MAX = 128  # the longest project name W&B takes (its own check too)


def tracker_names(log: LogConfig) -> list[str]:
    """The trackers to start, checked: known names, installed packages."""
    names = list(dict.fromkeys(str(n) for n in log.trackers))
    check_trackers(names)
    if log.wandb_project and "wandb" not in names:
        names.append("wandb")  # the older spelling: a W&B project switches W&B on
    project = log.wandb_project or log.project
    key = "log.wandb_project" if log.wandb_project else "log.project"
    bad = sorted({c for c in str(project) if c in WANDB_FORBIDDEN})
    if "wandb" in names and bad:  # said before the run is built, as W&B would at its start
        raise GlidectlError(f"{key} {project!r} holds {', '.join(map(repr, bad))}, which W&B "
                            f"refuses in a project name; pick a name without "
                            f"{WANDB_FORBIDDEN}.")
    if "wandb" in names and len(str(project)) > WANDB_PROJECT_MAX:
        raise GlidectlError(f"{key} is {len(str(project))} characters long, and W&B refuses a "
                            f"project name over {WANDB_PROJECT_MAX}; pick a shorter one.")
    if names:
        from accelerate.tracking import get_available_trackers

        available = {str(t) for t in get_available_trackers()}
        missing = [n for n in names if n not in available]
        listed = [n for n in missing if n in log.trackers]
        if listed:
            raise GlidectlError(
                f"log.trackers names {', '.join(listed)}, which is not installed; "
                f"pip install {' '.join(listed)} or remove it from log.trackers."
            )
        if missing:  # wandb, turned on by log.wandb_project alone
            raise GlidectlError(
                f"log.wandb_project {log.wandb_project!r} turns on the wandb tracker, which is "
                "not installed; pip install wandb or clear log.wandb_project."
            )
    return names


def flat_config(cfg: GlideConfig) -> dict[str, Any]:
    """``section.key`` → value, with lists as text (TensorBoard's hparams take scalars only)."""
    out: dict[str, Any] = {}
    for section, values in to_dict(cfg).items():
        for key, value in values.items():
            out[f"{section}.{key}"] = str(value) if isinstance(value, (list, dict)) else value
    return out


class Trackers:
    """The run's trackers (none when ``log.trackers`` is empty); main process only."""

    def __init__(self, accelerator: Any, cfg: GlideConfig, run: runs.RunDir,
                 resume_ids: dict[str, str] | None = None,
                 say: Callable[[str], None] = print, step: int = 0):
        self.acc = accelerator
        self.names = tracker_names(cfg.log)
        self.ids: dict[str, str] = dict(resume_ids or {})
        self.say = say  # a tracker that fails is said once, then left out
        if not self.names or not accelerator.is_main_process:
            self.names = []
            return
        from accelerate.tracking import filter_trackers

        try:
            runs.make_folder(run.trackers)
        except OSError as exc:  # a read-only run folder, a full disk
            raise write_error(run.trackers, exc) from None
        accelerator.project_configuration.logging_dir = str(run.trackers)
        accelerator.log_with = filter_trackers(self.names, str(run.trackers))
        log = cfg.log
        wandb_id = self.ids.get("wandb")
        init_kwargs = {"wandb": {
            "entity": log.wandb_entity or None, "name": run.name,
            "mode": wandb_init_mode(log.wandb_mode),
            "dir": str(run.trackers), "id": wandb_id, "resume": "allow" if wandb_id else None,
        }}
        # TensorBoard drops what the folder holds from the first step this run logs: past a
        # resume's checkpoint (a branch, a kill's), or all of a first try killed before its
        # first checkpoint, which starts over in the same folder from step 0's preview
        init_kwargs["tensorboard"] = {"purge_step": step + 1 if step > 0 else 0}
        project = log.wandb_project or log.project
        try:
            accelerator.init_trackers(project, config=flat_config(cfg), init_kwargs=init_kwargs)
        except Exception as exc:  # trackers raise many kinds (auth, network, usage)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            online = "wandb" in self.names and wandb_init_mode(log.wandb_mode) in (None, "online") \
                and os.environ.get("WANDB_MODE", "").lower() not in ("offline", "disabled")
            fix = ("for W&B run `wandb login` or set log.wandb_mode = \"offline\" (or "
                   "WANDB_MODE=offline), or change log.trackers" if online else
                   "check the [log] settings, or change log.trackers")
            raise GlidectlError(
                f"Could not start the trackers {', '.join(self.names)}: {first.rstrip('.')}; "
                f"{fix}.") from None
        if "wandb" in self.names:
            self.ids["wandb"] = accelerator.get_tracker("wandb", unwrap=True).id

    def log(self, record: dict[str, Any], step: int) -> None:
        """The numbers of a metrics record, at ``step``."""
        values = {k: v for k, v in record.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        self._each(step, lambda tracker: tracker.log(values, step=step))

    def log_image(self, key: str, image: Any, step: int, caption: str = "") -> None:
        """One PIL image (a preview grid) to every tracker that takes images."""
        if not self.names:
            return
        import numpy as np

        array = np.asarray(image.convert("RGB"))

        def one(tracker: Any) -> None:
            if tracker.name == "tensorboard":
                tracker.log_images({key: array[None]}, step=step, dataformats="NHWC")
            elif tracker.name == "wandb":
                import wandb

                tracker.run.log({key: wandb.Image(image, caption=caption[:500])}, step=step)
            elif hasattr(tracker, "log_images"):
                tracker.log_images({key: [array]}, step=step)

        self._each(step, one)

    def finish(self) -> None:
        """Close every tracker. Not ``accelerator.end_training()``: that also destroys the
        process group, on the main process only, while the other processes still meet it
        at the run's last barrier."""
        self._each(None, lambda tracker: tracker.finish())

    def _each(self, step: int | None, call: Callable[[Any], None]) -> None:
        """``call`` on every tracker still working. A tracker is a side output: one that
        raises (its service gone, a full disk) is said once and left out, and training,
        metrics.jsonl, checkpoints and the other trackers go on."""
        for tracker in list(self.acc.trackers) if self.names else []:
            try:
                call(tracker)
            except Exception as exc:  # trackers raise many kinds (network, IPC, disk)
                from ..errors import one_line

                self.acc.trackers.remove(tracker)
                self.names = [n for n in self.names if n != tracker.name]
                when = f"at step {step}" if step is not None else "while closing"
                why = one_line(str(exc))[:200] or type(exc).__name__
                self.say(f"Warning: the {tracker.name} tracker failed {when} ({why}); the run "
                         "goes on without it (metrics.jsonl keeps every number).")
