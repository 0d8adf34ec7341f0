"""Plots of a sweep from its two tables (trials, history): each function writes one PNG and returns its path.

Learning curves, each searched parameter against the best metric (the tuning playbook's check for a best
point on the search boundary), the LR schedules of the top trials, and Optuna's parameter importances.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from results.experiment import LABELS, best_trial, matches  # noqa: E402
from search.status import FINISHED  # noqa: E402
from trainable.schedule import lr_at  # noqa: E402

SHOWN = "best_val_full_match"  # what the plots show; trials are ranked by trainable.metric.METRIC
STATUS_STYLE = {  # status kind (search/status.py) -> line/marker style; legends say results.experiment.LABELS
    "completed": dict(color="tab:green", lw=1.8, alpha=0.9),
    "asha": dict(color="tab:orange", lw=1.2, alpha=0.8, zorder=3),  # above the completed lines they share
    "budget": dict(color="tab:brown", lw=1.0, alpha=0.7),
    "diverged": dict(color="tab:red", lw=1.0, alpha=0.8, ls="--", zorder=3),
    "errored": dict(color="tab:purple", lw=1.0, alpha=0.8, ls="--", zorder=3),
    "running": dict(color="tab:gray", lw=1.0, alpha=0.7, ls=":"),
}
ENDED_EARLY = ("asha", "diverged", "errored")  # an x where the curve ends


def _message(out, text: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    ax.axis("off")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return str(out)


def learning_curves(history: pd.DataFrame, trials: pd.DataFrame, out, rungs=()) -> str:
    """val_full_match vs step, one line per trial coloured by its status; dotted lines at the ASHA rungs."""
    if not {"step", "val_full_match"} <= set(history.columns) or history["val_full_match"].notna().sum() == 0:
        return _message(out, "no validation reports yet")
    statuses = dict(zip(trials["trial_id"], trials["status"])) if len(trials) else {}
    counts = {}
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for tid, h in history[history["val_full_match"].notna()].groupby("trial_id", sort=True):
        h = h.sort_values("step")
        kind = statuses.get(tid, "running")
        counts[kind] = counts.get(kind, 0) + 1
        style = STATUS_STYLE[kind]
        ax.plot(h["step"], h["val_full_match"], **style)
        if kind in ENDED_EARLY:
            ax.plot(h["step"].iloc[-1], h["val_full_match"].iloc[-1], marker="x", ms=6, color=style["color"], ls="none", zorder=3)
    if "diverged" in history:  # a report of a diverged run (NaN loss): its metrics are not a model's
        d = history[history["diverged"].fillna(0).astype(bool) & history["val_full_match"].notna()]
        if len(d):
            ax.plot(d["step"], d["val_full_match"], marker="v", ms=8, color="black", ls="none", zorder=4, label="diverged report")
    best = best_trial(trials)
    if best is not None:
        ax.plot(best["best_step"], best[SHOWN], marker="*", ms=14, color="gold", mec="black", ls="none", zorder=5,
                label=f"best: {best['trial_id']} ({best[SHOWN]:.3f})")
    for i, r in enumerate(rungs, 1):
        ax.axvline(r, color="black", ls=":", lw=1)
        ax.annotate(f"rung {i}", (r, 1), xycoords=("data", "axes fraction"), xytext=(3, -12), textcoords="offset points", fontsize=8)
    handles = [plt.Line2D([], [], **style, label=f"{LABELS[k]} ({counts[k]})") for k, style in STATUS_STYLE.items() if k in counts]
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    top = max(0.05, history["val_full_match"].max())
    ax.set(xlabel="step", ylabel="val_full_match", title="Validation full match per trial", xlim=(0, None),
           ylim=(-0.04 * top, 1.12 * top))  # below 0 so trials that never matched a captcha stay visible
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return str(out)


def run_curve(history: pd.DataFrame, out, title: str = "Retrain") -> str:
    """One run's validation full match and LR against the step, the best evaluation starred: did it stop rising?"""
    if not len(history):
        return _message(out, "no validation reports")
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    ax.plot(history["step"], history["val_full_match"], marker=".", color="tab:green", label="val_full_match")
    best = history.loc[history["val_full_match"].idxmax()]
    ax.plot(best["step"], best["val_full_match"], marker="*", ms=14, color="gold", mec="black", ls="none", zorder=5,
            label=f"best {best['val_full_match']:.3f} at step {int(best['step'])}")
    ax.set(xlabel="step", ylabel="val_full_match", title=title, xlim=(0, None), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    lr = ax.twinx()
    lr.plot(history["step"], history["lr"], color="tab:blue", alpha=0.35, lw=1)
    lr.set_ylabel("lr at the evaluation", color="tab:blue")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return str(out)


def params_vs_metric(trials: pd.DataFrame, space: dict, out, reference: dict | None = None) -> str:
    """One panel per searched parameter: its value vs best_val_full_match, over the whole search range."""
    done = trials[trials[SHOWN].notna()] if len(trials) and SHOWN in trials else trials.iloc[0:0]
    if not len(done) or not space:
        return _message(out, "no trials with validation reports yet")
    best = best_trial(done)
    top = max(0.05, done[SHOWN].max())
    ref = next((r for _, r in done.iterrows() if reference and matches(r, reference)), None)
    ncols = min(3, len(space))
    nrows = math.ceil(len(space) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax, (name, p) in zip(axes.flat, space.items()):
        if p["kind"] == "choice":
            choices = list(p["choices"])
            to_x = lambda v: choices.index(v) if v in choices else math.nan  # noqa: E731
            ax.set_xticks(range(len(choices)), [str(c) for c in choices])
            ax.set_xlim(-0.5, len(choices) - 0.5)
        else:
            to_x = lambda v: float(v) if v is not None and pd.notna(v) else math.nan  # noqa: E731
            for edge in (p["low"], p["high"]):  # the search range, to see a best point on its boundary
                ax.axvline(edge, color="gray", lw=0.8, ls="--")
            if p["kind"] == "log":
                ax.set_xscale("log")
                pad = (p["high"] / p["low"]) ** 0.04
                ax.set_xlim(p["low"] / pad, p["high"] * pad)
            else:
                pad = 0.04 * (p["high"] - p["low"]) or 0.5
                ax.set_xlim(p["low"] - pad, p["high"] + pad)
        for kind in [k for k in STATUS_STYLE if k in set(done["status"])]:
            g = done[done["status"] == kind]
            ax.scatter([to_x(v) for v in g[name]], g[SHOWN], s=28, color=STATUS_STYLE[kind]["color"], alpha=0.8, label=LABELS[kind])
        if ref is not None:
            ax.scatter([to_x(ref[name])], [ref[SHOWN]], s=140, facecolors="none", edgecolors="black", lw=1.5, label="reference")
        ax.scatter([to_x(best[name])], [best[SHOWN]], s=200, marker="*", color="gold", edgecolors="black", zorder=5, label="best")
        ax.set(xlabel=name + (" (log)" if p["kind"] == "log" else ""), ylabel="best val_full_match", ylim=(-0.04 * top, 1.12 * top))
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    spare = list(axes.flat)[len(space):]
    for ax in spare:
        ax.axis("off")
    if spare:  # the legend in the first empty panel, else beside the top right one
        spare[0].legend(handles, labels, loc="center", fontsize=9)
    else:
        axes.flat[ncols - 1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    fig.suptitle("Searched hyperparameters vs best val_full_match (dashed: search range)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return str(out)


def lr_schedules(trials: pd.DataFrame, base: dict, out, top: int = 5) -> str:
    """The LR schedule (trainable.schedule.lr_at) of the `top` best trials over the base max_steps."""
    done = trials[trials[SHOWN].notna()].sort_values(SHOWN, ascending=False).head(top) if len(trials) and SHOWN in trials else []
    if not len(done):
        return _message(out, "no trials with validation reports yet")
    max_steps = int(base["max_steps"])
    steps = range(0, max_steps + 1, max(1, max_steps // 500))
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    for i, (_, t) in enumerate(done.iterrows()):
        kw = {k: t[k] if k in t and pd.notna(t[k]) else base[k] for k in ("peak_lr", "warmup_steps", "cosine_period")}
        kw = dict(peak_lr=float(kw["peak_lr"]), min_lr=float(base["min_lr"]), warmup_steps=int(kw["warmup_steps"]), cosine_period=int(kw["cosine_period"]))
        ax.plot(list(steps), [lr_at(s, **kw) for s in steps], lw=2.2 if i == 0 else 1.2,
                label=f"{t['trial_id']}: {t[SHOWN]:.3f} ({LABELS[t['status']]})")
    ax.set(xlabel="step", ylabel="learning rate", yscale="log", title=f"LR schedules of the top {len(done)} trials (label: best val_full_match)")
    return _finish(fig, ax, out)


def _finish(fig, ax, out) -> str:
    """Grid, the legend outside on the right, then the PNG at `out`."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return str(out)


def _study(trials: pd.DataFrame, space: dict):
    """An in-memory Optuna study of the finished trials (search.status.FINISHED), valued by best_val_full_match."""
    import optuna

    from search.space import Param, to_optuna

    dists = to_optuna({k: Param(p["kind"], p.get("low", 0.0), p.get("high", 0.0), tuple(p.get("choices") or ())) for k, p in space.items()})
    finished = trials[trials["status"].isin(FINISHED) & trials[SHOWN].notna()]
    study = optuna.create_study(direction="maximize")
    for _, t in finished.iterrows():
        params = {k: (int(t[k]) if isinstance(d, optuna.distributions.IntDistribution) else t[k] if isinstance(d, optuna.distributions.CategoricalDistribution)
                      else float(t[k])) for k, d in dists.items() if k in t and not pd.isna(t[k])}  # NaN: not searched here (focal for ctc)
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params}, value=float(t[SHOWN])))
    return study


def importance(trials: pd.DataFrame, space: dict, out) -> tuple[str, dict]:
    """Optuna fANOVA importances of the searched parameters for best_val_full_match.

    Parameters searched in only some trials (the focal settings, multilabel trials only) are left out
    once trials without them finished: fANOVA takes the parameters every trial has.

    Needs two or more finished (completed or stopped early) trials with different values and different
    parameters (fANOVA's trees can't split otherwise); without them the PNG says so and the dict is empty.
    """
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = _study(trials, space) if len(trials) and space else None
        values = {t.value for t in study.trials} if study else set()
        points = {tuple(sorted(map(str, t.params.items()))) for t in study.trials} if study else set()
        if len(values) < 2 or len(points) < 2:
            return _message(out, "not enough finished trials\nfor parameter importances"), {}
        imp = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    imp = {k: float(v) for k, v in imp.items()}
    names = sorted(imp, key=imp.get)
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.3))
    ax.barh(names, [imp[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(imp[n], i, f" {imp[n]:.2f}", va="center", fontsize=8)
    ax.set(xlabel="importance (sums to 1)", xlim=(0, max(1e-9, max(imp.values())) * 1.2),
           title=f"Parameter importance for best val_full_match\n(fANOVA, {len(study.trials)} finished trials)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return str(out), imp


def cost_table(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Trials in start order with their worker_seconds, the worker-hours spent by the end of each, and the best
    val_full_match so far.

    A trial's cost is the trials table's worker_seconds (its wall time, start-up included, x its workers). Start
    order: the first report's timestamp minus its time_total_s where the history has both, else trial id order
    (Tune numbers trials as it creates them). Trials that ran at the same time are counted one after another, so
    x is the compute spent, not the wall time.
    """
    t = trials.copy()
    if len(history) and {"timestamp", "time_total_s"} <= set(history.columns):
        start = (history["timestamp"] - history["time_total_s"]).groupby(history["trial_id"]).min()
        t["start"] = t["trial_id"].map(start).fillna(math.inf)
    else:
        t["start"] = range(len(t))
    t = t.sort_values(["start", "trial_id"], kind="stable").reset_index(drop=True)
    t["cum_worker_hours"] = t["worker_seconds"].fillna(0).cumsum() / 3600
    t["best_so_far"] = t[SHOWN].fillna(-math.inf).cummax().replace(-math.inf, math.nan)
    return t[["trial_id", "status", "worker_seconds", "cum_worker_hours", SHOWN, "best_so_far"]]


def cost_curve(trials: pd.DataFrame, history: pd.DataFrame, out) -> str:
    """Best-so-far val_full_match against cumulative worker-hours (`cost_table`): the sweep's efficiency at a glance."""
    if not len(trials) or SHOWN not in trials or trials[SHOWN].notna().sum() == 0:
        return _message(out, "no trials with validation reports yet")
    t = cost_table(trials, history)
    fig, ax = plt.subplots(figsize=(8.5, 4))
    x, y = [0.0, *t["cum_worker_hours"]], [math.nan, *t["best_so_far"]]
    ax.step(x, y, where="post", color="black", lw=1.8, label="best so far")
    for kind in [k for k in STATUS_STYLE if k in set(t["status"])]:
        g = t[t["status"] == kind]
        ax.scatter(g["cum_worker_hours"], g[SHOWN], s=28, color=STATUS_STYLE[kind]["color"], alpha=0.85, label=LABELS[kind], zorder=3)
    first = t.loc[t[SHOWN].idxmax()]
    ax.plot(first["cum_worker_hours"], first[SHOWN], marker="*", ms=14, color="gold", mec="black", ls="none", zorder=5,
            label=f"best: {first['trial_id']} ({first[SHOWN]:.3f}) at {first['cum_worker_hours']:.2f} h")
    top = max(0.05, t[SHOWN].max())
    ax.set(xlabel="cumulative worker-hours (trials in start order)", ylabel="val_full_match", xlim=(0, None), ylim=(-0.04 * top, 1.12 * top),
           title=f"Best-so-far val_full_match vs compute ({t['cum_worker_hours'].iloc[-1]:.2f} worker-hours in all)")
    return _finish(fig, ax, out)
