"""Train the GPU model size on one GPU without Ray (`bench.loop`), then measure it on the held-out bench sets.

1. feed: images/s of the step fed by a Train worker's DataLoader vs from the trainer's device feed (trainable/feed.py);
2. train: each `--configs` for `--minutes` from the device feed, step settings scaled to the steps that fit;
3. test: export the final model to a standalone .pt2 and measure full match on each `--test` file;
4. share: the ctc config as a `gpu` preset trial would run it (the trainer's feed, fused Adam, cudnn.benchmark,
   bf16, `--compile`), in 1 process and in `--trials` processes sharing the card for `--share-minutes`: images/s,
   peak memory (torch.cuda.max_memory_allocated) per trial, card utilisation and memory (nvidia-smi) and the
   accuracy each reached.

    python -m bench.gpu_train --data DIR [--spec mixed --n 150000] --minutes 4 --test a.parquet b.parquet
    python -m bench.gpu_train --data /tmp/easy --spec easy --n 60000 --configs ctc --minutes 1 --share-minutes 1.25 --out $OUT  # ~8 min on an H100
Without CUDA it runs on the CPU (`--smoke`: small model, 300 images, seconds per phase; under a minute).
Writes OUT/gpu_train.{json,png,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.common import RESULTS, write_json
from bench.loop import batches, resident, train_loop
from search.space import RECOMMENDED, REFERENCE
from trainable import checkpoint, feed
from trainable.config import GPU_MODEL, TrainConfig, input_shape
from trainable.data import generate, load_split, read_meta

CONFIGS = dict(reference=REFERENCE, ctc=RECOMMENDED)  # step settings: fractions of the run
MODELS = dict(gpu=GPU_MODEL, small={})  # small: the CPU default size (a smoke test of this script)


def config(name: str, base: TrainConfig, max_steps: int, eval_every: int) -> TrainConfig:
    c = CONFIGS[name]
    return base.replace(**dict(c, warmup_steps=round(c["warmup_steps"] * max_steps), cosine_period=max(1, round(c["cosine_period"] * max_steps))),
                        max_steps=max_steps, eval_every=eval_every)


def rate(cfg: TrainConfig, meta: dict, feed, val, device, steps: int) -> float:
    """images/s of `steps` steps after as many warm-up ones (cuDNN autotuning, the loader's start)."""
    cfg = cfg.replace(max_steps=2 * steps, eval_every=steps)
    return train_loop(cfg, meta, feed, val[0][:256], val[1][:256], device)[2][-1]["images_per_s"]


def test(model, cfg: TrainConfig, meta: dict, metrics: dict, tests: list[str]) -> dict:
    """Export the final model to a standalone .pt2 and measure it the way a user would."""
    from results.evaluate import evaluate, load_rows
    from results.export import export_model
    from results.predict import load_predictor

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint.save(tmp, model, None, cfg.max_steps, cfg, meta, metrics)
        predictor = load_predictor(export_model(Path(tmp) / checkpoint.FILE, Path(tmp) / "model.pt2"))
        for t in tests:
            m = evaluate(predictor, load_rows(t))
            out[Path(t).stem] = dict(full_match=m["full_match"], char_acc=m["char_acc"], n=m["n"])
            print(f"  {Path(t).name}: full match {m['full_match']:.3f}, char acc {m['char_acc']:.3f}", flush=True)
    return out


def plot(r: dict):
    from matplotlib.figure import Figure

    ax = Figure(figsize=(6.5, 4), layout="tight").subplots()
    for name, run in r["runs"].items():
        tests = ", ".join(f"{k} {v['full_match']:.1%}" for k, v in run["test"].items())
        minutes, full_match = [p["seconds"] / 60 for p in run["curve"]], [p["val_full_match"] for p in run["curve"]]
        ax.plot(minutes, full_match, marker=".", label=f"{name} (test: {tests})")
    ax.set(xlabel="training minutes on one GPU", ylabel="validation full match", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.set_title(f"{r['device']}: model {r['model']}, {r['data']['spec']} data ({r['data']['train']} train images), "
                 f"batch {r['batch_size']}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return ax.figure


def trial(spec: dict, start, results) -> None:
    """One trial process: the ctc config at the gpu preset from the trainer's device feed, `spec['seconds']` of
    training once every trial is ready; puts what it measured on `results`."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = input_shape(TrainConfig(**MODELS[spec["model"]], compile=spec["compile"], seed=spec["seed"]), read_meta(spec["data"]))
    train_x, train_y, meta = load_split(spec["data"], "train", base.img_height, base.img_width)
    val_x, val_y, _ = load_split(spec["data"], "val", base.img_height, base.img_width)
    cfg = config("ctc", base, spec["max_steps"], spec["eval_every"])
    x, y = feed.to_device(train_x, train_y, device)
    start.wait()
    _, _, curve = train_loop(cfg, meta, resident(x, y, cfg.batch_size, seed=cfg.seed), val_x, val_y, device, time_limit=spec["seconds"])
    cuda = device.type == "cuda"
    results.put(dict(seed=cfg.seed, steps=curve[-1]["step"], train_seconds=curve[-1]["seconds"],
                     images_per_s=curve[-1]["step"] * cfg.batch_size / curve[-1]["seconds"], last_interval_images_per_s=curve[-1]["images_per_s"],
                     max_memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
                     val_full_match=curve[-1]["val_full_match"], best_val_full_match=max(p["val_full_match"] for p in curve)))


class CardSampler(threading.Thread):
    """Card utilisation (%) and memory used (MiB, every process's) from nvidia-smi every half second; None without it."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples, self.halt = [], threading.Event()

    def run(self):
        while shutil.which("nvidia-smi") and not self.halt.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True, timeout=10).stdout.split(",")
            if len(out) == 2:
                self.samples.append((float(out[0]), float(out[1])))

    def summary(self) -> dict:
        self.halt.set()
        self.join()
        if not self.samples:
            return dict(gpu_util_pct=None, card_memory_used_gib=None)
        return dict(gpu_util_pct=sum(u for u, _ in self.samples) / len(self.samples), card_memory_used_gib=max(m for _, m in self.samples) / 1024)


def share(args, step_rate: float, batch: int) -> dict:
    """For each of `args.trials`, that many trial processes on the card at once: per trial and in total."""
    import torch.multiprocessing as mp

    ctx, out = mp.get_context("spawn"), {}
    for k in args.trials:
        seconds = args.share_minutes * 60
        max_steps = max(20, int(step_rate / k * 0.9 * seconds / batch))  # the schedule of the steps a trial expects
        spec = dict(data=args.data, model=args.model, compile=int(args.compile), seconds=seconds, max_steps=max_steps,
                    eval_every=max(1, max_steps // 5))
        start, results = ctx.Barrier(k + 1), ctx.Queue()
        procs = [ctx.Process(target=trial, args=(dict(spec, seed=i), start, results)) for i in range(k)]
        for p in procs:
            p.start()
        start.wait()
        card = CardSampler()
        card.start()
        trials = [results.get(timeout=seconds * 3 + 600) for _ in procs]
        for p in procs:
            p.join()
        out[str(k)] = dict(trials=trials, total_images_per_s=sum(t["images_per_s"] for t in trials), max_steps=max_steps, **card.summary())
        print(f"share: {k} trial(s): {out[str(k)]['total_images_per_s']:.0f} images/s in total", flush=True)
    return out


def table(r: dict) -> str:
    """The short table of OUT/gpu_train.md."""
    lines = [f"{r['device']}, model {r['model']}, batch {r['batch_size']}, compile {r['compile']}: trainer feed "
             f"{r['feed_images_per_s']['gpu_resident']:.0f} images/s vs DataLoader {r['feed_images_per_s']['dataloader']:.0f}", "",
             "| trials on the card | images/s total | images/s per trial | x one trial | peak memory per trial (GiB) | card util % | card memory (GiB) | val full match per trial |",
             "|---|---|---|---|---|---|---|---|"]
    one = r["share"].get("1", {}).get("total_images_per_s")
    for k, s in r["share"].items():
        mem = [t["max_memory_gib"] for t in s["trials"] if t["max_memory_gib"] is not None]
        fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
        lines.append(f"| {k} | {s['total_images_per_s']:.0f} | {s['total_images_per_s'] / int(k):.0f} | {fmt(one and s['total_images_per_s'] / one, '.2f')} | "
                     f"{fmt(max(mem) if mem else None, '.2f')} | {fmt(s['gpu_util_pct'], '.0f')} | {fmt(s['card_memory_used_gib'], '.1f')} | "
                     f"{', '.join(format(t['val_full_match'], '.3f') for t in s['trials'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_train")
    p.add_argument("--data", required=True, help="dataset folder; generated there if it holds none")
    p.add_argument("--spec", default="mixed")
    p.add_argument("--n", type=int, default=150_000, help="images to generate when --data holds none")
    p.add_argument("--minutes", type=float, default=4.0, help="training time per config")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--model", choices=list(MODELS), default="gpu")
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--feed-steps", type=int, default=200)
    p.add_argument("--test", nargs="*", default=[])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--trials", type=int, nargs="*", default=[1, 4], help="trial processes sharing the card, one run each (none: skip)")
    p.add_argument("--share-minutes", type=float, default=2.0, help="training time of each shared run")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (the compile setting)")
    p.add_argument("--smoke", action="store_true", help="small model, 300 easy images, seconds per phase: checks the script on a CPU")
    args = p.parse_args()
    if args.smoke:
        args.model, args.spec, args.n, args.minutes, args.feed_steps, args.share_minutes, args.trials = "small", "easy", 300, 0.01, 2, 0.03, [1, 2]
    rate_steps = 3 if args.smoke else 30  # steps that time a config's step rate, which sizes its run
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: a smoke test of this script only
    torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    if not (Path(args.data) / "meta.json").exists():
        generate(args.spec, args.n, args.data, seed=0, processes=os.cpu_count())
    t_gen = time.perf_counter() - t0
    base = input_shape(TrainConfig(**MODELS[args.model], compile=int(args.compile)), read_meta(args.data))
    train_x, train_y, meta = load_split(args.data, "train", base.img_height, base.img_width, processes=os.cpu_count())
    val = load_split(args.data, "val", base.img_height, base.img_width, processes=os.cpu_count())[:2]
    t_decode = time.perf_counter() - t0 - t_gen
    gpu_x, gpu_y = feed.to_device(train_x, train_y, device)
    feed_rates = dict(dataloader=rate(base, meta, batches(train_x, train_y, base.batch_size, device), val, device, args.feed_steps),
                      gpu_resident=rate(base, meta, resident(gpu_x, gpu_y, base.batch_size), val, device, args.feed_steps))
    result = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", torch=torch.__version__,
                  batch_size=base.batch_size, model=MODELS[args.model], compile=bool(args.compile),
                  data=dict(spec=meta.get("spec", args.spec), train=len(train_x), val=len(val[0]), generate_s=t_gen, decode_s=t_decode),
                  feed_images_per_s=feed_rates, feed_ratio_gpu_resident_over_dataloader=feed_rates["gpu_resident"] / feed_rates["dataloader"], runs={})
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2), flush=True)
    for name in args.configs:
        step_rate = rate(config(name, base, 100, 100), meta, resident(gpu_x, gpu_y, base.batch_size), val, device, rate_steps)
        max_steps = max(20, int(step_rate * 0.9 * args.minutes * 60 / base.batch_size))  # ~10% goes to evaluation
        cfg = config(name, base, max_steps, min(args.eval_every, max(1, max_steps // 10)))
        print(f"{name}: {cfg.head} head, augment {cfg.augment}, {max_steps} steps, peak_lr {cfg.peak_lr:g}, "
              f"warmup {cfg.warmup_steps}, period {cfg.cosine_period}", flush=True)
        model, _, curve = train_loop(cfg, meta, resident(gpu_x, gpu_y, cfg.batch_size), *val, device, verbose=True)
        result["runs"][name] = dict(config=cfg.to_dict(), curve=curve, train_seconds=curve[-1]["seconds"], images_per_s=step_rate,
                                    test=test(model, cfg, meta, curve[-1], args.test))
        write_json(args.out, "gpu_train", result, plot(result))  # after each run: a cut-off command still leaves the runs done
    if args.trials:
        step_rate = result["runs"]["ctc"]["images_per_s"] if "ctc" in result["runs"] else \
            rate(config("ctc", base, 100, 100), meta, resident(gpu_x, gpu_y, base.batch_size), val, device, rate_steps)
        del gpu_x, gpu_y  # the trial processes' turn on the card
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result["share"] = share(args, step_rate, base.batch_size)
        write_json(args.out, "gpu_train", result, plot(result) if result["runs"] else None)
        (args.out / "gpu_train.md").write_text(table(result))
        print(table(result), flush=True)


if __name__ == "__main__":
    main()
