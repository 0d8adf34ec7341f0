"""One markdown report of a sweep (finished or still running): tables, plots, best config and how to reproduce it.

Writes into EXP/results/ (or out_dir): trials.parquet, history.parquet, the PNGs of results/plots.py and
report.md, which embeds the PNGs by relative path so the folder can be moved or viewed on GitHub.
"""

from __future__ import annotations

import math
import os

import pandas as pd

from results import checkpoints, experiment, plots
from search import status
from trainable import storage
from trainable.errors import UserError


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table (tabulate is not a dependency); floats with 4 significant digits."""
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return (f"{v:.4g}" if isinstance(v, float) else str(v)).replace("|", "\\|")

    rows = [[str(c) for c in df.columns], ["---"] * len(df.columns)]
    rows += [[cell(v) for v in r] for r in df.itertuples(index=False)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def _status_lines(trials: pd.DataFrame, short: pd.Series) -> list[str]:
    """The counts of each kind, then every recorded reason, whole."""
    reasons = [f"- `{t['trial_id']}` {short[i]}: {t['reason']}" for i, t in trials[trials["reason"].ne("")].iterrows()]
    return [experiment.status_counts(trials["status"])] + ([""] + reasons if reasons else [])


def with_cost(board: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with each trial's worker_seconds after its status."""
    board = board.copy()
    board.insert(board.columns.get_loc("status") + 1, "worker_seconds", board["trial_id"].map(trials.set_index("trial_id")["worker_seconds"]))
    return board


def _cost_lines(trials: pd.DataFrame, history: pd.DataFrame) -> list[str]:
    """Where in the sweep's compute its best result was first reached."""
    t = plots.cost_table(trials, history)
    if t[plots.SHOWN].notna().sum() == 0:
        return []
    first = t.loc[t[plots.SHOWN].idxmax()]
    total = t["cum_worker_hours"].iloc[-1]
    return [f"The best val_full_match ({first[plots.SHOWN]:.4f}, trial `{first['trial_id']}`, trial {first.name + 1} of {len(t)} by start) "
            f"was reached after {first['cum_worker_hours']:.2f} of {total:.2f} worker-hours ({first['cum_worker_hours'] / total:.0%}); "
            "trials are counted one after another in start order, each at its wall time x its workers.", ""] if total > 0 else []


def write_report(exp, out_dir=None) -> str:
    """Tables, plots and report.md of the sweep at EXP; returns the path of report.md."""
    exp = storage.normalize(exp)
    if out_dir is None and storage.is_uri(exp):
        raise UserError(f"{exp} is remote; give a local folder for the report with --out")
    out = os.path.abspath(out_dir or storage.join(exp, "results"))
    os.makedirs(out, exist_ok=True)
    sweep = experiment.load_sweep(exp)
    space, base, rungs = sweep["space"], sweep["base"], sweep["rungs"]
    trials, history = experiment.write_tables(exp, out)
    s = sweep["settings"]
    md = [f"# Sweep report: `{exp}`", "",
          f"{s['searcher']} searcher, {s['scheduler']} scheduler, {s['num_samples']} trials of {base['max_steps']} steps, "
          f"{s['workers_per_trial']} DDP workers each; ASHA rungs at steps {', '.join(map(str, rungs)) or 'none'}.", ""]
    if not len(trials):
        md += ["No trials yet: the sweep has not started any. Re-run `captcha-tune results` later.", ""]
        return _finish(md, exp, sweep, out)

    short = experiment.short_statuses(trials)  # 'ASHA@200' for 'asha' at step 200
    md += ["## Status", "", *_status_lines(trials, short),
           "", f"Compute: {trials['worker_seconds'].sum() / 3600:.2f} worker-hours, {trials['gpu_seconds'].sum() / 3600:.2f} GPU-hours.", ""]

    board = experiment.leaderboard(trials).assign(status=short)
    md += ["## Leaderboard (best validation full match)", "", markdown_table(with_cost(board, trials)), "",
           "worker_seconds: the trial's wall time (start-up included) x its workers.", ""]

    md += ["## Best configuration", ""]
    best = experiment.best_trial(trials)
    if best is None:
        md += ["No validation report yet.", ""]
    else:
        md += [f"Trial `{best['trial_id']}`: val_full_match {best['best_val_full_match']:.4f} at step {best['best_step']} ({short[best.name]}).", "",
               "```", *[f"{name} = {best[name]}" for name in space], "```", ""]
        md += [f"Against {line}." for line in experiment.start_point_results(trials, sweep)] + [""]
        if line := experiment.noise_line(trials, experiment.validation_images(sweep)):
            md += [line[0].upper() + line[1:] + ".", ""]
        warnings = experiment.edge_warnings(trials, space, max_steps=base.get("max_steps"))
        md += [f"- {w}" for w in warnings] or ["Every best parameter is inside its search range."]
        md += [""]

    path = plots.learning_curves(history, trials, os.path.join(out, "learning_curves.png"), rungs=rungs)
    md += ["## Learning curves", "", f"![learning curves]({os.path.basename(path)})", ""]
    path = plots.cost_curve(trials, history, os.path.join(out, "cost.png"))
    md += ["## Cost: best so far against compute", "", *_cost_lines(trials, history), f"![best so far vs worker-hours]({os.path.basename(path)})", ""]
    path = plots.params_vs_metric(trials, space, os.path.join(out, "params_vs_metric.png"), reference=sweep.get("reference"))
    md += ["## Hyperparameters vs best val_full_match", "",
           "Circle: the reference config; star: the best trial; dashed: the search range.", "",
           f"![hyperparameters vs metric]({os.path.basename(path)})", ""]
    path, imp = plots.importance(trials, space, os.path.join(out, "importance.png"))
    md += ["## Parameter importance", ""]
    finished = trials["status"].isin(status.FINISHED).sum()
    md += [markdown_table(pd.DataFrame(dict(parameter=list(imp), importance=list(imp.values())))), "",
           f"From {finished} finished trials (completed or stopped early, valued by their best val_full_match); "
           "with few trials these are rough.", ""] if imp else \
          ["Not enough finished trials with different results to estimate importances.", ""]
    md += [f"![parameter importance]({os.path.basename(path)})", ""]
    path = plots.lr_schedules(trials, base, os.path.join(out, "lr_schedules.png"))
    md += ["## LR schedules of the top trials", "", f"![LR schedules]({os.path.basename(path)})", ""]

    md += ["## Best checkpoint (best in hindsight over all evaluations)", ""]
    try:
        ckpt, origin = checkpoints.best(exp)
        md += [f"`{ckpt}`", "", f"trial `{origin['trial_id']}` at step {origin['step']}: " +
               ", ".join(f"{m} {origin[m]:.4f}" for m in experiment.METRICS), ""]
    except FileNotFoundError as e:
        md += [str(e), ""]
    return _finish(md, exp, sweep, out)


def _finish(md: list[str], exp: str, sweep: dict, out: str) -> str:
    md += ["## Reproduce", "", "The sweep (re-running it resumes it):", "", "```", sweep.get("command", "(not recorded)"), "```", ""]
    db = storage.join(exp, "optuna.db")
    if not storage.is_uri(exp) and os.path.exists(db):
        md += ["The Optuna study (`pip install optuna-dashboard`):", "", "```", f"optuna-dashboard sqlite:///{db}", "```", ""]
    path = os.path.join(out, "report.md")
    storage.write_text(path, "\n".join(md))
    return path
