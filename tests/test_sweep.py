"""Sweeps and runs on real Ray (2 CPUs, 2 gloo workers per trial): worker-failure retry from a checkpoint,
impossible requests refused."""

import os
import sys
import time
from pathlib import Path

import pytest
import ray.cloudpickle
import ray.train

from conftest import TINY
from search.sweep import SweepSettings, run_sweep
from trainable.config import TrainConfig
from trainable.driver import RunSettings, run_training
from trainable.worker import train_fn_per_worker

# Train's workers can't import this module by name (pytest puts tests/ on the driver's sys.path only): they get
# its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


pytestmark = pytest.mark.usefixtures("module_ray")


def sweep(tmp_path, data, name, n, base=None, overrides=None, **kw):
    s = SweepSettings(storage=str(tmp_path), name=name, data=data, num_samples=n, **kw)
    return run_sweep(s, TrainConfig(**{**TINY, **(base or {})}), overrides)


def dies_once(snapshot: Path):
    """The real per-worker loop, except that on a fresh start rank 0 dies (as a killed process would) once Train has
    registered its first checkpoint (named in the run's `snapshot` file, checkpoint_manager_snapshot.json)."""

    def train_fn(config: dict):
        fresh, report = ray.train.get_checkpoint() is None, ray.train.report

        def report_then_die(metrics, checkpoint=None, **kw):
            report(metrics, checkpoint=checkpoint, **kw)
            if fresh and checkpoint is not None:  # only rank 0 reports a checkpoint
                deadline = time.time() + 120
                while not (snapshot.exists() and "checkpoint_" in snapshot.read_text()):
                    assert time.time() < deadline, f"Train never registered the checkpoint in {snapshot}"
                    time.sleep(0.1)
                os._exit(17)

        ray.train.report = report_then_die  # this worker process's own ray.train, which train_fn_per_worker calls
        return train_fn_per_worker(config)

    return train_fn


def test_worker_failure_is_retried_from_checkpoint(easy_data, tmp_path):
    run = RunSettings(workers=2, storage=str(tmp_path), name="fault")
    summary = run_training(TrainConfig(**TINY, data_dir=easy_data), run, train_fn=dies_once(tmp_path / "fault" / "checkpoint_manager_snapshot.json"))
    # the group restarted from the checkpoint of the first evaluation, not from zero, and finished
    assert summary["final_metrics"]["start_step"] == TINY["eval_every"]
    assert summary["final_metrics"]["step"] == TINY["max_steps"] and summary["best_checkpoint"]


def test_impossible_request_fails_fast_with_what_exists(easy_data, tmp_path):
    t0 = time.time()
    with pytest.raises(ValueError, match=r"asked for 4 worker\(s\).*the cluster has 2 CPU"):
        sweep(tmp_path, easy_data, "big", 2, workers_per_trial=4)
    with pytest.raises(ValueError, match=r"0 GPU"):
        sweep(tmp_path, easy_data, "gpu", 2, gpus_per_worker=1.0)
    assert time.time() - t0 < 30


def test_bad_bounds_rejected_before_ray(tmp_path, capsys):
    from captcha_tune.cli import main

    for bound, msg in [("peak_lr=1e-2:1e-4", "min"), ("warmup_steps=-0.1:0.1", ">= 0"), ("nosuch=1:2", "unknown search parameter"),
                       ("loss=focal,xx", "loss='xx' can't be trained: loss must be 'focal' or 'ce'"),
                       ("head=ctc,rnn", "head='rnn' can't be trained"), ("augment=-1:0.5", ">= 0")]:
        with pytest.raises(SystemExit) as e:  # the command itself, in this process: no subprocess start-up per bound
            main(["sweep", "--storage", str(tmp_path), "--bound", bound])
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "sweep"), "nothing written for a rejected sweep"
