"""ASHA: stop weak trials early, fairly. Rungs start at a quarter of the run, after the longest warmup the
space allows; a trial is judged by its best evaluation so far, against trials of the same head only."""

from __future__ import annotations

import math

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from search import status
from trainable.metric import METRIC, MODE
from trainable.ray_internals import bracket

REDUCTION_FACTOR = 2  # keep the top half at each rung: with 3 rungs ~1/8 of the trials run to the end
# Evenly spaced from the first rung to max_steps (1200 steps: 300, 600, 900). 2 rungs (300, 800) were measured on the
# four bench sweeps at 4bc72fb (Intel box): best - recommended 0.0 / 0.0 / +2.3 / 0.0 points (demo, small, mixed,
# hard), against +0.2 / +5.0 / +4.4 / 0.0 with 3 (b63c2c0, AMD box), for ~16% more steps: no gain for the cost.
NUM_RUNGS = 3
FIRST_RUNG = 1 / 4  # of max_steps: before it a CTC head still sits at ~0% (it leaves its all-blank start at ~300-400 of 1200)
GROUP_BY = ("head",)  # compared only within the same value: a CTC trial starts slower than a multilabel one, then passes it
TIME_ATTR = "step"  # ASHA's time: the workers' own step


def rungs(max_steps: int, eval_every: int, longest_warmup: int) -> list[int]:
    """Steps at which ASHA compares trials: NUM_RUNGS evenly spaced from the first one to max_steps.

    The first rung is at max_steps / 4 and after the longest warmup in the space (comparing trials that
    are still warming up rewards short warmups, not good ones); earlier, full match is ~0 for every
    trial and the cut is a coin toss. Each rung is rounded up to an evaluation step, so a report lands
    exactly on it; rungs that round together are one.
    """
    up = lambda s: math.ceil(s / eval_every) * eval_every
    first = up(max(eval_every, longest_warmup, max_steps * FIRST_RUNG))
    gap = (max_steps - first) / NUM_RUNGS
    return sorted({r for r in (up(first + k * gap) for k in range(NUM_RUNGS)) if r < max_steps})


class FairASHA(AsyncHyperBandScheduler):
    """Ray's ASHA with explicit rung steps, each trial judged by its best-so-far metric (one noisy evaluation
    at a rung doesn't cut it) and compared only with trials that share its GROUP_BY values (one bracket each).
    Each stop (always before max_steps) is recorded as the trial's status `asha` in the experiment `exp` (search/status.py)."""


    def __init__(self, rung_steps: list[int], max_steps: int, exp: str, group_by: tuple = GROUP_BY):
        # stop_last_trials=False: a trial at max_steps ends by itself (its workers stop there), so its function returns
        # and records `completed`; a STOP there would have Tune kill the trial's actor before it could.
        super().__init__(time_attr=TIME_ATTR, metric=METRIC, mode=MODE, max_t=max_steps, grace_period=rung_steps[0],
                         reduction_factor=REDUCTION_FACTOR, brackets=1, stop_last_trials=False)
        self._rung_steps, self._group_by = list(rung_steps), tuple(group_by)
        self._groups: dict = {}  # (head, ...) -> ray_internals.bracket
        self._best: dict[str, float] = {}  # trial_id -> best metric so far
        self._exp = exp

    def _bracket(self, key: tuple):
        if key not in self._groups:
            self._groups[key] = bracket(self._rung_steps, self._max_t, REDUCTION_FACTOR)
        return self._groups[key]

    def _best_so_far(self, trial, result: dict | None) -> dict | None:
        if not result or result.get(METRIC) is None:
            return result
        best = max(self._best.get(trial.trial_id, -math.inf), result[METRIC])
        self._best[trial.trial_id] = best
        return {**result, METRIC: best}

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)  # checks metric and mode
        self._trial_info[trial.trial_id] = self._bracket(tuple(str(trial.config.get(k)) for k in self._group_by))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, self._best_so_far(trial, result))
        if decision == TrialScheduler.STOP and not result.get("diverged"):  # a diverged trial ends itself
            status.record(self._exp, trial.trial_id, "asha", result[TIME_ATTR])
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict):
        super().on_trial_complete(tune_controller, trial, self._best_so_far(trial, result))
        self._best.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return f"Using FairASHA: num_stopped={self._num_stopped}\n" + "\n".join(f"{k}: {b.debug_str()}" for k, b in self._groups.items())


def build_asha(max_steps: int, rung_steps: list[int], exp: str):
    return FairASHA(rung_steps, max_steps, exp)


def rung_plan(max_steps: int, eval_every: int, longest_warmup: int, num_samples: int) -> str:
    """The rungs and how many trials are expected to reach each: all of them the first, then 1/REDUCTION_FACTOR as
    many at each next one and at the end (within each head's group, so more where the heads split unevenly)."""
    steps = rungs(max_steps, eval_every, longest_warmup)
    if not steps:
        return f"ASHA: no rung before max_steps={max_steps}; every trial runs to the end"
    reach = lambda k: f"~{max(1, round(num_samples / REDUCTION_FACTOR ** k))}"
    parts = [f"rung {k + 1} at step {s}: {f'all {num_samples} trials' if k == 0 else reach(k)}" for k, s in enumerate(steps)]
    return (f"ASHA (best val_score so far, top 1/{REDUCTION_FACTOR} continue at each rung among trials of the same "
            f"{'/'.join(GROUP_BY)}): " + "; ".join(parts + [f"to the end ({max_steps}): {reach(len(steps))}"]))
