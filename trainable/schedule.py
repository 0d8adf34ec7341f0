"""The learning-rate schedule: a pure function of the step (nanoGPT style)."""

from __future__ import annotations

import math


def cycle_at(step: int, warmup_steps: int, cosine_period: int, cosine_mult: float = 1.0) -> tuple[int, int]:
    """(steps into the current cosine cycle, that cycle's length) at a step past warmup.
    Cycle k lasts cosine_period * cosine_mult**k steps (mult 1: the original fixed period; 2: SGDR's doubling)."""
    t, length = step - warmup_steps, cosine_period
    if cosine_mult == 1:
        return t % length, length
    while t >= length:
        t, length = t - length, max(1, round(length * cosine_mult))
    return t, length


def lr_at(step: int, peak_lr: float, min_lr: float, warmup_steps: int, cosine_period: int, cosine_mult: float = 1.0) -> float:
    # 1) linear warmup from min_lr (step 0) to peak_lr (step warmup_steps)
    if step < warmup_steps:
        return min_lr + (peak_lr - min_lr) * step / warmup_steps
    # 2) cosine decay from peak_lr to min_lr over the current cycle ...
    t, length = cycle_at(step, warmup_steps, cosine_period, cosine_mult)
    # 3) ... and a warm restart to peak_lr when it ends (each cycle cosine_mult times the one before)
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * t / length))


def cycle_end(steps: int, warmup_steps: int, cosine_period: int, cosine_mult: float = 1.0) -> int:
    """The first step >= `steps` where a cosine cycle ends (at the LR floor), and at least one whole cycle: a run cut
    just after a warm restart would end at the peak LR, with its score in the dip."""
    end, length = warmup_steps + cosine_period, cosine_period
    while end < steps:
        length = max(1, round(length * cosine_mult))
        end += length
    return end
