"""ASHA: stop weak trials early. Its rungs sit after the longest warmup the space allows."""

from __future__ import annotations

import math

REDUCTION_FACTOR = 3  # keep the top third at each rung
METRIC, MODE, TIME_ATTR = "val_score", "max", "step"  # full match, ties broken by char accuracy; time = the workers' step


def rungs(max_steps: int, eval_every: int, longest_warmup: int) -> list[int]:
    """Steps at which ASHA compares trials: grace * rf^k < max_steps.

    The first rung (grace period) is after the longest warmup in the space (comparing trials that
    are still warming up rewards short warmups, not good ones) and at least max_steps / rf (earlier,
    full match is ~0 for every trial and the cut is a coin toss: seen on the CPU preset at step 100),
    rounded up to an evaluation step so a report lands exactly on it.
    """
    grace = max(eval_every, longest_warmup, max_steps // REDUCTION_FACTOR)
    grace = math.ceil(grace / eval_every) * eval_every
    out, r = [], grace
    while r < max_steps:
        out.append(r)
        r *= REDUCTION_FACTOR
    return out


def build_asha(max_steps: int, grace: int):
    from ray.tune.schedulers import AsyncHyperBandScheduler

    return AsyncHyperBandScheduler(time_attr=TIME_ATTR, metric=METRIC, mode=MODE, max_t=max_steps,
                                   grace_period=grace, reduction_factor=REDUCTION_FACTOR, brackets=1)


def rung_plan(max_steps: int, eval_every: int, longest_warmup: int, num_samples: int) -> str:
    steps = rungs(max_steps, eval_every, longest_warmup)
    if not steps:
        return f"ASHA: no rung before max_steps={max_steps}; every trial runs to the end"
    parts = [f"step {s}: ~{max(1, round(num_samples / REDUCTION_FACTOR ** (k + 1)))} of {num_samples} continue"
             for k, s in enumerate(steps)]
    return f"ASHA rungs (top 1/{REDUCTION_FACTOR} continue, max {max_steps} steps): " + "; ".join(parts)
