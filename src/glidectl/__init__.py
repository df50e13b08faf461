"""glidectl: finetune and sample OpenAI's GLIDE text-to-image diffusion models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
