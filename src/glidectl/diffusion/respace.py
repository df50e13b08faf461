"""Which of the original timesteps a shortened sampling run keeps (GLIDE's section strings)."""

from __future__ import annotations

import numpy as np

from ..errors import GlidectlError
from ..ranges import plain_number


def _bad(section: str, why: str) -> GlidectlError:
    return GlidectlError(
        f"Bad timestep respacing {section!r}: {why}; use 'N', comma-separated counts like "
        "'10,10,10', 'ddimN' or 'fast27'."
    )


def space_timesteps(num_timesteps: int, section: str) -> set[int]:
    """Original timesteps kept by ``section``.

    - ``"N"`` / ``"a,b,c"``: split 0..T-1 into equal sections (the first ``T % len`` one step
      longer) and take the given count from each, evenly strided, rounded half-to-even.
    - ``"ddimN"``: ``range(0, T, s)`` for the smallest stride s giving exactly N steps.
    - ``"fast27"``: ``"10,10,3,2,2"`` with T-1 swapped for T-3 (GLIDE's fast schedule).
    """
    section = section.strip()
    if section.startswith("ddim"):
        if not plain_number(section[len("ddim") :], int):  # not int()'s 1_0 or ٣
            raise _bad(section, "the count after 'ddim' is not an integer")
        desired = int(section[len("ddim") :])
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == desired:
                return set(range(0, num_timesteps, stride))
        raise _bad(section, f"no integer stride gives exactly {desired} of {num_timesteps} steps")
    if section == "fast27":
        steps = space_timesteps(num_timesteps, "10,10,3,2,2")
        steps.discard(num_timesteps - 1)
        steps.add(num_timesteps - 3)
        return steps
    if not all(plain_number(part, int) for part in section.split(",")):  # not 1_0 or ٣
        raise _bad(section, "not a list of integers")
    counts = [int(part) for part in section.split(",")]
    if any(c < 1 for c in counts):
        raise _bad(section, "every count must be at least 1")
    size_per, extra = divmod(num_timesteps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise _bad(section, f"section {i} has only {size} steps, fewer than {count}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return set(kept)


def respaced_betas(
    alphas_cumprod: np.ndarray, timesteps: set[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Betas of the shortened chain over the kept ``timesteps`` (same ᾱ at each kept step),
    and the sorted timestep map (respaced index → original t)."""
    timestep_map = np.array(sorted(timesteps), dtype=np.int64)
    kept = alphas_cumprod[timestep_map]
    previous = np.concatenate([[1.0], kept[:-1]])
    return 1.0 - kept / previous, timestep_map
