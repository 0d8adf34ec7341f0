"""A sweep experiment as two pandas tables (trials, history), readable while it runs or after.

Reads only the storage path: Tune's experiment state and result files, and sweep.json.
"""

from __future__ import annotations

import json
import math
import re

import pandas as pd

from search import status
from trainable import storage
from trainable.config import STEP_SETTINGS
from trainable.errors import UserError
from trainable.metric import METRIC

HISTORY_COLUMNS = ["step", "lr", "train_loss", "val_full_match", "val_char_acc", "val_loss", "val_score", "train_seconds",
                   "images_per_s", "diverged", "start_step", "node_id", "checkpoint_path", "time_total_s", "timestamp"]
METRICS = ["val_full_match", "val_char_acc", "val_loss", METRIC]  # reported per trial; the best report is chosen by METRIC


def load_sweep(exp) -> dict:
    path = storage.join(storage.normalize(exp), "sweep.json")
    if not storage.exists(path):
        raise FileNotFoundError(f"no sweep at {exp} (no sweep.json); give STORAGE/NAME of a `captcha-tune sweep`")
    return json.loads(storage.read_text(path))


FAILED = ("diverged", "errored")  # kinds without a final result
LABELS = {"completed": "completed", "asha": "stopped by ASHA", "budget": "stopped by the time budget",
          "diverged": "diverged", "errored": "errored", "running": "running/pending"}


def short_statuses(trials: pd.DataFrame) -> pd.Series:
    """status.short(kind, step) of each trial: 'completed', 'ASHA@200', 'diverged@450', ..."""
    return pd.Series([status.short(k, None if pd.isna(s) else int(s)) for k, s in zip(trials["status"], trials["status_step"])],
                     index=trials.index, dtype=object)


def check_errored(trials: pd.DataFrame) -> None:
    """Raise a one-line UserError when trials errored or diverged and none finished: the sweep found nothing.

    '8 of 8 trials errored: 8 x loss must be 'focal' or 'ce', not 'x''; reasons that differ only in their
    numbers (the step and LR of a divergence) count together, most common first.
    """
    if not len(trials):
        return
    failed = trials[trials["status"].isin(FAILED)]
    if not len(failed) or trials["status"].isin(status.FINISHED).any():
        return
    groups: dict[str, list[str]] = {}
    for kind, reason in zip(failed["status"], failed["reason"]):
        groups.setdefault(re.sub(r"\d[\d.e+-]*", "#", reason or kind), []).append(reason or kind)
    counted = [f"{len(g)} x {g[0]}" + ("" if len(set(g)) == 1 else " (numbers vary)") for g in sorted(groups.values(), key=len, reverse=True)]
    raise UserError(f"{len(failed)} of {len(trials)} trials errored: " + " | ".join(counted))


def status_counts(kinds: pd.Series) -> str:
    """'N trials: a completed, b stopped by ASHA, c diverged, ...': completed always, the other kinds when some trial has them."""
    n = kinds.value_counts()
    return f"{len(kinds)} trial{'s' if len(kinds) != 1 else ''}: " + ", ".join(
        f"{n.get(k, 0)} {label}" for k, label in LABELS.items() if k == "completed" or n.get(k, 0))


def load(exp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials: one row per trial, history: one row per report)."""
    from ray.tune import ExperimentAnalysis

    sweep = load_sweep(exp)
    params, workers = list(sweep["space"]), sweep["settings"]["workers_per_trial"]
    gpus = sweep["settings"]["gpus_per_worker"] * workers
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
        end = status.read(exp, t.trial_id)  # search/status.py owns a trial's fate
        row.update(best_step=int(best["step"]) if len(ok) else 0, steps_run=steps, status=end["kind"], status_step=end["step"],
                   reason=end["reason"], wall_seconds=wall, worker_seconds=wall * workers, gpu_seconds=wall * gpus)
        trials.append(row)
    history = pd.concat(history, ignore_index=True) if history else pd.DataFrame(columns=["trial_id", *HISTORY_COLUMNS])
    trials = pd.DataFrame(trials)
    if len(trials):
        trials["status_step"] = trials["status_step"].astype("Int64")  # None where a kind has no step
    return trials, history


def write_tables(exp, out=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write trials.parquet and history.parquet (default: EXP/results/) and return them."""
    trials, history = load(exp)
    out = out or storage.join(storage.normalize(exp), "results")
    storage.write_bytes(storage.join(out, "trials.parquet"), trials.to_parquet(index=False))
    storage.write_bytes(storage.join(out, "history.parquet"), history.to_parquet(index=False))
    return trials, history


HARD_CEILINGS = {"augment": 2.0}  # TrainConfig rejects more


def hard_limits(name: str, p: dict, max_steps: int | None = None) -> tuple[float | None, float | None]:
    """(floor, ceiling) that no range of `name` can pass, None where a range can be widened that way.

    search/space.py rejects bounds below 0 (log ranges: 0 itself) and step fractions above 1.0 (= max_steps);
    a cosine period is at least one step.
    """
    floor = None if p["kind"] == "log" else STEP_SETTINGS.get(name, 0)
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
    best = best_trial(trials)
    if best is None:
        return []
    out = []
    for name, p in space.items():
        if p["kind"] == "choice" or p["high"] <= p["low"] or pd.isna(best.get(name)):  # not searched in its trial (focal in a ctc one)
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


