"""The learning-rate schedule: a pure function of the step (nanoGPT style)."""

from __future__ import annotations

import math


def lr_at(step: int, peak_lr: float, min_lr: float, warmup_steps: int, cosine_period: int) -> float:
    # 1) linear warmup from min_lr (step 0) to peak_lr (step warmup_steps)
    if step < warmup_steps:
        return min_lr + (peak_lr - min_lr) * step / warmup_steps
    # 2) cosine decay from peak_lr to min_lr over cosine_period steps
    t = (step - warmup_steps) % cosine_period
    # 3) ... and a warm restart to peak_lr every cosine_period steps after warmup
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * t / cosine_period))

