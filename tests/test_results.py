"""After a real sweep (subprocess drivers, one embedded Ray at a time): TPE + ASHA ran the reference config first,
stopped some trials at its rungs, kept checkpoints per trial and recorded how each ended (search/status.py); the results command writes the
tables/plots/report, export gives a standalone model equal to the checkpoint, and retrain trains the best
config further than the sweep did, resumes after SIGINT, and exports."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from conftest import TINY, cli
from results.checkpoints import best
from results.experiment import leaderboard, load, load_sweep
from search import status
from search.space import REFERENCE



def test_sweep_reference_first_asha_stops_some_checkpoints(exp):
    trials, history = load(exp)
    assert len(trials) == 6
    sw = load_sweep(exp)
    assert sw["reference"]["peak_lr"] == REFERENCE["peak_lr"] and sw["reference"]["focal_gamma"] == 2.0
    ref = trials[(trials["peak_lr"] == 1e-3) & (trials["focal_gamma"] == 2.0) & (trials["focal_pos_weight"] == 3.0)]
    assert len(ref) == 1, "the original config was evaluated"
    assert trials["steps_run"].nunique() > 1 and (trials["status"] == "asha").any()
    assert (trials["status"] == "completed").any() and trials["steps_run"].max() == TINY["max_steps"]
    # every trial's end is recorded where it happened: ASHA's stops at a rung, the trial's own completion
    ends = {tid: status.read(exp, tid) for tid in trials["trial_id"]}
    assert all(os.path.exists(os.path.join(exp, status.FOLDER, f"{tid}.json")) for tid in ends)
    assert {e["kind"] for e in ends.values()} == {"asha", "completed"}, ends
    assert all(e["step"] in sw["rungs"] for e in ends.values() if e["kind"] == "asha"), (ends, sw["rungs"])
    assert all(e["step"] == TINY["max_steps"] for e in ends.values() if e["kind"] == "completed"), ends
    if ref["steps_run"].item() == TINY["max_steps"]:
        assert ends[ref["trial_id"].item()]["kind"] == "completed"
    for tid in trials["trial_id"]:
        ckpts = [d for d in os.listdir(os.path.join(exp, "train", tid)) if d.startswith("checkpoint_")]
        assert ckpts, f"trial {tid} has no checkpoint"
    assert len(history) == sum(trials["steps_run"] // TINY["eval_every"])  # one row per report
    ckpt, origin = best(exp)
    assert os.path.exists(ckpt) and origin["val_full_match"] == trials["best_val_full_match"].max()
    board = leaderboard(trials)
    assert board.iloc[0]["best_val_full_match"] == trials["best_val_full_match"].max() and len(board) == 6


def test_results_tables_plots_report(exp, tmp_path):
    out = cli("results", exp).stdout
    assert "leaderboard" in out and "best trial" in out
    sw, table = load_sweep(exp), load(exp)[0].set_index("trial_id")
    assert sw["recommended"]["head"] == "ctc" and sw["recommended"]["augment"] == 0.3
    for label in ("reference", "recommended"):  # how the two start points did, against the best
        tid = out.split(f"vs the {label} config: ")[1].split("(trial ")[1].split(",")[0]
        assert table.loc[tid, "head"] == sw[label]["head"] and table.loc[tid, "augment"] == sw[label]["augment"], (label, tid)
    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    history = pd.read_parquet(exp / "results" / "history.parquet")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert trials["status"].isin(["completed", "asha"]).all(), trials[["trial_id", "status", "reason"]]  # as recorded (search/status.py)
    asha = trials[trials["status"] == "asha"]
    assert (asha["status_step"] == asha["steps_run"]).all()  # ASHA stopped each at its last report
    assert (trials["status"] == "completed").any()
    # one history row per report: every trial reported every eval_every steps up to where it ran
    assert history.groupby("trial_id").size().to_dict() == (trials.set_index("trial_id")["steps_run"] // TINY["eval_every"]).to_dict()
    for c in ("peak_lr", "warmup_steps", "cosine_period", "head", "augment", "best_val_full_match", "worker_seconds"):
        assert trials[c].notna().all(), c
    multilabel = trials["head"] == "multilabel"  # the focal settings are searched in multilabel trials only
    for c in ("focal_gamma", "focal_pos_weight"):
        assert trials.loc[multilabel, c].notna().all() and trials.loc[~multilabel, c].isna().all(), c
    pngs = glob.glob(str(exp / "results" / "*.png"))
    assert len(pngs) >= 4 and all(os.path.getsize(p) > 5000 for p in pngs)
    report = (exp / "results" / "report.md").read_text()
    assert "captcha-tune sweep" in report and ".png" in report


def test_export_matches_checkpoint_standalone(exp, easy_data, tmp_path):
    out = tmp_path / "model.pt2"
    said = cli("export", exp, "--out", out).stdout
    assert out.exists() and "trial" in said
    from results.predict import load_predictor, read_images

    ckpt, origin = best(exp)
    rows = read_images([os.path.join(easy_data, "val-00000.parquet")])[:16]
    images = [r[1] for r in rows]
    assert load_predictor(out).predict(images) == load_predictor(ckpt).predict(images)
    meta = load_predictor(out).origin
    assert meta["origin"]["trial_id"] == origin["trial_id"] and meta["origin"]["step"] == origin["step"]


def test_retrain_resumes_after_sigint_and_is_at_least_as_good(exp, easy_data, tmp_path):
    steps = 3 * TINY["max_steps"]
    cmd = [sys.executable, "-m", "captcha_tune", "retrain", str(exp), "--max-steps", str(steps), "--patience", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    snapshot = exp / "retrain" / "retrain" / "checkpoint_manager_snapshot.json"
    while not (snapshot.exists() and "checkpoint_" in snapshot.read_text()):  # a checkpoint Train has registered
        assert proc.poll() is None and time.time() < deadline, "retrain never checkpointed"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert not (exp / "retrain" / "retrain" / "model.pt2").exists(), "interrupted before the end"

    cli("retrain", exp, "--max-steps", steps, "--patience", 0, "--test", os.path.join(easy_data, "val-00000.parquet"))
    summary = json.loads((exp / "retrain" / "retrain" / "summary.json").read_text())
    assert summary["final_metrics"]["start_step"] > 0, "resumed from its checkpoint, not from zero"
    from trainable.schedule import cycle_end

    cfg = summary["config"]  # the asked cap, moved up to the end of a cosine cycle
    assert summary["final_metrics"]["step"] == cfg["max_steps"] == cycle_end(steps, cfg["warmup_steps"], cfg["cosine_period"], cfg["cosine_mult"]) >= steps
    assert summary["ended"]["kind"] == "cap"
    assert summary["best_metrics"]["val_full_match"] >= summary["sweep_best"]["val_full_match"]
    from results.evaluate import evaluate, load_rows
    from results.predict import load_predictor

    m = evaluate(load_predictor(summary["model"]), load_rows(os.path.join(easy_data, "val-00000.parquet")))
    assert summary["test"] == dict(full_match=m["full_match"], char_acc=m["char_acc"], n=m["n"], file="val-00000.parquet")


def test_trial_config_is_the_config_each_completed_trial_ran(exp):
    """results.retrain.trial_config (what retrain and bench.sweeps --seeds train) rebuilds a trial's config from its row
    of the trials table: for every trial that ran to the end, the config its Train run wrote in its summary."""
    from results.retrain import trial_config

    sweep, (trials, _) = load_sweep(exp), load(exp)
    done = [(row, os.path.join(exp, "train", row["trial_id"], "summary.json")) for _, row in trials.iterrows()]
    done = [(row, json.load(open(path))["config"]) for row, path in done if os.path.exists(path)]
    assert done, "no trial wrote a summary"
    for row, ran in done:
        assert trial_config(sweep, row).to_dict() == ran, row["trial_id"]
