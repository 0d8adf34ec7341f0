"""Images/s of the training step inside Ray Train (1 and 2 workers) against the same step in a bare loop.

Same model (default TrainConfig), same per-worker batch (128), one thread per process, same DataLoader
over `CaptchaArrays` and the same `train_step`. Each run times `eval_every`-step intervals exactly as the
worker does (evaluation and checkpointing fall between intervals, outside the clock); the first interval
is warm-up and is dropped. The bare loop runs in a freshly spawned process, as a Ray worker does; "bare2"
is two independent bare loops at once, the machine's own 2-core scaling, which bounds what 2 DDP workers
can reach. Runs alternate (bare, Ray 1, bare2, Ray 2, then the reverse) and medians over the repeats are
reported. The Ray side reads the `images_per_s` the worker reports (global, all workers), and the CPU
each kind of process used meanwhile (psutil), to show what competes with the workers for the cores.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bench.common import CACHE, ProcessSampler, Row, cpu_group, easy_data, median, pyplot, standalone, write_json
from trainable.config import TrainConfig, input_shape
from trainable.data import load_split, read_meta
from trainable.model import build_model
from trainable.schedule import lr_at
from trainable.step import CaptchaArrays, evaluate, memory_format, train_step

PER_WORKER_BATCH = 128
ARMS = ("bare", "ray1", "bare2", "ray2")  # bare2: two independent bare loops at once, the machine's own 2-core scaling
SIZES = dict(full=dict(eval_every=40, intervals=4, repeats=3), quick=dict(eval_every=4, intervals=2, repeats=1))


def config(data_dir: str, workers: int, eval_every: int, intervals: int) -> TrainConfig:
    cfg = TrainConfig(data_dir=data_dir, batch_size=PER_WORKER_BATCH * workers, eval_every=eval_every, max_steps=eval_every * intervals)
    return input_shape(cfg, read_meta(data_dir))


def rate(per_interval: list[float]) -> float:
    """Images/s over the intervals after the warm-up one (equal images each: the harmonic mean)."""
    kept = per_interval[1:] or per_interval
    return len(kept) / sum(1 / r for r in kept)


def bare_loop(cfg: TrainConfig) -> list[float]:
    """The worker's loop without Ray, DDP or reports; images/s of each eval interval."""
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    device = torch.device("cpu")
    train_x, train_y, meta = load_split(cfg.data_dir, "train", cfg.img_height, cfg.img_width)
    val_x, val_y, _ = load_split(cfg.data_dir, "val", cfg.img_height, cfg.img_width)
    loader = DataLoader(CaptchaArrays(train_x, train_y), batch_size=cfg.per_worker_batch(1), shuffle=True, drop_last=True)
    model = build_model(cfg, len(meta["charset"]), meta["max_len"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.peak_lr, amsgrad=True)
    rates, step, loss_sum, n, t0 = [], 0, torch.zeros(()), 0, time.perf_counter()
    while step < cfg.max_steps:
        for images, targets in loader:
            loss_sum += train_step(model, optimizer, images.to(memory_format=memory_format(device)), targets, cfg, lr_at(step, **cfg.schedule()))
            n, step = n + 1, step + 1
            if step % cfg.eval_every and step < cfg.max_steps:
                continue
            loss_sum.item()
            rates.append(n * cfg.batch_size / (time.perf_counter() - t0))
            evaluate(model, val_x, val_y, cfg, device)  # as the worker does, off the clock
            loss_sum, n, t0 = torch.zeros(()), 0, time.perf_counter()
            if step >= cfg.max_steps:
                break
    return rates


def bare_processes(cfg: TrainConfig, n: int) -> list[list[float]]:
    """`bare_loop` in n fresh processes at once (spawned like Ray's workers); each one's interval rates."""
    with multiprocessing.get_context("spawn").Pool(n) as pool:
        return pool.map(bare_loop, [cfg] * n)


def ray_run(cfg: TrainConfig, workers: int, storage: Path, name: str) -> dict:
    """One `run_training` (the sweep trials' driver): the global images/s of each report, and the CPU
    seconds of each kind of process between the first and the last report (the measured intervals)."""
    import ray.train

    from trainable.driver import RunSettings, run_training

    class ReportLog(ray.train.UserCallback):
        """Runs in the Train controller: appends rank 0's metrics of every report to a JSONL file."""

        def __init__(self, path: str):
            self.path = path

        def after_report(self, run_context, metrics, checkpoint):
            with open(self.path, "a") as f:
                f.write(json.dumps(dict(metrics[0], reported_at=time.time())) + "\n")

    log = storage / f"{name}.jsonl"
    with ProcessSampler(every=0.5) as sampler:
        run_training(cfg, RunSettings(workers=workers, storage=str(storage), name=name), callbacks=[ReportLog(str(log))])
    reports = [json.loads(line) for line in log.read_text().splitlines()]
    start, end = reports[0]["reported_at"], reports[-1]["reported_at"]
    return dict(per_interval=[r["images_per_s"] for r in reports], window_s=end - start,
                cpu_s=sampler.cpu_seconds(start, end, cpu_group))


def run(out, quick: bool = False) -> dict:
    from cluster.connect import init_ray

    size = SIZES["quick" if quick else "full"]
    data_dir = easy_data(quick)
    storage = CACHE / "throughput"
    shutil.rmtree(storage, ignore_errors=True)
    storage.mkdir(parents=True)
    init_ray()
    runs = {arm: [] for arm in ARMS}
    for k in range(size["repeats"]):
        for arm in ARMS if k % 2 == 0 else reversed(ARMS):
            workers = 2 if "2" in arm else 1
            cfg = config(data_dir, 1 if arm.startswith("bare") else workers, size["eval_every"], size["intervals"])
            if arm.startswith("bare"):
                per_process = bare_processes(cfg, workers)
                r = dict(per_process=per_process, images_per_s=sum(rate(p) for p in per_process))
            else:
                r = ray_run(cfg, workers, storage, f"{arm}-rep{k}")
                r["images_per_s"] = rate(r["per_interval"])
            runs[arm].append(r)
            print(f"throughput rep {k} {arm}: {r['images_per_s']:.0f} images/s", flush=True)
    med = {arm: median(r["images_per_s"] for r in rs) for arm, rs in runs.items()}

    def paired(a: str, b: str) -> float:
        return median(x["images_per_s"] / y["images_per_s"] for x, y in zip(runs[a], runs[b]))

    cpu = {arm: {g: median(r["cpu_s"].get(g, 0.0) / r["window_s"] for r in runs[arm]) for g in
                 ("train workers", "other Ray actors", "Ray system processes", "driver")} for arm in ("ray1", "ray2")}
    result = dict(
        settings=dict(size, per_worker_batch=PER_WORKER_BATCH, threads_per_process=1, model=dict(channels=TrainConfig.channels,
                      img_height=TrainConfig.img_height), data=data_dir),
        runs=runs, images_per_s=med, ray1_over_bare=paired("ray1", "bare"), ray2_over_ray1=paired("ray2", "ray1"),
        bare2_over_bare=paired("bare2", "bare"), ray2_over_bare2=paired("ray2", "bare2"),
        cores_busy_during_training=cpu,  # CPU seconds per second of the measured intervals, by kind of process
    )
    plot(result, Path(out) / "throughput.png")
    write_json(out, "throughput", result)
    return result


def plot(r: dict, path: Path) -> None:
    plt = pyplot()
    runs = r["runs"]
    labels = {"bare": "bare loop\n1 process", "ray1": "Ray Train\n1 worker", "bare2": "2 bare loops\nat once (sum)", "ray2": "Ray Train\n2 workers (global)"}
    colors = {"bare": "#888888", "ray1": "#1f77b4", "bare2": "#bbbbbb", "ray2": "#2ca02c"}
    fig, (ax, cpu) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw=dict(width_ratios=[2, 1]))
    for i, arm in enumerate(labels):
        values = [x["images_per_s"] for x in runs[arm]]
        ax.bar(i, median(values), color=colors[arm], width=0.6)
        ax.plot([i] * len(values), values, "ko", ms=4, label="one run" if i == 0 else None)
        ax.text(i, max(values) + 15, f"{median(values):.0f}", ha="center", va="bottom", fontsize=8, fontweight="bold")
    one_worker = r["images_per_s"]["ray1"]
    ax.axhline(2 * one_worker, color="#2ca02c", ls="--", lw=1, label="2 x Ray 1 worker")
    ax.set_ylim(0, 2.2 * one_worker)
    ax.set_xticks(range(len(labels)), list(labels.values()), fontsize=8)
    ax.set_ylabel("training images/s (bar: median)")
    ax.set_title(f"Ray 1 worker / bare = {r['ray1_over_bare']:.2f} (goal >= 0.95); 2 / 1 workers = {r['ray2_over_ray1']:.2f}\n"
                 f"2 bare loops / 1 = {r['bare2_over_bare']:.2f} (the machine); Ray 2 workers / 2 bare loops = {r['ray2_over_bare2']:.2f}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    groups = ["train workers", "other Ray actors", "Ray system processes", "driver"]
    gcolors = ["#2ca02c", "#ff7f0e", "#d62728", "#9467bd"]
    for j, arm in enumerate(("ray1", "ray2")):
        bottom = 0.0
        for g, c in zip(groups, gcolors):
            v = r["cores_busy_during_training"][arm][g]
            cpu.bar(j, v, bottom=bottom, color=c, width=0.6, label=g if j == 0 else None)
            bottom += v
    cpu.axhline(2, color="k", lw=1, ls=":")
    cpu.set_xticks(range(2), ["1 worker", "2 workers"], fontsize=8)
    cpu.set_ylabel("cores busy while training (CPU-s per s)")
    cpu.set_ylim(0, 2.6)
    cpu.set_title("who uses the 2 cores", fontsize=9)
    cpu.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rows(r: dict) -> list[Row]:
    ips, others = r["images_per_s"], r["cores_busy_during_training"]["ray2"]
    return [
        Row("throughput", "Ray Train 1 worker / bare loop (images/s)", r["ray1_over_bare"], ">= 0.95", r["ray1_over_bare"] >= 0.95),
        Row("throughput", "Ray Train 2 workers / 1 worker (global images/s)", r["ray2_over_ray1"], ">= 1.8 (ideal 2.0)", r["ray2_over_ray1"] >= 1.8),
        Row("throughput", "2 bare loops at once / 1 (the machine's own 2-core scaling)", r["bare2_over_bare"]),
        Row("throughput", "Ray Train 2 workers / 2 bare loops at once", r["ray2_over_bare2"], ">= 0.9", r["ray2_over_bare2"] >= 0.9),
        Row("throughput", "cores used by non-worker processes while 2 workers train", sum(v for g, v in others.items() if g != "train workers")),
        Row("throughput", "images/s: bare / Ray 1 worker / 2 bare / Ray 2 workers",
            " / ".join(f"{ips[a]:.0f}" for a in ("bare", "ray1", "bare2", "ray2"))),
    ]


if __name__ == "__main__":
    standalone("throughput", run)
