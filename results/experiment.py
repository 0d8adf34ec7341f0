"""A sweep experiment as two pandas tables (trials, history), readable while it runs or after.

Reads only the storage path: Tune's experiment state and result files, and sweep.json.
"""

from __future__ import annotations

import json
import math
import os
import re

import pandas as pd
import pyarrow.fs as pafs

from trainable import storage
from trainable.errors import UserError
from trainable.metric import METRIC

HISTORY_COLUMNS = ["step", "lr", "train_loss", "val_full_match", "val_char_acc", "val_loss", "val_score", "train_seconds",
                   "images_per_s", "diverged", "start_step", "node_id", "checkpoint_path", "time_total_s", "timestamp"]
METRICS = ["val_full_match", "val_char_acc", "val_loss"]  # reported per trial; the best report is chosen by METRIC


def load_sweep(exp) -> dict:
    path = storage.join(storage.normalize(exp), "sweep.json")
    if not storage.exists(path):
        raise FileNotFoundError(f"no sweep at {exp} (no sweep.json); give STORAGE/NAME of a `captcha-tune sweep`")
    return json.loads(storage.read_text(path))


def _error_reason(trial) -> str:
    """The error file as synced to the storage (trial.path is in the storage's filesystem), else the driver's copy."""
    fs, name = trial.storage.storage_filesystem, trial.run_metadata.error_filename
    if name and fs.get_file_info(f"{trial.path}/{name}").type == pafs.FileType.File:
        with fs.open_input_stream(f"{trial.path}/{name}") as f:
            text = f.read().decode()
    elif trial.error_file and os.path.exists(trial.error_file):
        text = open(trial.error_file).read()
    else:
        return "error (no error file)"
    lines = [l for l in text.splitlines() if l.strip()]
    reason = next((l for l in reversed(lines) if "diverged" in l), lines[-1] if lines else "unknown error")
    return reason.strip()[:300]


def status_of(trial, steps_run: int, max_steps: int, rungs: list[int], eval_every: int = 1) -> str:
    """rungs: ASHA's rung steps ([] without ASHA). ASHA stops a trial at the first report at or past a rung;
    a trial that ended anywhere else was stopped by the sweep's time budget (or an interrupted sweep)."""
    if trial.status == "ERROR":
        return "errored: " + _error_reason(trial)
    if trial.status == "TERMINATED":
        if steps_run >= max_steps:
            return "completed"
        if any(0 <= steps_run - r < eval_every for r in rungs):
            rung = sum(1 for r in rungs if r <= steps_run)
            return f"stopped by ASHA at step {steps_run} (rung {rung})"
        return f"stopped at step {steps_run} by the time budget"
    return trial.status.lower()


FINISHED = ("completed", "stopped by ASHA", "stopped by the time budget")  # status classes with a final result


def status_class(status: str) -> str:
    """'completed' | 'stopped by ASHA' | 'stopped by the time budget' | 'errored' | 'running' (running, pending, ...)."""
    status = str(status)
    if status == "completed":
        return "completed"
    if status.startswith("stopped by ASHA"):
        return "stopped by ASHA"
    if status.startswith("stopped at"):
        return "stopped by the time budget"
    if status.startswith("errored"):
        return "errored"
    return "running"


def short_status(status: str) -> str:
    """A status for a terminal column: 'completed', 'ASHA@200', 'budget@300', 'diverged@450', 'errored', 'running'."""
    status = str(status)
    step = re.search(r"at step (\d+)", status)
    cls = status_class(status)
    if cls == "stopped by ASHA":
        return f"ASHA@{step.group(1)}"
    if cls == "stopped by the time budget":
        return f"budget@{step.group(1)}"
    if cls == "errored":
        return f"diverged@{step.group(1)}" if "diverged" in status and step else "errored"
    return status


def error_reason(status: str) -> str:
    """The reason of an 'errored: ...' status without the exception's class name."""
    reason = str(status).removeprefix("errored: ").strip()
    return re.sub(r"^[\w.]*(Error|Exception)(\([\w.]*\))?: ", "", reason)


