"""Images/s of the training step inside Ray Train (1 and 2 workers) against `bench.loop` without Ray in 1 and 2 spawned
processes (bare, bare2), per-worker batch 128, one thread each: `eval_every`-step intervals timed as the worker does
(the first is warm-up), arms alternating, medians over repeats; with psutil, the CPU of each kind of process.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from statistics import median

import torch

from bench.common import CACHE, ProcessSampler, Row, easy_data, write_json
from bench.loop import batches, train_loop
from trainable.config import TrainConfig, input_shape
from trainable.data import load_split, read_meta

PER_WORKER_BATCH = 128
ARMS = ("bare", "ray1", "bare2", "ray2")
GROUPS = ("train workers", "other Ray actors", "Ray system processes", "driver")  # bench.common.cpu_group's kinds
SIZES = dict(full=dict(eval_every=40, intervals=4, repeats=3), quick=dict(eval_every=4, intervals=2, repeats=1))


def config(data_dir: str, workers: int, eval_every: int, intervals: int) -> TrainConfig:
    cfg = TrainConfig(data_dir=data_dir, batch_size=PER_WORKER_BATCH * workers, eval_every=eval_every, max_steps=eval_every * intervals)
    return input_shape(cfg, read_meta(data_dir))


def rate(per_interval: list[float]) -> float:
    """Images/s over the intervals after the warm-up one (equal images each: the harmonic mean)."""
    kept = per_interval[1:] or per_interval
    return len(kept) / sum(1 / r for r in kept)


def bare_loop(cfg: TrainConfig) -> list[float]:
    """Images/s of each eval interval of `bench.loop` in this process, one thread."""
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    train_x, train_y, meta = load_split(cfg.data_dir, "train", cfg.img_height, cfg.img_width)
    val_x, val_y, _ = load_split(cfg.data_dir, "val", cfg.img_height, cfg.img_width)
    curve = train_loop(cfg, meta, batches(train_x, train_y, cfg.batch_size, cpu), val_x, val_y, cpu)[2]
    return [p["images_per_s"] for p in curve]


def ray_run(cfg: TrainConfig, workers: int, name: str) -> dict:
    """One `run_training`: the global images/s of each report, the CPU seconds of each kind of process between the
    first and the last report."""
    import ray.train

    from trainable.driver import RunSettings, run_training

    class ReportLog(ray.train.UserCallback):  # runs in the Train controller: rank 0's metrics of each report -> JSONL
        def after_report(self, run_context, metrics, checkpoint):
            with open(log, "a") as f:
                f.write(json.dumps(dict(metrics[0], reported_at=time.time())) + "\n")

    log = CACHE / "throughput" / f"{name}.jsonl"
    with ProcessSampler(every=0.5) as sampler:
        run_training(cfg, RunSettings(workers=workers, storage=str(log.parent), name=name), callbacks=[ReportLog()])
    reports = [json.loads(line) for line in log.read_text().splitlines()]
    start, end = reports[0]["reported_at"], reports[-1]["reported_at"]
    return dict(per_interval=[r["images_per_s"] for r in reports], window_s=end - start, cpu_s=sampler.cpu_seconds(start, end))


def run(out, quick: bool = False) -> dict:
    from cluster.connect import init_ray

    size = SIZES["quick" if quick else "full"]
    data_dir = easy_data(quick)
    shutil.rmtree(CACHE / "throughput", ignore_errors=True)
    (CACHE / "throughput").mkdir(parents=True)
    init_ray()
    runs = {arm: [] for arm in ARMS}
    for k in range(size["repeats"]):
        for arm in ARMS if k % 2 == 0 else reversed(ARMS):
            workers = 2 if "2" in arm else 1
            cfg = config(data_dir, 1 if arm.startswith("bare") else workers, size["eval_every"], size["intervals"])
            if arm.startswith("bare"):  # in fresh processes, spawned as Ray's workers are
                with multiprocessing.get_context("spawn").Pool(workers) as pool:
                    r = dict(per_process=pool.map(bare_loop, [cfg] * workers))
                r["images_per_s"] = sum(rate(p) for p in r["per_process"])
            else:
                r = ray_run(cfg, workers, f"{arm}-rep{k}")
                r["images_per_s"] = rate(r["per_interval"])
            runs[arm].append(r)
            print(f"throughput rep {k} {arm}: {r['images_per_s']:.0f} images/s", flush=True)

    def paired(a: str, b: str) -> float:
        return median(x["images_per_s"] / y["images_per_s"] for x, y in zip(runs[a], runs[b]))

    result = dict(
        settings=dict(size, per_worker_batch=PER_WORKER_BATCH, threads_per_process=1, model=dict(channels=TrainConfig.channels,
                      img_height=TrainConfig.img_height), data=data_dir),
        runs=runs, images_per_s={arm: median(r["images_per_s"] for r in rs) for arm, rs in runs.items()},
        ray1_over_bare=paired("ray1", "bare"), ray2_over_ray1=paired("ray2", "ray1"),
        bare2_over_bare=paired("bare2", "bare"), ray2_over_bare2=paired("ray2", "bare2"),
        cores_busy_during_training={arm: {g: median(r["cpu_s"].get(g, 0.0) / r["window_s"] for r in runs[arm]) for g in GROUPS}
                                    for arm in ("ray1", "ray2")},  # CPU seconds per second of the measured intervals
    )
    write_json(out, "throughput", result, plot(result))
    return result


def plot(r: dict):
    import pandas as pd
    from matplotlib.figure import Figure

    labels = {"bare": "bare loop\n1 process", "ray1": "Ray Train\n1 worker", "bare2": "2 bare loops\nat once (sum)", "ray2": "Ray Train\n2 workers (global)"}
    colors = {"bare": "#888888", "ray1": "#1f77b4", "bare2": "#bbbbbb", "ray2": "#2ca02c"}
    fig = Figure(figsize=(10, 4.2), layout="tight")
    ax, cpu = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[2, 1]))
    for i, arm in enumerate(labels):
        values = [x["images_per_s"] for x in r["runs"][arm]]
        ax.bar(i, median(values), color=colors[arm], width=0.6)
        ax.plot([i] * len(values), values, "ko", ms=4, label="one run" if i == 0 else None)
        ax.text(i, max(values) + 15, f"{median(values):.0f}", ha="center", va="bottom", fontsize=8, fontweight="bold")
    one_worker = r["images_per_s"]["ray1"]
    ax.axhline(2 * one_worker, color="#2ca02c", ls="--", lw=1, label="2 x Ray 1 worker")
    ax.set(ylim=(0, 2.2 * one_worker), ylabel="training images/s (bar: median)")
    ax.set_xticks(range(len(labels)), list(labels.values()), fontsize=8)
    ax.set_title(f"Ray 1 worker / bare = {r['ray1_over_bare']:.2f} (goal >= 0.95); 2 / 1 workers = {r['ray2_over_ray1']:.2f}\n"
                 f"2 bare loops / 1 = {r['bare2_over_bare']:.2f} (the machine); Ray 2 workers / 2 bare loops = {r['ray2_over_bare2']:.2f}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    busy = pd.DataFrame(r["cores_busy_during_training"]).T.loc[["ray1", "ray2"], list(GROUPS)]
    busy.plot.bar(ax=cpu, stacked=True, width=0.6, rot=0, color=["#2ca02c", "#ff7f0e", "#d62728", "#9467bd"])
    cpu.axhline(2, color="k", lw=1, ls=":")
    cpu.set(ylim=(0, 2.6), ylabel="cores busy while training (CPU-s per s)")
    cpu.set_xticks(range(2), ["1 worker", "2 workers"], fontsize=8)
    cpu.set_title("who uses the 2 cores", fontsize=9)
    cpu.legend(fontsize=7, loc="upper left")
    return fig


def rows(r: dict) -> list[Row]:
    ips, others = r["images_per_s"], r["cores_busy_during_training"]["ray2"]
    return [
        Row("throughput", "Ray Train 1 worker / bare loop (images/s)", r["ray1_over_bare"], ">= 0.95", r["ray1_over_bare"] >= 0.95),
        Row("throughput", "Ray Train 2 workers / 1 worker (global images/s)", r["ray2_over_ray1"], ">= 1.8 (ideal 2.0)", r["ray2_over_ray1"] >= 1.8),
        Row("throughput", "2 bare loops at once / 1 (the machine's own 2-core scaling)", r["bare2_over_bare"]),
        Row("throughput", "Ray Train 2 workers / 2 bare loops at once", r["ray2_over_bare2"], ">= 0.9", r["ray2_over_bare2"] >= 0.9),
        Row("throughput", "cores used by non-worker processes while 2 workers train", sum(v for g, v in others.items() if g != "train workers")),
        Row("throughput", "images/s: bare / Ray 1 worker / 2 bare / Ray 2 workers", " / ".join(f"{ips[a]:.0f}" for a in ARMS)),
    ]
