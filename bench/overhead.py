"""What a sweep costs beyond training: start-up per trial, time between reports, gaps, memory.

K trials of the cpu preset (2 workers each) run one after another (`--scheduler none`, max_concurrent 1)
through `search.sweep.run_sweep`, in this process, in a fresh embedded Ray. From Tune's history of each trial:
- time to first report (Tune's `time_total_s` of the first report) and the part of it that was training;
- the sweep's wall time over the sum of the trials' own training time (last `train_seconds`; goal <= 1.1)
  and over the sum of the trials' wall times (the gaps Tune leaves between trials);
- the peak memory of all processes of the running sweep (this process and its descendants: GCS, raylet,
  Tune and Train actors, workers), summed RSS and summed PSS (shared pages counted once), with psutil;
- the CPU seconds each kind of process used during the sweep (train workers, other Ray actors, Ray's
  system processes, this driver).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from bench.common import CACHE, ProcessSampler, Row, cpu_group, easy_data, median, pyplot, standalone, write_json

SIZES = dict(full=dict(trials=3, train=None), quick=dict(trials=2, train=dict(max_steps=20, eval_every=10, warmup_steps=2, cosine_period=20)))


def trial_times(history) -> list[dict]:
    """Per trial, in start order: start/end (epoch s), wall, first report, training seconds, reports."""
    out = []
    for trial_id, h in history.groupby("trial_id"):
        h = h.sort_values("time_total_s")
        first, last = h.iloc[0], h.iloc[-1]
        start = float(first["timestamp"] - first["time_total_s"])
        out.append(dict(trial_id=trial_id, start=start, end=float(last["timestamp"]), wall_s=float(last["time_total_s"]),
                        first_report_s=float(first["time_total_s"]), first_train_s=float(first["train_seconds"]),
                        train_s=float(last["train_seconds"]), reports=len(h)))
    out.sort(key=lambda t: t["start"])
    for t in out:
        t["startup_s"] = t["first_report_s"] - t["first_train_s"]  # to the first step, plus the first eval + report
        t["between_reports_s"] = (t["wall_s"] - t["train_s"] - t["startup_s"]) / max(1, t["reports"] - 1)  # eval, checkpoint, report
    return out


def measure(settings, base, sampler) -> dict:
    """One sweep of settings.num_samples trials; the figures of its history and of the processes meanwhile."""
    from results.experiment import load
    from search.sweep import run_sweep

    t1 = time.time()
    exp = run_sweep(settings, base)
    t2 = time.time()
    samples = [(t, sum(p[2] for p in procs.values()), sum(p[3] for p in procs.values()) if all(p[3] >= 0 for p in procs.values()) else -1,
                len(procs)) for t, procs in sampler.samples if t1 <= t <= t2]
    cpu = sampler.cpu_seconds(t1, t2, cpu_group)
    by_title = sampler.cpu_seconds(t1, t2, lambda pid, title: os.path.basename(title.split()[0]) if title else "?")
    _, history = load(exp)
    trials = trial_times(history)
    sum_train, sum_wall = sum(t["train_s"] for t in trials), sum(t["wall_s"] for t in trials)
    return dict(
        sweep_wall_s=t2 - t1, sweep_start=t1, trials=trials,
        sum_train_s=sum_train, sum_trial_wall_s=sum_wall, gaps_between_trials_s=[b["start"] - a["end"] for a, b in zip(trials, trials[1:])],
        first_report_s_median=median(t["first_report_s"] for t in trials), startup_s_median=median(t["startup_s"] for t in trials),
        between_reports_s_median=median(t["between_reports_s"] for t in trials),
        wall_over_train=(t2 - t1) / sum_train, wall_over_trial_wall=(t2 - t1) / sum_wall,
        cpu_seconds_by_kind=cpu, cpu_seconds_by_process=dict(sorted(by_title.items(), key=lambda kv: -kv[1])[:15]),
        workers_share_of_cpu=cpu.get("train workers", 0.0) / sum(cpu.values()),
        peak_rss_bytes=max(s[1] for s in samples), peak_pss_bytes=max(s[2] for s in samples), peak_processes=max(s[3] for s in samples),
        memory_samples=[dict(t=s[0] - t1, rss=s[1], pss=s[2] if s[2] >= 0 else None, processes=s[3]) for s in samples],
    )


def run(out, quick: bool = False) -> dict:
    import ray

    from captcha_tune.commands.sweep import PRESETS
    from cluster.connect import init_ray
    from search.sweep import SweepSettings
    from trainable.config import TrainConfig

    size = SIZES["quick" if quick else "full"]
    data_dir = easy_data(quick)
    storage = CACHE / "overhead"
    shutil.rmtree(storage, ignore_errors=True)
    base = TrainConfig(**(size["train"] or PRESETS["cpu"]["train"]))
    settings = SweepSettings(storage=str(storage), name="overhead", data=data_dir, num_samples=size["trials"],
                             workers_per_trial=2, max_concurrent=1, searcher="random", scheduler="none")
    with ProcessSampler(every=1.0, pss_every=5) as sampler:
        t0 = time.time()
        ray.shutdown()  # a fresh Ray (bench.run may have one up already)
        init_ray()
        ray_init_s = time.time() - t0
        result = measure(settings, base, sampler)
    result.update(ray_init_s=ray_init_s,
                  settings=dict(trials=size["trials"], workers_per_trial=2, max_concurrent=1, train=base.to_dict(), data=data_dir))
    print(f"overhead: wall / training {result['wall_over_train']:.3f}, first report {result['first_report_s_median']:.1f} s", flush=True)
    plot(result, Path(out) / "overhead.png")
    write_json(out, "overhead", result)
    return result


def plot(r: dict, path: Path) -> None:
    plt = pyplot()
    fig, (ax, mem) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, gridspec_kw=dict(height_ratios=[1.2, 1]))
    t0 = r["sweep_start"]
    for i, t in enumerate(r["trials"]):
        s = t["start"] - t0
        parts = [("start-up (to first step)", t["startup_s"], "#d62728"), ("training (train_seconds)", t["train_s"], "#2ca02c"),
                 ("eval + checkpoint + report", t["wall_s"] - t["train_s"] - t["startup_s"], "#ff7f0e")]
        for label, width, color in parts:
            ax.barh(i, width, left=s, color=color, label=label if i == 0 else None)
            s += width
    ax.axvline(0, color="k", lw=1)
    ax.axvline(r["sweep_wall_s"], color="k", lw=1, ls="--", label="run_sweep returns")
    ax.set_yticks(range(len(r["trials"])), [f"trial {i + 1}" for i in range(len(r["trials"]))])
    ax.set_ylim(len(r["trials"]) + 0.4, -0.6)  # a free row at the bottom for the legend
    ax.set_xlabel("seconds since run_sweep was called")
    ax.set_title(f"{len(r['trials'])} trials one after another: wall / training = {r['wall_over_train']:.2f} (goal <= 1.1), "
                 f"wall / trial walls = {r['wall_over_trial_wall']:.2f}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ts = [m["t"] for m in r["memory_samples"]]
    mem.plot(ts, [m["rss"] / 2**30 for m in r["memory_samples"]], label="summed RSS")
    with_pss = [m for m in r["memory_samples"] if m["pss"] is not None]
    mem.plot([m["t"] for m in with_pss], [m["pss"] / 2**30 for m in with_pss], label="summed PSS (shared pages once)")
    mem.set(xlabel="seconds since run_sweep was called (negative: ray.init)", ylabel="GiB, all sweep processes")
    ax.tick_params(labelbottom=True)
    mem.set_title(f"memory: peak RSS {r['peak_rss_bytes'] / 2**30:.1f} GiB, peak PSS {r['peak_pss_bytes'] / 2**30:.1f} GiB, "
                  f"up to {r['peak_processes']} processes; train workers used {r['workers_share_of_cpu']:.0%} of the sweep's CPU time", fontsize=9)
    mem.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def seconds_per_trial(r: dict) -> float:
    """Sweep wall time not spent training, per trial: unlike wall / training, not moved by noisy training times."""
    return (r["sweep_wall_s"] - r["sum_train_s"]) / len(r["trials"])


def rows(r: dict) -> list[Row]:
    r = r.get("train_defaults", r)  # an overhead.json from before the lean arm was dropped keeps the default arm here
    return [
        Row("overhead", "sweep wall / sum of trials' training time", r["wall_over_train"], "<= 1.1", r["wall_over_train"] <= 1.1),
        Row("overhead", "sweep wall - training, per trial (s)", seconds_per_trial(r)),
        Row("overhead", "trial start -> first report (s)", r["first_report_s_median"]),
        Row("overhead", "start-up of a trial: to its first step (s)", r["startup_s_median"]),
        Row("overhead", "sweep wall / sum of trial wall times", r["wall_over_trial_wall"]),
        Row("overhead", "eval + checkpoint + report per report (s)", r["between_reports_s_median"]),
        Row("overhead", "share of the sweep's CPU time used by the train workers", r["workers_share_of_cpu"]),
        Row("overhead", "peak memory of the sweep: summed RSS / PSS (GiB)", f"{r['peak_rss_bytes'] / 2**30:.1f} / {r['peak_pss_bytes'] / 2**30:.1f}"),
    ]


if __name__ == "__main__":
    standalone("overhead", run)
