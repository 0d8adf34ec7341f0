"""A real sweep (Ray, 2 one-worker trials: the two start points) whose trials meet injected infrastructure faults: a trial whose worker
is killed after its first checkpoint, with Train's own retries off, is started again by the trial from that
checkpoint and completes; a trial whose worker group never starts ends `errored` with that reason and is FAIL
in the study, not a score; and the study's value of every trial is the best val_score its history holds
(what ASHA ranks by), with the running best as its intermediate values."""

import dataclasses
import os
import sys
import time

import optuna
import pytest
import ray.cloudpickle
import ray.train
from ray.train import ControllerError
from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

from conftest import TINY
from results.experiment import load
from search import trial, warm_start
from search.space import RECOMMENDED, REFERENCE
from search.sweep import SweepSettings, run_sweep
from trainable.config import TrainConfig
from trainable.driver import run_training
from trainable.metric import METRIC, WORST
from trainable.worker import train_fn_per_worker

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's processes can't import this module by name


def train_fn_killed_after_first_checkpoint(config: dict):
    """The real per-worker loop, except that on a fresh start the worker dies (as a killed process would) 3 s after
    its first checkpointed report: Train, which collects reports every 2 s, has registered that checkpoint by then."""
    fresh, report = ray.train.get_checkpoint() is None, ray.train.report

    def report_then_die(metrics, checkpoint=None, **kw):
        report(metrics, checkpoint=checkpoint, **kw)
        if fresh and checkpoint is not None:
            time.sleep(3)
            os._exit(17)

    ray.train.report = report_then_die
    return train_fn_per_worker(config)


def start_point(config) -> str | None:
    """'reference' or 'recommended' (search.space's start points: the sweep's first and second trial), None for a draw."""
    for name, point in (("reference", REFERENCE), ("recommended", RECOMMENDED)):
        if all(config[k] == point[k] for k in ("head", "augment", "peak_lr")):
            return name
    return None


def faulty_training(cfg, settings, callbacks=()):
    """The reference trial: its worker is killed once, and Train does not retry (max_failures=0), so the trial must;
    the recommended trial: its worker group never starts (the error Train's fit() raises when a start times out);
    a drawn trial (none in this 2-trial sweep): as it is."""
    point = start_point(cfg.to_dict())
    if point == "reference":
        return run_training(cfg, dataclasses.replace(settings, max_failures=0), callbacks, train_fn=train_fn_killed_after_first_checkpoint)
    if point == "recommended":
        raise ControllerError(WorkerGroupStartupTimeoutError(1))
    return run_training(cfg, settings, callbacks)


def trial_at(trials, point: str) -> str:
    (trial_id,) = [i for i, row in trials.iterrows() if start_point(row) == point]
    return trial_id


@pytest.fixture(scope="module")
def faulty_sweep(module_ray, easy_data, tmp_path_factory):
    s = SweepSettings(storage=str(tmp_path_factory.mktemp("exp")), name="f", data=easy_data, num_samples=2, workers_per_trial=1)
    exp = run_sweep(s, TrainConfig(**TINY), train=faulty_training)
    study = optuna.load_study(study_name=warm_start.study_name("f"), storage=warm_start.study_url(exp, None))
    trials, history = load(exp)
    return trials.set_index("trial_id"), history, {t.user_attrs["trial_id"]: t for t in study.trials}


def test_a_killed_worker_is_retried_from_the_checkpoint_and_completes(faulty_sweep):
    trials, history, study = faulty_sweep
    first = trial_at(trials, "reference")
    h = history[history["trial_id"] == first]
    assert trials.loc[first, "status"] in ("completed", "asha"), trials.loc[first, "reason"]
    assert h["start_step"].tolist()[0] == 0 and TINY["eval_every"] in h["start_step"].tolist()  # resumed, not from 0
    assert study[first].state == optuna.trial.TrialState.COMPLETE


def test_a_group_that_never_starts_is_fail_with_its_reason(faulty_sweep):
    trials, _, study = faulty_sweep
    second = trial_at(trials, "recommended")
    reason = trials.loc[second, "reason"]
    assert trials.loc[second, "status"] == "errored"
    assert reason.startswith(f"the worker group did not start (WorkerGroupStartupTimeoutError), {trial.RETRIES + 1} times"), reason
    assert study[second].state == optuna.trial.TrialState.FAIL and study[second].value is None
    assert study[second].user_attrs["fail_reason"] == reason


def test_the_study_value_is_the_best_val_score_of_the_history(faulty_sweep):
    trials, history, study = faulty_sweep
    assert set(study) == set(trials.index)
    told = 0
    for trial_id, t in study.items():
        h = history[(history["trial_id"] == trial_id) & (history["diverged"] == 0)].sort_values("step")
        if trials.loc[trial_id, "status"] == "errored":
            continue
        if trials.loc[trial_id, "status"] == "diverged":
            assert t.value == WORST
            continue
        assert t.value == pytest.approx(h[METRIC].max(), abs=1e-12), trial_id
        running = h.groupby("step")[METRIC].max().cummax()
        assert t.intermediate_values == pytest.approx(running.to_dict(), abs=1e-12)
        told += 1
    assert told >= 1
