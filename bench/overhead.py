"""What a sweep costs beyond training: start-up per trial, time between reports, memory, CPU.

K trials of the cpu preset (2 workers each) one after another (random search, no scheduler) through
`search.sweep.run_sweep` in a fresh embedded Ray; times from Tune's history, memory and CPU with psutil.
"""

from __future__ import annotations

import shutil
import time
from statistics import median

from bench.common import CACHE, ProcessSampler, Row, easy_data, write_json

SIZES = dict(full=dict(trials=3, train=None), quick=dict(trials=2, train=dict(max_steps=20, eval_every=10, warmup_steps=2, cosine_period=20)))


def trial_times(history) -> list[dict]:
    """Per trial, in start order: start (epoch s), wall, first report, training seconds, reports."""
    out = []
    for trial_id, h in history.groupby("trial_id"):
        first, last = h.sort_values("time_total_s").iloc[[0, -1]].itertuples()
        t = dict(trial_id=trial_id, start=float(first.timestamp - first.time_total_s), wall_s=float(last.time_total_s),
                 first_report_s=float(first.time_total_s), train_s=float(last.train_seconds), reports=len(h))
        t["startup_s"] = t["first_report_s"] - float(first.train_seconds)  # to the first step, plus the first eval + report
        t["between_reports_s"] = (t["wall_s"] - t["train_s"] - t["startup_s"]) / max(1, t["reports"] - 1)  # eval, checkpoint, report
        out.append(t)
    return sorted(out, key=lambda t: t["start"])


def run(out, quick: bool = False) -> dict:
    import ray

    from captcha_tune.commands.sweep import PRESETS
    from cluster.connect import init_ray
    from results.experiment import load
    from search.sweep import SweepSettings, run_sweep
    from trainable.config import TrainConfig

    size = SIZES["quick" if quick else "full"]
    shutil.rmtree(CACHE / "overhead", ignore_errors=True)
    base = TrainConfig(**(size["train"] or PRESETS["cpu"]["train"]))
    settings = SweepSettings(storage=str(CACHE / "overhead"), name="overhead", data=easy_data(quick), num_samples=size["trials"],
                             workers_per_trial=2, max_concurrent=1, searcher="random", scheduler="none")
    with ProcessSampler(every=1.0, pss_every=5) as sampler:
        ray.shutdown()  # a fresh Ray (bench.run may have one up already)
        init_ray()
        t1 = time.time()
        exp = run_sweep(settings, base)
        t2 = time.time()
    memory = [dict(t=t - t1, rss=sum(p[2] for p in procs.values()), processes=len(procs),
                   pss=sum(p[3] for p in procs.values()) if all(p[3] >= 0 for p in procs.values()) else None)
              for t, procs in sampler.samples if t1 <= t <= t2]
    cpu = sampler.cpu_seconds(t1, t2)
    trials = trial_times(load(exp)[1])
    sum_train = sum(t["train_s"] for t in trials)
    result = dict(
        sweep_wall_s=t2 - t1, sweep_start=t1, trials=trials, sum_train_s=sum_train,
        first_report_s_median=median(t["first_report_s"] for t in trials), startup_s_median=median(t["startup_s"] for t in trials),
        between_reports_s_median=median(t["between_reports_s"] for t in trials),
        wall_over_train=(t2 - t1) / sum_train, wall_over_trial_wall=(t2 - t1) / sum(t["wall_s"] for t in trials),
        cpu_seconds_by_kind=cpu, workers_share_of_cpu=cpu.get("train workers", 0.0) / sum(cpu.values()),
        peak_rss_bytes=max(m["rss"] for m in memory), peak_pss_bytes=max(m["pss"] or 0 for m in memory),
        peak_processes=max(m["processes"] for m in memory), memory_samples=memory,
        settings=dict(trials=size["trials"], workers_per_trial=2, max_concurrent=1, train=base.to_dict(), data=settings.data),
    )
    print(f"overhead: wall / training {result['wall_over_train']:.3f}, first report {result['first_report_s_median']:.1f} s", flush=True)
    write_json(out, "overhead", result, plot(result))
    return result


def plot(r: dict):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), layout="tight")
    ax, mem = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=[1.2, 1]))
    for i, t in enumerate(r["trials"]):
        s = t["start"] - r["sweep_start"]
        parts = [("start-up (to first step)", t["startup_s"], "#d62728"), ("training (train_seconds)", t["train_s"], "#2ca02c"),
                 ("eval + checkpoint + report", t["wall_s"] - t["train_s"] - t["startup_s"], "#ff7f0e")]
        for label, width, color in parts:
            ax.barh(i, width, left=s, color=color, label=label if i == 0 else None)
            s += width
    ax.axvline(0, color="k", lw=1)
    ax.axvline(r["sweep_wall_s"], color="k", lw=1, ls="--", label="run_sweep returns")
    ax.set_yticks(range(len(r["trials"])), [f"trial {i + 1}" for i in range(len(r["trials"]))])
    ax.set(ylim=(len(r["trials"]) + 0.4, -0.6), xlabel="seconds since run_sweep was called")  # a free row for the legend
    ax.set_title(f"{len(r['trials'])} trials one after another: wall / training = {r['wall_over_train']:.2f} (goal <= 1.1), "
                 f"wall / trial walls = {r['wall_over_trial_wall']:.2f}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.tick_params(labelbottom=True)
    with_pss = [m for m in r["memory_samples"] if m["pss"] is not None]
    mem.plot([m["t"] for m in r["memory_samples"]], [m["rss"] / 2**30 for m in r["memory_samples"]], label="summed RSS")
    mem.plot([m["t"] for m in with_pss], [m["pss"] / 2**30 for m in with_pss], label="summed PSS (shared pages once)")
    mem.set(xlabel="seconds since run_sweep was called ", ylabel="GiB, all sweep processes")
    mem.set_title(f"memory: peak RSS {r['peak_rss_bytes'] / 2**30:.1f} GiB, peak PSS {r['peak_pss_bytes'] / 2**30:.1f} GiB, "
                  f"up to {r['peak_processes']} processes; train workers used {r['workers_share_of_cpu']:.0%} of the sweep's CPU time",
                  fontsize=9)
    mem.legend(fontsize=7)
    return fig


def rows(r: dict) -> list[Row]:
    gib = f"{r['peak_rss_bytes'] / 2**30:.1f} / {r['peak_pss_bytes'] / 2**30:.1f}"
    return [
        Row("overhead", "sweep wall / sum of trials' training time", r["wall_over_train"], "<= 1.1", r["wall_over_train"] <= 1.1),
        # wall time not spent training, per trial: unlike wall / training, not moved by noisy training times
        Row("overhead", "sweep wall - training, per trial (s)", (r["sweep_wall_s"] - r["sum_train_s"]) / len(r["trials"])),
        Row("overhead", "trial start -> first report (s)", r["first_report_s_median"]),
        Row("overhead", "start-up of a trial: to its first step (s)", r["startup_s_median"]),
        Row("overhead", "sweep wall / sum of trial wall times", r["wall_over_trial_wall"]),
        Row("overhead", "eval + checkpoint + report per report (s)", r["between_reports_s_median"]),
        Row("overhead", "share of the sweep's CPU time used by the train workers", r["workers_share_of_cpu"]),
        Row("overhead", "peak memory of the sweep: summed RSS / PSS (GiB)", gib),
    ]
