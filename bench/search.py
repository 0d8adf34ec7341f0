"""Does the search pay? Best val_full_match against worker-seconds spent, per search strategy.

One dataset (easy, generated once into bench/.cache), one budget of wall seconds per arm
(`SweepSettings.time_budget_s`; trials of 2 workers, so worker-seconds = 2 x trial wall time), arms:
  (a) reference: the original config alone, one trial, max_steps sized to fill the budget;
  (b) random:    random search, every trial to max_steps;
  (c) tpe_asha:  the sweep's defaults, TPE + ASHA.
Each arm runs with >= 2 seeds (the sampler's and the trials' weight-init/batch-order seed). The curve
of an arm is built from its report timestamps: at each report, worker-seconds used so far by all its
trials (trial start = report timestamp - Tune's time_total_s) against the best val_full_match so far.
The headline: the share of (b)'s budget that (c) needs to reach (b)'s final best (goal <= 1/3).
Finished arms are kept in bench/.cache/search and reused by a rerun with the same settings.

    python -m bench.search                                   # the CPU size: 3 arms x 2 seeds x 270 s (~30 min, 2 cores)
    python -m bench.search --budget-s 1500 --max-steps 800   # trials long enough to learn on 2 cores (~2.5 h)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from bench.common import CACHE, RESULTS, Row, easy_data, median, pyplot, read_json, write_json

ARMS = {
    "reference": dict(searcher="tpe", scheduler="none", label="(a) reference config alone"),
    "random": dict(searcher="random", scheduler="none", label="(b) random search, no pruning"),
    "tpe_asha": dict(searcher="tpe", scheduler="asha", label="(c) TPE + ASHA (defaults)"),
}
WORKERS = 2
MEANINGFUL = 0.05  # (b)'s final best below this (5% full match): the search found nothing, the share is not judged
SIZES = dict(
    # 3 arms x 2 seeds x 4.5 min ~ 28 min on 2 cores. Trials are the cpu preset's shape (warmup 2%, cosine
    # period 50%) at 300 instead of 500 steps: a 500-step trial takes ~110 s with its ~25 s start-up
    # (overhead.json), so (b) would get two trials, one of them the reference.
    full=dict(arms=("reference", "random", "tpe_asha"), seeds=(0, 1), budget_s=270, num_samples=12,
              train=dict(max_steps=300, eval_every=30, warmup_steps=6, cosine_period=150)),
    quick=dict(arms=("reference", "random", "tpe_asha"), seeds=(0,), budget_s=40, num_samples=3,
               train=dict(max_steps=20, eval_every=10, warmup_steps=2, cosine_period=20)),
)


def reference_steps(size: dict, out) -> int:
    """max_steps of arm (a): what one trial runs in the budget, from overhead.json's trials when present."""
    train, every = size["train"], size["train"]["eval_every"]
    measured = read_json(out, "overhead") or read_json(RESULTS, "overhead")
    if measured:
        t, measured_steps = measured["trials"], measured["settings"]["train"]["max_steps"]
        startup = median(x["startup_s"] for x in t)
        per_step = median((x["wall_s"] - x["startup_s"]) / measured_steps for x in t)  # training + evals
        steps = (0.9 * size["budget_s"] - startup) / per_step  # 10% for the trial actor's start and evals
    else:
        steps = 3 * train["max_steps"]
    return max(every, int(steps // every) * every)


def curve(history, workers: int = WORKERS) -> tuple[list[float], list[float], float]:
    """(worker-seconds at each report, best val_full_match so far, worker-seconds used in all).

    A trial's start is its first report's timestamp minus Tune's time_total_s; its end, its last report
    (a trial stopped by the time budget between reports loses that partial interval here).
    """
    if "val_full_match" not in history or "timestamp" not in history:  # no trial reported (all errored)
        return [], [], 0.0
    history = history.dropna(subset=["timestamp", "time_total_s"])
    spans = {}
    for trial_id, h in history.groupby("trial_id"):
        first = h.loc[h["time_total_s"].idxmin()]
        spans[trial_id] = (float(first["timestamp"] - first["time_total_s"]), float(h["timestamp"].max()))

    def used(t: float) -> float:
        return workers * sum(max(0.0, min(t, end) - start) for start, end in spans.values())

    reports = history.dropna(subset=["val_full_match"]).copy()
    reports["at"] = [start + tt for start, tt in zip((spans[i][0] for i in reports["trial_id"]), reports["time_total_s"])]
    reports = reports.sort_values("at")
    xs = [used(t) for t in reports["at"]]
    ys = list(np.maximum.accumulate(reports["val_full_match"].to_numpy())) if len(reports) else []
    return xs, [float(y) for y in ys], used(max((e for _, e in spans.values()), default=0.0))


def best_at(xs: list[float], ys: list[float], grid: np.ndarray) -> np.ndarray:
    """Step-interpolated best-so-far on a grid (0 before the first report)."""
    idx = np.searchsorted(np.asarray(xs), grid, side="right") - 1
    return np.where(idx >= 0, np.asarray(ys + [0.0])[idx], 0.0)


def reach(xs: list[float], ys: list[float], target: float) -> float:
    """Worker-seconds at which the best first reaches `target` (inf if never)."""
    return next((x for x, y in zip(xs, ys) if y >= target), math.inf)


def wait_for_free_cpus(timeout_s: float = 300) -> float:
    """Seconds until every CPU of the cluster is free again. A trial that Tune stops (time budget, ASHA)
    leaves its Train workers' placement group behind for a while; the next arm's first trial would wait
    for it and may hit the worker-group start timeout."""
    import ray

    t0 = time.time()
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0) and time.time() - t0 < timeout_s:
        time.sleep(1)
    return time.time() - t0


def run_arm(arm: str, seed: int, size: dict, train: dict, data_dir: str, root: Path) -> dict:
    from results.experiment import load
    from search.sweep import SweepSettings, run_sweep
    from trainable.config import TrainConfig

    name = f"{arm}-s{seed}"
    key = dict(arm=arm, seed=seed, budget_s=size["budget_s"], num_samples=size["num_samples"], train=train, data=data_dir)
    done = root / name / "bench_done.json"
    if done.exists() and json.loads(done.read_text())["key"] == key:
        print(f"search {name}: reusing the finished run in {done.parent}", flush=True)
        return json.loads(done.read_text())["result"]
    shutil.rmtree(root / name, ignore_errors=True)
    waited = wait_for_free_cpus()
    settings = SweepSettings(storage=str(root), name=name, data=data_dir, num_samples=1 if arm == "reference" else size["num_samples"],
                             workers_per_trial=WORKERS, time_budget_s=size["budget_s"], seed=seed,
                             searcher=ARMS[arm]["searcher"], scheduler=ARMS[arm]["scheduler"])
    exp = run_sweep(settings, TrainConfig(seed=seed, **train))
    trials, history = load(exp)
    xs, ys, used = curve(history)
    errored = int(trials["status"].str.startswith("errored").sum()) if len(trials) else 0
    result = dict(worker_s=xs, best=ys, used_worker_s=used, final_best=ys[-1] if ys else 0.0, n_trials=len(trials), n_errored=errored,
                  waited_for_free_cpus_s=waited, trials=json.loads(trials.to_json(orient="records")), train=train)
    done.write_text(json.dumps(dict(key=key, result=result)))
    return result


def sized(budget_s: float, max_steps: int, seeds: int, arms: list[str], num_samples: int) -> dict:
    """A custom size (e.g. a GPU cluster's): trials of the cpu preset's shape at max_steps."""
    return dict(arms=tuple(arms), seeds=tuple(range(seeds)), budget_s=budget_s, num_samples=num_samples,
                train=dict(max_steps=max_steps, eval_every=max(1, max_steps // 10), warmup_steps=max(1, max_steps // 50), cosine_period=max_steps // 2))


def run(out, quick: bool = False, size: dict | None = None) -> dict:
    from cluster.connect import init_ray

    size = size or SIZES["quick" if quick else "full"]
    data_dir = easy_data(quick)
    root = CACHE / ("search-quick" if quick else "search")
    if quick:
        shutil.rmtree(root, ignore_errors=True)
    init_ray()
    ref_steps = reference_steps(size, out)
    runs = {}
    for seed in size["seeds"]:
        for arm in size["arms"]:
            train = dict(size["train"], max_steps=ref_steps, cosine_period=ref_steps // 2) if arm == "reference" else size["train"]
            runs.setdefault(arm, {})[str(seed)] = r = run_arm(arm, seed, size, train, data_dir, root)
            print(f"search {arm} seed {seed}: best {r['final_best']:.3f} after {r['used_worker_s']:.0f} worker-s, {r['n_trials']} trials "
                  f"({r.get('n_errored', 0)} errored); waited {r.get('waited_for_free_cpus_s', 0):.0f} s for free CPUs first", flush=True)
    result = dict(settings=dict(size, workers_per_trial=WORKERS, reference_max_steps=ref_steps, data=data_dir), runs=runs)
    result.update(headline(runs))
    plot(result, Path(out) / "search.png")
    write_json(out, "search", result)
    return result


def headline(runs: dict) -> dict:
    """Per seed: (c)'s worker-seconds to reach (b)'s final best, over (b)'s worker-seconds."""
    out = dict(final_best={arm: {s: r["final_best"] for s, r in rs.items()} for arm, rs in runs.items()})
    if "random" in runs and "tpe_asha" in runs:
        shares = {}
        for s, b in runs["random"].items():
            c = runs["tpe_asha"].get(s)
            if c:  # (b) never above 0: nothing to reach
                shares[s] = reach(c["worker_s"], c["best"], b["final_best"]) / b["used_worker_s"] if b["final_best"] > 0 else math.nan
        known = [v for v in shares.values() if not math.isnan(v)]
        out.update(c_share_of_b_budget=shares, c_share_of_b_budget_median=median(known) if known else math.nan,
                   b_final_best_median=median(b["final_best"] for b in runs["random"].values()))
    return out


def plot(r: dict, path: Path) -> None:
    plt = pyplot()
    colors = dict(reference="#7f7f7f", random="#1f77b4", tpe_asha="#d62728")
    runs = r["runs"]
    end = max(x["used_worker_s"] for rs in runs.values() for x in rs.values())
    grid = np.linspace(0, end, 400)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for arm, rs in runs.items():
        ys = np.array([best_at(x["worker_s"], x["best"], grid) for x in rs.values()])
        n = len(rs)
        ax.plot(grid, np.median(ys, axis=0), color=colors[arm], lw=2, label=f"{ARMS[arm]['label']} (median of {n} seeds)")
        ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=colors[arm], alpha=0.15, step=None)
        for x in rs.values():  # where each seed's arm ended
            ax.plot(x["used_worker_s"], x["final_best"], "|", color=colors[arm], ms=10, mew=2)
    if "c_share_of_b_budget" in r:
        b_best = median(x["final_best"] for x in runs["random"].values())
        ax.axhline(b_best, color=colors["random"], ls=":", lw=1)
        ax.text(0, b_best, " (b)'s final best (median)", va="bottom", fontsize=7, color=colors["random"])
        shares = ", ".join("n/a" if math.isnan(v) else f"{v:.2f}" if math.isfinite(v) else "never" for v in r["c_share_of_b_budget"].values())
        title = f"(c) reaches (b)'s final best after {shares} of (b)'s budget (per seed; goal <= 0.33)" + (
            "" if b_best >= MEANINGFUL else f"\nnot judged: (b) found {b_best:.1%} full match (< {MEANINGFUL:.0%}), trials too short to learn")
    else:
        title = "best validation full match against budget spent"
    ax.set(xlabel=f"cumulative worker-seconds (trial wall time x {WORKERS} workers)", ylabel="best val_full_match so far",
           ylim=(0, min(1.02, 1.15 * max(x["final_best"] for rs in runs.values() for x in rs.values()) + 0.02)))
    ax.set_title(f"Search efficiency, budget {r['settings']['budget_s']} s wall per arm\n{title}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rows(r: dict) -> list[Row]:
    out = [Row("search", f"final best val_full_match, {ARMS[arm]['label']} (median over seeds)", median(v.values()))
           for arm, v in r["final_best"].items()]
    if "c_share_of_b_budget_median" in r:
        share, b_best = r["c_share_of_b_budget_median"], r.get("b_final_best_median", 1.0)
        # reaching a best near 0 proves nothing: the goal is judged only where (b) found a model
        judged = not math.isnan(share) and b_best >= MEANINGFUL
        out.insert(0, Row("search", "share of (b)'s worker-seconds (c) needs to reach (b)'s final best (median over seeds)"
                          + ("" if judged else f"; not judged: (b)'s best {b_best:.1%} < {MEANINGFUL:.0%}"),
                          share, "<= 0.33", (share <= 1 / 3) if judged else None))
    if "reference" in r["final_best"] and "tpe_asha" in r["final_best"]:
        out.append(Row("search", "(c) final best / (a) final best (median over seeds)",
                       median(r["final_best"]["tpe_asha"].values()) / max(1e-9, median(r["final_best"]["reference"].values())), "> 1",
                       median(r["final_best"]["tpe_asha"].values()) > median(r["final_best"]["reference"].values())))
    return out


def main() -> None:
    import argparse

    full = SIZES["full"]
    p = argparse.ArgumentParser(prog="python -m bench.search", description="search efficiency; with no size flags, the 30-minute CPU size")
    p.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--budget-s", type=float, help=f"wall seconds per arm and seed (default {full['budget_s']})")
    p.add_argument("--max-steps", type=int, help=f"steps of a search trial (default {full['train']['max_steps']})")
    p.add_argument("--seeds", type=int, default=len(full["seeds"]))
    p.add_argument("--arms", nargs="+", default=list(full["arms"]), choices=list(ARMS))
    p.add_argument("--num-samples", type=int, default=full["num_samples"], help="trials an arm may start (the budget ends it first)")
    args = p.parse_args()
    custom = args.budget_s or args.max_steps
    size = sized(args.budget_s or full["budget_s"], args.max_steps or full["train"]["max_steps"], args.seeds, args.arms, args.num_samples) if custom else None
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run(args.out, args.quick, size)


if __name__ == "__main__":
    main()
