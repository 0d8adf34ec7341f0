"""Does the search pay? Best val_full_match against worker-seconds, per arm, in one wall budget per arm and seed:
(a) the reference config alone, one trial filling the budget (sized from the other arms' trials of the same seed);
(b) plain random search after the reference (what a hand-written Ray Tune script does); (c) captcha-tune's defaults:
the reference, then the recommended config (search/space.py RECOMMENDED), then TPE, with ASHA.

    python -m bench.search                                   # 3 arms x 2 seeds x 270 s (~30 min, 2 cores)
    python -m bench.search --budget-s 1500 --max-steps 800   # trials long enough to learn on 2 cores (~2.5 h)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path
from statistics import median

import numpy as np

from bench.common import CACHE, RESULTS, Row, easy_data, write_json

ARMS = {
    "reference": dict(searcher="tpe", scheduler="none", recommended=False, label="(a) reference config alone"),
    "random": dict(searcher="random", scheduler="none", recommended=False, label="(b) random search, no pruning"),
    "tpe_asha": dict(searcher="tpe", scheduler="asha", recommended=True, label="(c) defaults: reference, recommended, then TPE; ASHA"),
}
WORKERS = 2
MEANINGFUL = 0.05  # (b)'s final best below this (5% full match): the search found nothing, the share is not judged


def sized(budget_s: float, max_steps: int, seeds: int, num_samples: int, arms=tuple(ARMS)) -> dict:
    return dict(arms=tuple(arms), seeds=tuple(range(seeds)), budget_s=budget_s, num_samples=num_samples,
                train=dict(max_steps=max_steps, eval_every=max(10, max_steps // 10),  # the cpu preset's shape
                           warmup_steps=max(1, max_steps // 50), cosine_period=max_steps // 2))


# 300 steps: a 500-step trial takes ~110 s with its ~25 s start-up, (b) would get two trials in 270 s
SIZES = dict(full=sized(270, 300, 2, 12), quick=sized(40, 20, 1, 3))


def reference_steps(arms: list[dict], budget_s: float, every: int, max_steps: int) -> int:
    """max_steps of arm (a) sized from this seed's other arms: wall seconds = start-up + steps x per-step, fitted over
    their trials (ASHA stops and the budget give several lengths); 3 x a search trial's when they ran one length."""
    steps, wall = zip(*[(t["steps_run"], t["wall_seconds"]) for a in arms for t in a["trials"] if t["steps_run"] and t["wall_seconds"]] or [(0, 0)])
    per_step, startup = np.polyfit(steps, wall, 1) if len(set(steps)) > 1 else (0.0, 0.0)
    if per_step <= 0:
        return 3 * max_steps
    return max(every, int((0.9 * budget_s - max(0.0, startup)) / per_step // every) * every)


def curve(history) -> tuple[list[float], list[float], float]:
    """(worker-seconds at each report, best val_full_match so far, worker-seconds used in all); a trial runs from
    its first report's timestamp minus Tune's time_total_s to its last report."""
    if "val_full_match" not in history or "timestamp" not in history:  # no trial reported (all errored)
        return [], [], 0.0
    h = history.dropna(subset=["timestamp", "time_total_s"])
    by_trial = h.assign(start=h["timestamp"] - h["time_total_s"]).sort_values("time_total_s", kind="stable").groupby("trial_id")
    start, end = by_trial["start"].first(), by_trial["timestamp"].max()

    def used(t: float) -> float:
        return WORKERS * float((np.minimum(t, end) - start).clip(lower=0).sum())

    reports = h.dropna(subset=["val_full_match"])
    at = (reports["trial_id"].map(start) + reports["time_total_s"]).to_numpy()
    order = np.argsort(at, kind="stable")
    best = np.maximum.accumulate(reports["val_full_match"].to_numpy()[order])
    return [used(t) for t in at[order]], best.tolist(), used(end.max() if len(end) else 0.0)


def run_arm(arm: str, seed: int, size: dict, train: dict, data_dir: str) -> dict:
    import ray

    from results.experiment import load
    from search.sweep import SweepSettings, run_sweep
    from trainable.config import TrainConfig

    name, root = f"{arm}-s{seed}", CACHE / "search"
    shutil.rmtree(root / name, ignore_errors=True)
    t0 = time.time()  # wait for every CPU: a stopped trial's placement group lingers; the next could time out on it
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0) and time.time() - t0 < 300:
        time.sleep(1)
    waited = time.time() - t0
    settings = SweepSettings(storage=str(root), name=name, data=data_dir, num_samples=1 if arm == "reference" else size["num_samples"],
                             workers_per_trial=WORKERS, time_budget_s=size["budget_s"], seed=seed,
                             searcher=ARMS[arm]["searcher"], scheduler=ARMS[arm]["scheduler"], recommended=ARMS[arm]["recommended"])
    trials, history = load(run_sweep(settings, TrainConfig(seed=seed, **train)))
    xs, ys, used = curve(history)
    return dict(worker_s=xs, best=ys, used_worker_s=used, final_best=ys[-1] if ys else 0.0, n_trials=len(trials),
                n_errored=int(trials["status"].isin(["errored", "diverged"]).sum()) if len(trials) else 0,
                waited_for_free_cpus_s=waited, trials=json.loads(trials.to_json(orient="records")), train=train)


def share(b: dict, c: dict) -> float:
    """The worker-seconds arm (c) needed to reach arm (b)'s final best, over (b)'s; nan where (b) found nothing."""
    reached = next((x for x, y in zip(c["worker_s"], c["best"]) if y >= b["final_best"]), math.inf)
    return reached / b["used_worker_s"] if b["final_best"] > 0 else math.nan


def run(out, quick: bool = False, size: dict | None = None) -> dict:
    from cluster.connect import init_ray

    size = size or SIZES["quick" if quick else "full"]
    data_dir = easy_data(quick)
    init_ray()
    runs = {arm: {} for arm in size["arms"]}
    for seed in size["seeds"]:
        for arm in sorted(size["arms"], key=lambda a: a == "reference"):  # (a) last, sized from this seed's other arms
            steps = reference_steps([rs[str(seed)] for rs in runs.values() if str(seed) in rs], size["budget_s"],
                                    size["train"]["eval_every"], size["train"]["max_steps"])
            train = dict(size["train"], max_steps=steps, cosine_period=steps // 2) if arm == "reference" else size["train"]
            runs[arm][str(seed)] = r = run_arm(arm, seed, size, train, data_dir)
            print(f"search {arm} seed {seed}: best {r['final_best']:.3f} after {r['used_worker_s']:.0f} worker-s, {r['n_trials']} trials "
                  f"({r['n_errored']} errored); waited {r['waited_for_free_cpus_s']:.0f} s for free CPUs first", flush=True)
    result = dict(settings=dict(size, workers_per_trial=WORKERS, data=data_dir), runs=runs,
                  final_best={arm: {s: r["final_best"] for s, r in rs.items()} for arm, rs in runs.items()})
    if "random" in runs and "tpe_asha" in runs:
        shares = {s: share(b, runs["tpe_asha"][s]) for s, b in runs["random"].items() if s in runs["tpe_asha"]}
        known = [v for v in shares.values() if not math.isnan(v)]
        result.update(c_share_of_b_budget=shares, c_share_of_b_budget_median=median(known) if known else math.nan,
                      b_final_best_median=median(b["final_best"] for b in runs["random"].values()))
    write_json(out, "search", result, plot(result))
    return result


def plot(r: dict):
    from matplotlib.figure import Figure

    colors, runs = dict(reference="#7f7f7f", random="#1f77b4", tpe_asha="#d62728"), r["runs"]
    grid = np.linspace(0, max(x["used_worker_s"] for rs in runs.values() for x in rs.values()), 400)
    ax = Figure(figsize=(8, 4.8), layout="tight").subplots()
    for arm, rs in runs.items():  # best so far on the grid, 0 before the first report (index -1: the appended 0)
        ys = np.array([np.append(x["best"], 0.0)[np.searchsorted(x["worker_s"], grid, side="right") - 1] for x in rs.values()])
        ax.plot(grid, np.median(ys, axis=0), color=colors[arm], lw=2, label=f"{ARMS[arm]['label']} (median of {len(rs)} seeds)")
        ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=colors[arm], alpha=0.15)
        for x in rs.values():  # where each seed's arm ended
            ax.plot(x["used_worker_s"], x["final_best"], "|", color=colors[arm], ms=10, mew=2)
    title = "best validation full match against budget spent"
    if "c_share_of_b_budget" in r:
        b_best = median(x["final_best"] for x in runs["random"].values())
        ax.axhline(b_best, color=colors["random"], ls=":", lw=1)
        ax.text(0, b_best, " (b)'s final best (median)", va="bottom", fontsize=7, color=colors["random"])
        shares = ", ".join("n/a" if math.isnan(v) else f"{v:.2f}" if math.isfinite(v) else "never" for v in r["c_share_of_b_budget"].values())
        title = f"(c) reaches (b)'s final best after {shares} of (b)'s budget (per seed; goal <= 0.33)" + (
            "" if b_best >= MEANINGFUL else f"\nnot judged: (b) found {b_best:.1%} full match (< {MEANINGFUL:.0%}), trials too short to learn")
    ax.set(xlabel=f"cumulative worker-seconds (trial wall time x {WORKERS} workers)", ylabel="best val_full_match so far",
           ylim=(0, min(1.02, 1.15 * max(x["final_best"] for rs in runs.values() for x in rs.values()) + 0.02)))
    ax.set_title(f"Search efficiency, budget {r['settings']['budget_s']} s wall per arm\n{title}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return ax.figure


def rows(r: dict) -> list[Row]:
    best = {arm: median(v.values()) for arm, v in r["final_best"].items()}
    out = [Row("search", f"final best val_full_match, {ARMS[arm]['label']} (median over seeds)", v) for arm, v in best.items()]
    if "c_share_of_b_budget_median" in r:
        share, b_best = r["c_share_of_b_budget_median"], r["b_final_best_median"]
        judged = not math.isnan(share) and b_best >= MEANINGFUL  # reaching a best near 0 proves nothing
        out.insert(0, Row("search", "share of (b)'s worker-seconds (c) needs to reach (b)'s final best (median over seeds)"
                          + ("" if judged else f"; not judged: (b)'s best {b_best:.1%} < {MEANINGFUL:.0%}"),
                          share, "<= 0.33", (share <= 1 / 3) if judged else None))
    if "reference" in best and "tpe_asha" in best:
        out.append(Row("search", "(c) final best / (a) final best (median over seeds)", best["tpe_asha"] / max(1e-9, best["reference"]), "> 1",
                       best["tpe_asha"] > best["reference"]))
    return out


def main() -> None:
    full = SIZES["full"]
    p = argparse.ArgumentParser(prog="python -m bench.search", description="search efficiency; with no size flags, the 30-minute CPU size")
    p.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--budget-s", type=float, default=full["budget_s"], help="wall seconds per arm and seed")
    p.add_argument("--max-steps", type=int, default=full["train"]["max_steps"], help="steps of a search trial")
    p.add_argument("--seeds", type=int, default=len(full["seeds"]))
    p.add_argument("--arms", nargs="+", default=list(full["arms"]), choices=list(ARMS))
    p.add_argument("--num-samples", type=int, default=full["num_samples"], help="trials an arm may start (the budget ends it first)")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run(args.out, args.quick, None if args.quick else sized(args.budget_s, args.max_steps, args.seeds, args.num_samples, args.arms))


if __name__ == "__main__":
    main()
