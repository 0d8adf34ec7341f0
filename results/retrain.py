"""Retrain the best config of a sweep to completion through the same driver a trial used, then export it."""

from __future__ import annotations

import json
import os

import pandas as pd

from results.experiment import load, load_sweep
from results import checkpoints
from trainable import storage
from trainable.config import TrainConfig
from trainable.data import dataset_meta
from trainable.errors import UserError
from trainable.schedule import cycle_end
from trainable.driver import RunSettings, run_training

CAP_TRIALS = 20  # the default step cap of a retrain, in trial lengths: generous, since a plateau ends it first
EVAL_EPOCHS = 1.0  # a retrain evaluates once per epoch of its training set (at least 4 times per cosine cycle)
SGDR_MULT = 2.0  # each cosine cycle twice the one before: long low-LR phases late, where an open-ended run gains


def trial_config(sweep: dict, row) -> TrainConfig:
    """The config a sweep trial (a row of its trials table) ran: the sweep's base with the trial's drawn values."""
    values = {**sweep["base"], **{p: row[p] for p in sweep["space"] if not pd.isna(row[p])}}  # NaN: not drawn in this trial (focal for ctc)
    return TrainConfig.from_dict({k: type(sweep["base"][k])(v) for k, v in values.items()})  # numpy scalars -> python


