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


def plot_schedule(out, max_steps: int, curves: dict[str, dict]) -> None:
    """One PNG with the LR curve of each named setting dict (keys as in lr_at)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(0, max_steps + 1, max(1, max_steps // 500))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, kw in curves.items():
        ax.plot(list(steps), [lr_at(s, **kw) for s in steps], label=name)
    ax.set(xlabel="step", ylabel="learning rate", yscale="log", title="LR schedule")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