def best_trial(trials: pd.DataFrame):
    """The trial the leaderboard lists first, as ASHA, the searcher and the best checkpoint rank: by its best val_score
    (full match, ties broken by per-character accuracy); None before any report."""
    key = f"best_{METRIC}"
    done = trials[trials[key].notna()] if key in trials else trials.iloc[0:0]  # a table of no trials has no columns
    return done.loc[done[key].idxmax()] if len(done) else None


def leaderboard(trials: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    cols = ["trial_id", "best_val_full_match", "best_step", "steps_run", "status"] + [c for c in trials.columns if c not in
            ("trial_id", "status", "status_step", "reason", "steps_run", "best_step", "wall_seconds", "worker_seconds", "gpu_seconds")
            and not c.startswith(("best_", "last_"))]
    return trials.sort_values(f"best_{METRIC}", ascending=False, na_position="last", kind="stable")[cols].head(top)  # ranked as everything is


def matches(row, point: dict) -> bool:
    """Whether a trials-table row ran the config `point` (floats compared to 1e-6)."""
    for k, v in point.items():
        x = row.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if x is None or pd.isna(x) or not math.isclose(float(x), float(v), rel_tol=1e-6, abs_tol=1e-12):
                return False
        elif x != v:
            return False
    return True


def start_point_trial(trials: pd.DataFrame, point: dict | None):
    """The trials-table row that ran a start point (sweep.json's 'reference' or 'recommended'), None when none did."""
    return next((r for _, r in trials.iterrows() if point and matches(r, point)), None)


def start_point_results(trials: pd.DataFrame, sweep: dict) -> list[str]:
    """'the reference config: 5.8% (trial t1, completed)', and the same for the recommended config when it ran."""
    out = []
    for label, point in (("reference", sweep.get("reference")), ("recommended", sweep.get("recommended"))):
        row = start_point_trial(trials, point)
        if row is not None and not pd.isna(row["best_val_full_match"]):
            out.append(f"the {label} config: {row['best_val_full_match']:.1%} (trial {row['trial_id']}, {row['status']} at step {row['steps_run']})")
    return out


def validation_images(sweep: dict) -> int | None:
    """How many images each trial is validated on (the sweep's dataset), None when its data can't be read now."""
    from trainable.data import dataset_meta

    try:
        return int(dataset_meta(sweep["base"]["data_dir"])["counts"]["val"])
    except (OSError, KeyError, UserError):  # data moved or deleted since the sweep: the tables still read
        return None


def noise_line(trials: pd.DataFrame, val_images: int | None) -> str | None:
    """The trials whose best full match is within two standard errors of the best trial's (one evaluation on
    `val_images` images, binomial at the best's score): one seed moves a config that much, so their order is not
    evidence. None when no other trial is that close."""
    best = best_trial(trials)
    if best is None or not val_images:
        return None
    p = min(max(float(best["best_val_full_match"]), 1 / val_images), 1 - 1 / val_images)  # 0% or 100% still has an error
    se = math.sqrt(p * (1 - p) / val_images)
    close = trials[(trials["trial_id"] != best["trial_id"]) & (trials["best_val_full_match"] >= best["best_val_full_match"] - 2 * se)]
    if not len(close):
        return None
    return (f"{len(close)} other trial(s) within 2 standard errors ({200 * se:.1f} points, {val_images} validation images) of the best: "
            f"{', '.join(close['trial_id'])}; their order may be seed noise: retrain each (`captcha-tune retrain EXP --trial ID`) to tell them apart")


def print_summary(exp) -> pd.DataFrame:
    """Print the leaderboard (short statuses, the long reasons under it), the best trial and its edge warnings;
    write the tables; return the trials table."""
    sweep = load_sweep(exp)
    trials, _ = write_tables(exp)
    if not len(trials):
        print(f"{exp}: no trials yet")
        return trials
    short = short_statuses(trials)
    board = leaderboard(trials).assign(status=short)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40, "display.float_format", "{:.4g}".format):
        print("\nleaderboard (best validation full match)\n" + board.to_string(index=False))
    print("\n" + status_counts(trials["status"]))
    listed = (trials.index.isin(board.index) | trials["status"].isin(FAILED)) & trials["reason"].ne("")
    for _, t in trials[listed].iterrows():  # the board's and the failed trials' reasons, whole
        print(f"  {t['trial_id']} {short[t.name]}: {t['reason']}")
    best = best_trial(trials)
    if best is not None:
        print(f"best trial {best['trial_id']}: val_full_match {best['best_val_full_match']:.4f} at step {best['best_step']}")
        for name in sweep["space"]:
            if name in best and not pd.isna(best[name]):  # NaN: not searched in this trial (focal settings of a ctc trial)
                print(f"  {name} = {best[name]:.4g}" if isinstance(best[name], float) else f"  {name} = {best[name]}")
        for line in start_point_results(trials, sweep):
            print(f"  vs {line}")
        if line := noise_line(trials, validation_images(sweep)):
            print(f"  {line}")
    for w in edge_warnings(trials, sweep["space"], max_steps=sweep["base"].get("max_steps")):
        print(w)
    try:
        from results.checkpoints import best  # checkpoints reads METRICS from here

        ckpt, origin = best(exp)
        print(f"best checkpoint: {ckpt}")
    except FileNotFoundError as e:
        print(str(e))
    return trials
