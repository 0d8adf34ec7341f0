"""The sweep on real Ray (2 CPUs, 2 gloo workers per trial): TPE + ASHA, the reference config first,
checkpoints per trial, worker-failure retry from a checkpoint, divergence recorded, impossible requests refused."""

import os
import time

import pytest

from conftest import TINY, cli
from results.experiment import best_in_hindsight, leaderboard, load, load_sweep
from search.space import REFERENCE
from search.sweep import SweepSettings, run_sweep
from trainable.config import TrainConfig


@pytest.fixture(scope="module", autouse=True)
def ray_once():
    import ray

    from cluster.connect import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def sweep(tmp_path, data, name, n, base=None, overrides=None, **kw):
    s = SweepSettings(storage=str(tmp_path), name=name, data=data, num_samples=n, **kw)
    return run_sweep(s, TrainConfig(**{**TINY, **(base or {})}), overrides)


def test_sweep_reference_first_asha_stops_some_checkpoints(easy_data, tmp_path):
    exp = sweep(tmp_path, easy_data, "main", 6)
    trials, history = load(exp)
    assert len(trials) == 6
    sw = load_sweep(exp)
    assert sw["reference"]["peak_lr"] == REFERENCE["peak_lr"] and sw["reference"]["focal_gamma"] == 2.0
    ref = trials[(trials["peak_lr"] == 1e-3) & (trials["focal_gamma"] == 2.0) & (trials["focal_pos_weight"] == 3.0)]
    assert len(ref) == 1, "the original config was evaluated"
    assert trials["steps_run"].nunique() > 1 and trials["status"].str.startswith("stopped by ASHA").any()
    assert (trials["status"] == "completed").any() and trials["steps_run"].max() == TINY["max_steps"]
    for tid in trials["trial_id"]:
        ckpts = [d for d in os.listdir(os.path.join(exp, "train", tid)) if d.startswith("checkpoint_")]
        assert ckpts, f"trial {tid} has no checkpoint"
    assert len(history) == sum(trials["steps_run"] // TINY["eval_every"])  # one row per report
    ckpt, origin = best_in_hindsight(exp)
    assert os.path.exists(ckpt) and origin["val_full_match"] == trials["best_val_full_match"].max()
    board = leaderboard(trials)
    assert board.iloc[0]["best_val_full_match"] == trials["best_val_full_match"].max() and len(board) == 6


def test_worker_failure_is_retried_from_checkpoint(easy_data, tmp_path):
    exp = sweep(tmp_path, easy_data, "fault", 1, base=dict(fail_once_at_step=25), scheduler="none")
    trials, history = load(exp)
    assert trials["status"].tolist() == ["completed"]
    assert history["step"].max() == TINY["max_steps"]
    # after the death at step 25 the run resumed from its latest registered checkpoint (step 10 or 20:
    # Train registers reports every couple of seconds, and step 20 may be only 0.3 s old), not from zero
    from ray.tune import ExperimentAnalysis

    last = ExperimentAnalysis(exp).trials[0].last_result
    assert last["start_step"] in (10, 20)


def test_diverging_trials_are_recorded_and_the_sweep_goes_on(easy_data, tmp_path):
    exp = sweep(tmp_path, easy_data, "nan", 2, overrides={"peak_lr": {"low": 1e29, "high": 1e30}}, scheduler="none")
    trials, _ = load(exp)
    assert len(trials) == 2
    assert all(s.startswith("errored") and "diverged" in s for s in trials["status"]), trials["status"].tolist()


def test_impossible_request_fails_fast_with_what_exists(easy_data, tmp_path):
    t0 = time.time()
    with pytest.raises(ValueError, match=r"asked for 4 worker\(s\).*the cluster has 2 CPU"):
        sweep(tmp_path, easy_data, "big", 2, workers_per_trial=4)
    with pytest.raises(ValueError, match=r"0 GPU"):
        sweep(tmp_path, easy_data, "gpu", 2, gpus_per_worker=1.0)
    assert time.time() - t0 < 30


def test_bad_bounds_rejected_before_ray(tmp_path):
    for bound, msg in [("peak_lr=1e-2:1e-4", "min"), ("warmup_steps=-0.1:0.1", ">= 0"), ("nosuch=1:2", "unknown search parameter"),
                       ("loss=focal,xx", "loss='xx' can't be trained: loss must be 'focal' or 'ce'"),
                       ("head=ctc,rnn", "head='rnn' can't be trained"), ("augment=-1:0.5", ">= 0")]:
        proc = cli("sweep", "--storage", tmp_path, "--bound", bound, check=False, timeout=60)
        assert proc.returncode == 2 and msg in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "sweep"), "nothing written for a rejected sweep"
