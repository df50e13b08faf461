"""Weights & Biases logging: the config, scalars against the global step, preview images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import GlidectlError


class WandbLogger:
    """A thin wrapper that only the main process creates, when log.wandb_project is set."""

    def __init__(
        self, project: str, entity: str, mode: str, name: str, config: dict[str, Any],
        run_dir: Path, resume_id: str | None = None,
    ):
        try:
            import wandb
        except ImportError as exc:  # pragma: no cover - wandb is a dependency
            raise GlidectlError(
                "log.wandb_project is set but wandb is not installed; pip install wandb."
            ) from exc
        self._wandb = wandb
        try:
            self.run = wandb.init(
                project=project, entity=entity or None, mode=mode, name=name, config=config,
                dir=str(run_dir), id=resume_id, resume="allow" if resume_id else None,
            )
        except Exception as exc:  # wandb raises many kinds (auth, network, usage)
            raise GlidectlError(
                f"Could not start W&B run in project {project!r}: {exc}; run `wandb login`, "
                "set log.wandb_mode = \"offline\" or clear log.wandb_project."
            ) from None
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    @property
    def id(self) -> str:
        return self.run.id

    def log_scalars(self, record: dict[str, Any]) -> None:
        data = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        self.run.log(data)

    def log_images(self, step: int, key: str, images: list[Any], captions: list[str]) -> None:
        """``images``: PIL images or paths; one W&B image per caption."""
        pairs = zip(images, captions, strict=True)
        wimages = [self._wandb.Image(im, caption=c) for im, c in pairs]
        self.run.log({"step": step, key: wimages})

    def finish(self) -> None:
        self.run.finish()
