"""The learning rate at a step: linear warm-up from lr_init to lr_peak, then cosine decay to lr_end at the
run's last step (reference/pac.md). A pure function, so the schedule is tested by table and resuming needs
nothing but the step count."""

from __future__ import annotations

import math


def learning_rate(step: int, steps: int, warmup: int, lr_init: float, lr_peak: float, lr_end: float) -> float:
    """Learning rate for optimiser step `step` (0-based) of a run of `steps`."""
    if step < warmup:
        return lr_init + (lr_peak - lr_init) * step / warmup
    span = max(1, steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return lr_end + 0.5 * (lr_peak - lr_end) * (1.0 + math.cos(math.pi * progress))
