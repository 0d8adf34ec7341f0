"""Retrain the best config of a sweep to completion through the same driver a trial used, then export it."""

from __future__ import annotations

import json
import math
import os

import pandas as pd

from results.experiment import load, load_sweep
from trainable import checkpoint, storage
from trainable.config import TrainConfig
from trainable.driver import RunSettings, run_training

STEP_PARAMS = ("warmup_steps", "cosine_period")


def whole_cycles(steps: int, warmup: int, period: int) -> int:
    """The run length nearest `steps` that ends where a cosine cycle does, at the LR floor: a run cut just after a
    warm restart ends at the peak LR, with the score in its dip."""
    return warmup + max(1, round((steps - warmup) / period)) * period


def best_config(exp, max_steps: int | None = None, patience: int = 5) -> tuple[TrainConfig, dict]:
    """The best trial's config; step-valued settings scale with max_steps as the search space did."""
    sweep = load_sweep(exp)
    _, origin = checkpoint.resolve(exp)
    trials, _ = load(exp)
    best = trials.set_index("trial_id").loc[origin["trial_id"]]
    values = {**sweep["base"], **{p: best[p] for p in sweep["space"] if not pd.isna(best[p])}}  # NaN: not searched in this trial (focal for ctc)
    values = {k: type(sweep["base"][k])(v) for k, v in values.items()}  # numpy scalars -> python
    trial_steps = sweep["base"]["max_steps"]
    steps = max_steps or trial_steps
    for p in STEP_PARAMS:
        values[p] = max(1 if p == "cosine_period" else 0, round(values[p] * steps / trial_steps))
    steps = whole_cycles(steps, values["warmup_steps"], values["cosine_period"])
    if patience:  # a warm restart sets the LR back to its peak and the score dips for a while: wait out a whole cycle
        patience = max(patience, math.ceil(values["cosine_period"] / values["eval_every"]))
    return TrainConfig.from_dict({**values, "max_steps": steps, "patience": patience}), origin


def retrain(exp, workers: int | None = None, gpus_per_worker: float | None = None, max_steps: int | None = None,
            patience: int = 5, name: str = "retrain", out: str | None = None, test: str | None = None,
            data: str | None = None, callbacks=(), init_from: str | None = None) -> dict:
    """Train (or resume) EXP/retrain/NAME, export its best checkpoint, optionally evaluate on a test set."""
    from cluster.connect import check_fits, init_ray
    from results.evaluate import evaluate, load_rows
    from results.export import export_model
    from results.predict import load_predictor
    from results import transfer
    from trainable.data import read_meta
    from trainable.progress import Progress

    sweep = load_sweep(exp)
    cfg, origin = best_config(exp, max_steps, patience)
    if data:  # e.g. more images of the same spec than the sweep used
        cfg = cfg.replace(data_dir=storage.normalize(data))
    cfg = cfg.replace(init_from=init_from) if init_from else cfg  # a checkpoint folder (results/transfer.py); else the sweep's
    if cfg.init_from:  # a source that can't start this model: one line, before Ray starts
        transfer.check(cfg, read_meta(cfg.data_dir))
    s = sweep["settings"]
    run = RunSettings(workers=workers or s["workers_per_trial"], cpus_per_worker=s["cpus_per_worker"],
                      gpus_per_worker=s["gpus_per_worker"] if gpus_per_worker is None else gpus_per_worker,
                      storage=storage.join(storage.normalize(exp), "retrain"), name=name)
    print(f"retraining trial {origin['trial_id']}'s config for {cfg.max_steps} steps on {run.workers} workers "
          f"(early stop after {cfg.patience} evaluations without improvement past warmup, at least a cosine period)", flush=True)
    init_ray()
    check_fits(run.workers, run.cpus_per_worker, run.gpus_per_worker)
    summary = run_training(cfg, run, callbacks=[Progress(cfg.max_steps), *callbacks])  # callbacks: e.g. MLflow's (results/tracking.py)
    out = out or storage.join(summary["run_path"], "model.pt2")
    ckpt, _ = checkpoint.resolve(summary["run_path"])
    export_model(ckpt, out, origin=dict(source=str(exp), retrained_from=origin["trial_id"], run=summary["run_path"]))
    summary.update(model=out, sweep_best=origin)
    if test:
        m = evaluate(load_predictor(out), load_rows(test))
        summary["test"] = dict({k: m[k] for k in ("full_match", "char_acc", "n")}, file=os.path.basename(str(test)))
    storage.write_text(storage.join(summary["run_path"], "summary.json"), json.dumps(summary, indent=2, default=str))
    return summary
