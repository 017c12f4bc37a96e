"""Learning-rate schedule as a pure function of the epoch (timm CosineLRScheduler, as PromptPAR steps it)."""

from __future__ import annotations

import math


def lr_at(
    epoch: int, base: float, total: int, warmup: int = 0, warmup_init: float = 0.01, floor: float = 0.002
) -> float:
    """LR for `epoch` (1-based, stepped at the start of each epoch like the reference).

    Warm-up: warmup_init*base + epoch*(base - warmup_init*base)/warmup while epoch < warmup; then cosine over
    the absolute epoch: floor*base + (base - floor*base) * (1 + cos(pi * epoch / total)) / 2.
    """
    if epoch < warmup:
        start = warmup_init * base
        return start + epoch * (base - start) / warmup
    lo = floor * base
    return lo + 0.5 * (base - lo) * (1 + math.cos(math.pi * min(epoch, total) / max(total, 1)))
