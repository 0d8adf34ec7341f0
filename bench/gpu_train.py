"""Train the GPU model size on one GPU without Ray (`bench.loop`), then measure it on the held-out bench sets.

1. feed: images/s of the step fed by a Train worker's DataLoader vs from a GPU-resident copy of the set;
2. train: each `--configs` for `--minutes` from the GPU-resident set, step settings scaled to the steps that fit;
3. test: export the final model to a standalone .pt2 and measure full match on each `--test` file.

    python -m bench.gpu_train --data DIR [--spec mixed --n 150000] --minutes 4 --test a.parquet b.parquet
Without CUDA it runs on the CPU (`--model small`: a smoke test). Writes OUT/gpu_train.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import RESULTS, write_json
from bench.loop import batches, resident, train_loop
from search.space import RECOMMENDED, REFERENCE
from trainable import checkpoint
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
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: a smoke test of this script only
    torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    if not (Path(args.data) / "meta.json").exists():
        generate(args.spec, args.n, args.data, seed=0, processes=os.cpu_count())
    t_gen = time.perf_counter() - t0
    base = input_shape(TrainConfig(**MODELS[args.model]), read_meta(args.data))
    train_x, train_y, meta = load_split(args.data, "train", base.img_height, base.img_width, processes=os.cpu_count())
    val = load_split(args.data, "val", base.img_height, base.img_width, processes=os.cpu_count())[:2]
    t_decode = time.perf_counter() - t0 - t_gen
    gpu_x, gpu_y = torch.from_numpy(np.array(train_x))[:, None].to(device), torch.from_numpy(np.array(train_y)).to(device)
    feed = dict(dataloader=rate(base, meta, batches(train_x, train_y, base.batch_size, device), val, device, args.feed_steps),
                gpu_resident=rate(base, meta, resident(gpu_x, gpu_y, base.batch_size), val, device, args.feed_steps))
    result = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", torch=torch.__version__,
                  batch_size=base.batch_size, model=MODELS[args.model],
                  data=dict(spec=meta.get("spec", args.spec), train=len(train_x), val=len(val[0]), generate_s=t_gen, decode_s=t_decode),
                  feed_images_per_s=feed, feed_ratio_gpu_resident_over_dataloader=feed["gpu_resident"] / feed["dataloader"], runs={})
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2), flush=True)
    for name in args.configs:
        step_rate = rate(config(name, base, 100, 100), meta, resident(gpu_x, gpu_y, base.batch_size), val, device, 30)
        max_steps = max(20, int(step_rate * 0.9 * args.minutes * 60 / base.batch_size))  # ~10% goes to evaluation
        cfg = config(name, base, max_steps, min(args.eval_every, max(1, max_steps // 10)))
        print(f"{name}: {cfg.head} head, augment {cfg.augment}, {max_steps} steps, peak_lr {cfg.peak_lr:g}, "
              f"warmup {cfg.warmup_steps}, period {cfg.cosine_period}", flush=True)
        model, _, curve = train_loop(cfg, meta, resident(gpu_x, gpu_y, cfg.batch_size), *val, device, verbose=True)
        result["runs"][name] = dict(config=cfg.to_dict(), curve=curve, train_seconds=curve[-1]["seconds"], images_per_s=step_rate,
                                    test=test(model, cfg, meta, curve[-1], args.test))
        write_json(args.out, "gpu_train", result, plot(result))  # after each run: a cut-off command still leaves the runs done


if __name__ == "__main__":
    main()