def best_config(exp, max_steps: int | None = None, patience: int = 5, eval_epochs: float = EVAL_EPOCHS,
                time_budget_s: float = 0.0, data: str | None = None, trial: str | None = None,
                sweep: dict | None = None) -> tuple[TrainConfig, dict]:
    """The best trial's config (or `trial`'s: a Tune trial id of the sweep), set up to train until its validation
    score stops rising.

    The trial's warmup and first cosine period are kept (the schedule the sweep chose), then each cycle doubles
    (SGDR). The run ends on a plateau (worker.stop_reason), at `time_budget_s`, or at its step cap: `max_steps`,
    by default CAP_TRIALS trial lengths, moved up to the end of a cosine cycle."""
    sweep = sweep or load_sweep(exp)
    _, origin = checkpoints.best(exp) if trial is None else chosen(exp, trial)
    trials, _ = load(exp)
    cfg = trial_config(sweep, trials.set_index("trial_id").loc[origin["trial_id"]])
    if data:  # e.g. more images of the same spec than the sweep used
        cfg = cfg.replace(data_dir=storage.normalize(data))
    # augment_ramp: augmentation ramps in as it did in the trial, not over a fifth of a cap many trials long
    cfg = cfg.replace(cosine_mult=SGDR_MULT, patience=patience, time_budget_s=time_budget_s,
                      augment_ramp=cfg.augment_ramp or max(1, sweep["base"]["max_steps"] // 5))
    shortest = cfg.warmup_steps + cfg.cosine_period
    if max_steps is not None and max_steps < shortest:
        raise UserError(f"--max-steps {max_steps} is shorter than one warmup + one cosine period of the best config; use at least {shortest}")
    cap = cycle_end(max_steps or CAP_TRIALS * sweep["base"]["max_steps"], cfg.warmup_steps, cfg.cosine_period, cfg.cosine_mult)
    train_images = dataset_meta(cfg.data_dir)["counts"]["train"]
    epoch = max(1, round(eval_epochs * train_images / cfg.batch_size))
    return cfg.replace(max_steps=cap, eval_every=max(1, min(epoch, cfg.cosine_period // 4))), origin


def chosen(exp, trial: str) -> tuple[str, dict]:
    """(checkpoint, origin) of one trial at its best kept checkpoint; a trial without one is a one-line error."""
    kept = {origin["trial_id"]: (ckpt, origin) for ckpt, origin in checkpoints.ranked(exp)}
    if trial not in kept:
        raise UserError(f"--trial {trial}: no such trial with a checkpoint in {exp}; trials with one, best first: {', '.join(kept) or 'none'}")
    return kept[trial]


def retrain(exp, workers: int | None = None, gpus_per_worker: float | None = None, max_steps: int | None = None,
            patience: int = 5, name: str = "retrain", out: str | None = None, test: str | None = None,
            data: str | None = None, callbacks=(), time_budget_s: float = 0.0, eval_epochs: float = EVAL_EPOCHS,
            init_from: str | None = None, trial: str | None = None) -> dict:
    """Train (or resume) EXP/retrain/NAME (the best trial's config, or `trial`'s) until it stops improving, export its best checkpoint, optionally test it."""
    from cluster.connect import check_fits, init_ray
    from results.evaluate import evaluate, load_rows
    from results.export import export_model
    from results.predict import load_predictor
    from results import transfer
    from trainable.data import read_meta
    from trainable.progress import Progress

    sweep = load_sweep(exp)
    cfg, origin = best_config(exp, max_steps, patience, eval_epochs, time_budget_s, data, trial, sweep)
    cfg = cfg.replace(init_from=init_from) if init_from else cfg  # a checkpoint folder (results/transfer.py); else the sweep's
    if cfg.init_from:  # a source that can't start this model: one line, before Ray starts
        transfer.check(cfg, read_meta(cfg.data_dir))
    s = sweep["settings"]
    run = RunSettings(workers=workers or s["workers_per_trial"], cpus_per_worker=s["cpus_per_worker"],
                      gpus_per_worker=s["gpus_per_worker"] if gpus_per_worker is None else gpus_per_worker,
                      storage=storage.join(storage.normalize(exp), "retrain"), name=name)
    print(f"retraining trial {origin['trial_id']}'s config on {run.workers} workers until validation stops improving: "
          f"evaluating every {cfg.eval_every} steps, cosine cycles of {cfg.cosine_period} steps doubling, at most {cfg.max_steps} steps"
          + (f" or {cfg.time_budget_s:.0f} s" if cfg.time_budget_s else ""), flush=True)
    init_ray()
    check_fits(run.workers, run.cpus_per_worker, run.gpus_per_worker)
    history = storage.join(run.storage, run.name, "history.jsonl")
    # keep_diverged: a late NaN (a high LR on a set it has learned) still hands back the best checkpoint from before it
    summary = run_training(cfg, run, callbacks=[Progress(cfg.max_steps, history, cfg.time_budget_s), *callbacks], keep_diverged=True)
    curve = write_curve(history, f"retrain of trial {origin['trial_id']}: {summary['ended'].get('reason', '')}")
    out = out or storage.join(summary["run_path"], "model.pt2")
    ckpt, _ = checkpoints.resolve(summary["run_path"])
    export_model(ckpt, out, origin=dict(source=str(exp), retrained_from=origin["trial_id"], run=summary["run_path"]))
    print(f"retrain ended: {summary['ended'].get('reason', '?')}; best val full match {summary['best_metrics'].get('val_full_match', 0):.4f} "
          f"at step {summary['best_metrics'].get('step')}", flush=True)
    summary.update(model=out, sweep_best=origin, curve=curve)
    if test:
        m = evaluate(load_predictor(out), load_rows(test))
        summary["test"] = dict({k: m[k] for k in ("full_match", "char_acc", "n")}, file=os.path.basename(str(test)))
    storage.write_text(storage.join(summary["run_path"], "summary.json"), json.dumps(summary, indent=2, default=str))
    return summary


def write_curve(history: str, title: str) -> str | None:
    """history.parquet and curve.png (validation full match and LR against the step) from the run's history.jsonl,
    beside it."""
    import io
    import tempfile

    from results.plots import run_curve

    if not storage.exists(history):
        return None
    rows = pd.read_json(io.StringIO(storage.read_text(history)), lines=True)
    if "val_full_match" not in rows:
        return None
    rows = rows.drop_duplicates("step", keep="last").sort_values("step")  # a resumed run re-reports its last step
    folder = history.rsplit("/", 1)[0]
    buf = io.BytesIO()
    rows.to_parquet(buf)
    storage.write_bytes(storage.join(folder, "history.parquet"), buf.getvalue())
    with tempfile.TemporaryDirectory() as tmp:
        run_curve(rows, os.path.join(tmp, "curve.png"), title)
        storage.write_bytes(storage.join(folder, "curve.png"), open(os.path.join(tmp, "curve.png"), "rb").read())
    return storage.join(folder, "curve.png")
