"""Training to convergence: the SGDR schedule's cycle ends, the plateau/cap/time stop rule of the per-worker loop,
and a retrain that chooses its own length (it stops on a plateau, says so, and keeps its best checkpoint). A time budget
over 2 DDP ranks is tested where DDP training is (test_train's CTC run)."""

import pytest

from trainable.config import TrainConfig
from trainable.schedule import cycle_at, cycle_end, lr_at
from trainable.worker import stop_reason


def test_cycles_double_and_end_at_the_floor():
    kw = dict(peak_lr=1e-3, min_lr=1e-5, warmup_steps=100, cosine_period=200, cosine_mult=2.0)
    assert [cycle_at(s, 100, 200, 2.0) for s in (100, 299, 300, 699, 700)] == [(0, 200), (199, 200), (0, 400), (399, 400), (0, 800)]
    assert lr_at(300, **kw) == 1e-3 and lr_at(700, **kw) == 1e-3  # warm restarts at 100+200 and 100+200+400
    assert lr_at(699, **kw) == pytest.approx(1e-5, abs=1e-7)
    assert cycle_end(301, 100, 200, 2.0) == 700 and cycle_end(700, 100, 200, 2.0) == 700  # up, never down
    assert cycle_end(1, 100, 200, 2.0) == 300  # at least one whole cycle
    assert cycle_end(3000, 573, 1098) == 573 + 3 * 1098  # mult 1: the original fixed period
    assert lr_at(573 + 2 * 1098, peak_lr=1e-3, min_lr=1e-5, warmup_steps=573, cosine_period=1098) == 1e-3


def test_stop_reason_waits_out_a_cycle_and_a_rising_score():
    cfg = TrainConfig(max_steps=10_000, warmup_steps=0, cosine_period=400, eval_every=100, patience=2)
    assert stop_reason(cfg, 10_000, 0, (), 0)[0] == "cap"
    assert stop_reason(cfg.replace(time_budget_s=60), 500, 0, (), 61)[0] == "time"
    flat = (0.5, 0.4, 0.5, 0.45)
    assert stop_reason(cfg, 500, 3, flat, 0) is None  # patience 2 reached, but not a whole 400-step cycle (4 evaluations)
    assert stop_reason(cfg, 500, 4, flat, 0)[0] == "plateau"
    assert stop_reason(cfg, 500, 9, (0.1, 0.2, 0.3, 0.4), 0) is None  # rose in each of the last 3 evaluations
    assert stop_reason(cfg.replace(patience=0), 500, 9, flat, 0) is None  # patience 0: run to the cap


def test_a_retrain_cap_shorter_than_one_cycle_or_an_unknown_trial_is_one_line(exp, capsys):
    from conftest import cli_error

    code, err = cli_error(capsys, "retrain", exp, "--max-steps", 1)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--max-steps 1 is shorter than one warmup + one cosine period" in err and "use at least" in err
    code, err = cli_error(capsys, "retrain", exp, "--trial", "nosuch")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: --trial nosuch: no such trial with a checkpoint in ") and "best first: " in err


@pytest.fixture(scope="module")
def memorisable(easy_data, tmp_path_factory):
    """64 training images that are also the validation set: a model reaches its ceiling on it fast, so the
    retrain must end on a plateau, not at its cap."""
    from trainable.data import read_meta, read_rows, split_files, write_dataset

    meta = read_meta(easy_data)
    rows = read_rows(split_files(easy_data, "train")[0])
    items = [(img, label, "text") for img, label in zip(rows["image"][:64], rows["label"][:64])]
    return str(write_dataset(tmp_path_factory.mktemp("mem") / "mem", {"train": items, "val": items}, meta["charset"], meta["max_len"],
                             image_size=meta["image_size"]))


@pytest.fixture(scope="module")
def calm(exp):
    """The session sweep's recommended trial (a CTC head at peak_lr 1e-3): the sweep's best trial may use an LR that
    turns NaN on a set it has memorised (a retrain then keeps its best checkpoint, but ends 'diverged')."""
    from results.experiment import load, load_sweep, matches

    trials, _ = load(exp)
    (trial_id,) = [r["trial_id"] for _, r in trials.iterrows() if matches(r, load_sweep(exp)["recommended"])]
    return exp, trial_id


def test_retrain_stops_on_a_plateau_says_so_and_keeps_its_best(calm, memorisable):
    import json

    import pandas as pd

    from conftest import cli

    exp, trial_id = calm
    proc = cli("retrain", exp, "--trial", trial_id, "--name", "plateau", "--data", memorisable, "--patience", 2, "--eval-epochs", 4, timeout=900)
    assert f"retraining trial {trial_id}'s config" in proc.stdout
    run = exp / "retrain" / "plateau"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ended"]["kind"] == "plateau", summary["ended"]
    assert "retrain ended: plateau: no better val_score in" in proc.stdout
    assert summary["final_metrics"]["step"] < summary["config"]["max_steps"]
    history = pd.read_parquet(run / "history.parquet")
    assert len(history) == summary["final_metrics"]["step"] // summary["config"]["eval_every"]  # every evaluation, drawn in curve.png
    kept = summary["best_metrics"]
    assert kept["val_score"] == history["val_score"].max()  # kept: a best evaluation (the latest of equal ones), not the last
    from results.predict import load_predictor

    assert load_predictor(summary["model"]).origin["step"] == kept["step"]  # the exported model is that checkpoint
    assert (run / "curve.png").stat().st_size > 10_000


def test_augmentation_ramps_in_over_its_own_steps_not_a_fifth_of_a_long_cap():
    from trainable.augment import strength_at

    assert strength_at(120, 0.5, 1200) == 0.25  # a trial: over the first fifth of its 1200 steps
    assert strength_at(240, 0.5, 36000, ramp_steps=240) == 0.5  # a retrain capped at 30 trials: as fast as in the trial
    assert strength_at(240, 0.5, 36000) == pytest.approx(0.5 * 240 / 7200)
