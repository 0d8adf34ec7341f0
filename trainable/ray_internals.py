"""Every private part of Ray that captcha-tune leans on, in one place, each with why (pyproject pins ray's minor
version; a Ray upgrade starts by re-checking this file)."""

from __future__ import annotations

import logging


def quiet_report_logs() -> None:
    """Ray Train V2 logs every report at INFO under a logger named by its source file, which LoggingConfig misses."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def bracket(rung_steps: list[int], max_t: int, reduction_factor: float):
    """ASHA's rung bookkeeping (`_Bracket`) at explicit rung steps: search/scheduler.py keeps one per head, which the
    public AsyncHyperBandScheduler does not offer (it has brackets, not groups, and geometric rungs)."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    b = _Bracket(rung_steps[0], max_t, reduction_factor, 0)
    b._rungs = [(r, {}) for r in reversed(rung_steps)]  # Ray's bracket walks its rungs latest first
    return b


def set_total_samples(generator, n: int) -> None:
    """SearchGenerator keeps its trial total in `_total_samples` and restores it from its pickled state: a sweep
    extended with a larger --num-samples sets the new total after the restore."""
    generator._total_samples = n


def train_start_and_health_errors():
    """(start errors, health-check failure wrapper, health-check timeout) of Ray Train V2's controller: the start
    errors Train itself counts as retryable, and the wrapper around a dead worker (search/trial.py's faults)."""
    from ray.train.v2._internal.exceptions import (WorkerGroupStartupFailedError, WorkerGroupStartupTimeoutError,
                                                   WorkerHealthCheckFailedError, WorkerHealthCheckTimeoutError)

    return (WorkerGroupStartupTimeoutError, WorkerGroupStartupFailedError), WorkerHealthCheckFailedError, WorkerHealthCheckTimeoutError


def optuna_trial(searcher, trial_id: str):
    """OptunaSearch's live Optuna trial of a Tune trial (`_ot_trials`), to report intermediate values at our step."""
    return searcher._ot_trials[trial_id]


def optuna_study(searcher):
    """OptunaSearch's study (`_ot_study`)."""
    return searcher._ot_study


def already_completed(searcher, trial_id: str) -> bool:
    """Whether OptunaSearch has already told the study this trial's end (`_completed_trials`)."""
    return trial_id in searcher._completed_trials