def check_errored(trials: pd.DataFrame) -> None:
    """Raise a one-line UserError when trials errored and none finished: the sweep found nothing.

    '8 of 8 trials errored: 8 x loss must be 'focal' or 'ce', not 'x''; reasons that differ only in their
    numbers (the step and LR of a divergence) count together, most common first.
    """
    if not len(trials):
        return
    cls = trials["status"].map(status_class)
    errored = trials["status"][cls.eq("errored")]
    if not len(errored) or cls.isin(FINISHED).any():
        return
    groups: dict[str, list[str]] = {}
    for reason in map(error_reason, errored):
        groups.setdefault(re.sub(r"\d[\d.e+-]*", "#", reason), []).append(reason)
    counted = [f"{len(g)} x {g[0]}" + ("" if len(set(g)) == 1 else " (numbers vary)") for g in sorted(groups.values(), key=len, reverse=True)]
    raise UserError(f"{len(errored)} of {len(trials)} trials errored: " + " | ".join(counted))


def status_counts(statuses: pd.Series) -> str:
    """'N trials: a completed, b stopped by ASHA, [c stopped by the time budget, ]d errored, e running/pending'."""
    cls = statuses.map(status_class)
    budget = cls.eq("stopped by the time budget").sum()
    return (f"{len(cls)} trial{'s' if len(cls) != 1 else ''}: {cls.eq('completed').sum()} completed, {cls.eq('stopped by ASHA').sum()} stopped by ASHA, "
            + (f"{budget} stopped by the time budget, " if budget else "")
            + f"{cls.eq('errored').sum()} errored, {cls.eq('running').sum()} running/pending")


def load(exp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials: one row per trial, history: one row per report)."""
    from ray.tune import ExperimentAnalysis

    sweep = load_sweep(exp)
    params, max_steps, workers = list(sweep["space"]), sweep["base"]["max_steps"], sweep["settings"]["workers_per_trial"]
    gpus = sweep["settings"]["gpus_per_worker"] * workers
    rungs = sweep["rungs"] if sweep["settings"].get("scheduler", "asha") == "asha" else []
    analysis = ExperimentAnalysis(storage.normalize(exp))
    frames = analysis.trial_dataframes
    trials, history = [], []
    for t in sorted(analysis.trials, key=lambda t: t.trial_id):
        h = frames.get(t.trial_id, pd.DataFrame())
        h = h[[c for c in HISTORY_COLUMNS if c in h.columns]].copy()
        if "checkpoint_path" in h:  # Ray reports it without the URI's scheme
            h["checkpoint_path"] = h["checkpoint_path"].map(lambda p: storage.as_uri(p, exp) if isinstance(p, str) else p)
        h.insert(0, "trial_id", t.trial_id)
        history.append(h)
        ok = h[h["val_full_match"].notna()] if "val_full_match" in h else h
        best = ok.loc[ok[METRIC].idxmax()] if len(ok) else {}
        last = ok.iloc[-1] if len(ok) else {}
        steps = int(h["step"].max()) if "step" in h and len(h) else 0
        wall = float(h["time_total_s"].max()) if "time_total_s" in h and len(h) else 0.0
        row = dict(trial_id=t.trial_id, **{p: t.config.get(p) for p in params})
        for m in METRICS:
            row[f"best_{m}"], row[f"last_{m}"] = best.get(m, math.nan) if len(ok) else math.nan, last.get(m, math.nan) if len(ok) else math.nan
        row.update(best_step=int(best["step"]) if len(ok) else 0, steps_run=steps,
                   status=status_of(t, steps, max_steps, rungs, sweep["base"].get("eval_every", 1)), wall_seconds=wall,
                   worker_seconds=wall * workers, gpu_seconds=wall * gpus)
        trials.append(row)
    history = pd.concat(history, ignore_index=True) if history else pd.DataFrame(columns=["trial_id", *HISTORY_COLUMNS])
    return pd.DataFrame(trials), history


def write_tables(exp, out=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write trials.parquet and history.parquet (default: EXP/results/) and return them."""
    trials, history = load(exp)
    out = out or storage.join(storage.normalize(exp), "results")
    storage.write_bytes(storage.join(out, "trials.parquet"), trials.to_parquet(index=False))
    storage.write_bytes(storage.join(out, "history.parquet"), history.to_parquet(index=False))
    return trials, history


def best_in_hindsight(exp) -> tuple[str, dict]:
    """The best report by METRIC (full match, ties broken by char accuracy) of all trials whose checkpoint still exists."""
    _, history = load(exp)
    h = history[history.get("checkpoint_path").notna()] if "checkpoint_path" in history else history.iloc[0:0]
    h = h[[storage.exists(storage.join(p, "checkpoint.pt")) for p in h["checkpoint_path"]]] if len(h) else h
    if not len(h):
        raise FileNotFoundError(f"{exp} has no checkpoint yet; wait for the first evaluation of a trial")
    row = h.loc[h[METRIC].idxmax()]
    origin = dict(source=str(exp), trial_id=row["trial_id"], step=int(row["step"]), **{m: float(row[m]) for m in METRICS})
    return storage.join(row["checkpoint_path"], "checkpoint.pt"), origin


STEP_SETTINGS = ("warmup_steps", "cosine_period")  # searched as fractions of max_steps, stored as steps
HARD_CEILINGS = {"augment": 2.0}  # TrainConfig rejects more


def hard_limits(name: str, p: dict, max_steps: int | None = None) -> tuple[float | None, float | None]:
    """(floor, ceiling) that no range of `name` can pass, None where a range can be widened that way.

    search/space.py rejects bounds below 0 (log ranges: 0 itself) and step fractions above 1.0 (= max_steps);
    a cosine period is at least one step.
    """
    floor = None if p["kind"] == "log" else 1 if name == "cosine_period" else 0
    if p["kind"] == "steps":
        ceiling = 1.0
    elif name in STEP_SETTINGS and max_steps:
        ceiling = max_steps
    else:
        ceiling = HARD_CEILINGS.get(name)
    return floor, ceiling


def edge_warnings(trials: pd.DataFrame, space: dict, tol: float = 0.05, max_steps: int | None = None) -> list[str]:
    """Best-trial parameters within `tol` of a search-range edge (log distance for log ranges) that could be
    widened: a best warmup of 0 steps or a best period of all of max_steps is an answer, not a range to widen."""
    done = trials[trials["best_val_full_match"].notna()]
    if not len(done):
        return []
    best = done.loc[done["best_val_full_match"].idxmax()]
    out = []
    for name, p in space.items():
        if p["kind"] == "choice" or p["high"] <= p["low"]:
            continue
        f = (lambda v: math.log(v)) if p["kind"] == "log" else (lambda v: v)
        pos = (f(best[name]) - f(p["low"])) / (f(p["high"]) - f(p["low"]))
        floor, ceiling = hard_limits(name, p, max_steps)
        if pos <= tol and (floor is None or p["low"] > floor):
            edge = "lower"
        elif pos >= 1 - tol and (ceiling is None or p["high"] < ceiling):
            edge = "upper"
        else:
            continue
        out.append(f"warning: best {name}={best[name]:.4g} is at the {edge} edge of its range [{p['low']:.4g}, {p['high']:.4g}]; widen the range and sweep again")
    return out


def leaderboard(trials: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    cols = ["trial_id", "best_val_full_match", "best_step", "steps_run", "status"] + [c for c in trials.columns if c not in
            ("trial_id", "status", "steps_run", "best_step", "wall_seconds", "worker_seconds", "gpu_seconds") and not c.startswith(("best_", "last_"))]
    return trials.sort_values("best_val_full_match", ascending=False, na_position="last")[cols].head(top)


def print_summary(exp) -> pd.DataFrame:
    """Print the leaderboard (short statuses, the long reasons under it), the best trial and its edge warnings;
    write the tables; return the trials table."""
    sweep = load_sweep(exp)
    trials, _ = write_tables(exp)
    if not len(trials):
        print(f"{exp}: no trials yet")
        return trials
    board = leaderboard(trials)
    board["status"] = board["status"].map(short_status)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40, "display.float_format", "{:.4g}".format):
        print("\nleaderboard (best validation full match)\n" + board.to_string(index=False))
    print("\n" + status_counts(trials["status"]))
    for _, t in trials[trials["status"].map(status_class).eq("errored")].iterrows():
        print(f"  {t['trial_id']} {short_status(t['status'])}: {error_reason(t['status'])}")
    done = trials[trials["best_val_full_match"].notna()]
    if len(done):
        best = done.loc[done["best_val_full_match"].idxmax()]
        print(f"best trial {best['trial_id']}: val_full_match {best['best_val_full_match']:.4f} at step {best['best_step']}")
        for name in sweep["space"]:
            if name in best and not pd.isna(best[name]):  # NaN: not searched in this trial (focal settings of a ctc trial)
                print(f"  {name} = {best[name]:.4g}" if isinstance(best[name], float) else f"  {name} = {best[name]}")
    for w in edge_warnings(trials, sweep["space"], max_steps=sweep["base"].get("max_steps")):
        print(w)
    try:
        ckpt, origin = best_in_hindsight(exp)
        print(f"best checkpoint: {ckpt}")
    except FileNotFoundError as e:
        print(str(e))
    return trials
