"""Train the GPU model size on one GPU without Ray, then measure it on the held-out bench sets.

The GPU box has PyTorch but not Ray, so this runs the trial's own pieces (`load_split`, `lr_at`,
`train_step`, `evaluate`, `checkpoint`, `export_model`) in a plain loop on one device:

1. feed: images/s of the step fed by the per-image DataLoader a Train worker uses (host memory,
   collate, copy to the GPU) against whole batches gathered from a GPU-resident copy of the set;
2. train: each `--config` (the original project's settings, and a sweep's best) for `--minutes`,
   step-valued settings scaled to the steps that fit, evaluating every `--eval-every` steps;
3. test: export the run's final model to a standalone .pt2 and measure full match on each `--test` file.

    python -m bench.gpu_train --data DIR [--spec mixed --n 150000] --minutes 4 --test a.parquet b.parquet
Without CUDA it runs on the CPU (with `--model small`: a smoke test of this script, as tests/test_bench.py does).
Writes OUT/gpu_train.json and OUT/gpu_train.png.
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
from torch.utils.data import DataLoader

from bench.common import RESULTS, pyplot, write_json
from trainable import checkpoint
from search.space import REFERENCE
from trainable.config import GPU_MODEL, TrainConfig, input_shape
from trainable.data import generate, load_split, read_meta
from trainable.model import build_model
from trainable.schedule import lr_at
from trainable.step import CaptchaArrays, evaluate, memory_format, train_step

# The original project's run, and the same schedule with what the sweeps find makes the model good: the CTC head
# and light augmentation (step settings are fractions of the run, as in search/space.py).
CONFIGS = dict(reference=REFERENCE, ctc=dict(REFERENCE, head="ctc", augment=0.3))


MODELS = dict(gpu=GPU_MODEL, small={})  # small: the CPU default size (a smoke test of this script)


def config(name: str, base: TrainConfig, max_steps: int, eval_every: int) -> TrainConfig:
    c = CONFIGS[name]
    return base.replace(**{k: v for k, v in c.items() if k not in ("warmup_steps", "cosine_period")}, max_steps=max_steps,
                        eval_every=eval_every, warmup_steps=round(c["warmup_steps"] * max_steps),
                        cosine_period=max(1, round(c["cosine_period"] * max_steps)))


def fresh(cfg: TrainConfig, meta: dict, device):
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, len(meta["charset"]), meta["max_len"]).to(device, memory_format=memory_format(device))
    return model, torch.optim.Adam(model.parameters(), lr=cfg.peak_lr, amsgrad=True)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def forever(loader):
    while True:
        yield from loader


def feed_rates(cfg, meta, train_x, train_y, gpu_x, gpu_y, device, steps: int) -> dict:
    """images/s of the eager step with each way of feeding it."""
    rates = {}
    loader = DataLoader(CaptchaArrays(train_x, train_y), batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    model, opt = fresh(cfg, meta, device)
    for mode in ("dataloader", "gpu_resident"):
        batches = forever(loader)
        for k in range(steps + 10):
            if k == 10:  # warm-up (cuDNN autotuning) done
                sync()
                t0 = time.perf_counter()
            if mode == "dataloader":
                x, y = next(batches)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            else:
                idx = torch.randint(0, len(gpu_x), (cfg.batch_size,), device=device)
                x, y = gpu_x[idx], gpu_y[idx]
            train_step(model, opt, x.contiguous(memory_format=memory_format(device)), y, cfg, cfg.peak_lr)
        sync()
        rates[mode] = steps * cfg.batch_size / (time.perf_counter() - t0)
        print(f"feed {mode}: {rates[mode]:.0f} images/s", flush=True)
    return rates


def step_rate(cfg, meta, gpu_x, gpu_y, device, steps: int = 30) -> float:
    """images/s of this config's own step (head, augmentation) fed from the GPU-resident set."""
    model, opt = fresh(cfg, meta, device)
    for k in range(steps + 10):
        if k == 10:
            sync()
            t0 = time.perf_counter()
        idx = torch.randint(0, len(gpu_x), (cfg.batch_size,), device=device)
        train_step(model, opt, gpu_x[idx], gpu_y[idx], cfg, cfg.peak_lr)
    sync()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def train(cfg, meta, gpu_x, gpu_y, val_x, val_y, device, out: Path) -> dict:
    model, opt = fresh(cfg, meta, device)
    curve, t0, perm, pos = [], time.perf_counter(), torch.randperm(len(gpu_x), device=device), 0
    for step in range(1, cfg.max_steps + 1):
        if pos + cfg.batch_size > len(perm):
            perm, pos = torch.randperm(len(gpu_x), device=device), 0
        idx = perm[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        lr = lr_at(step - 1, **cfg.schedule())
        loss = train_step(model, opt, gpu_x[idx], gpu_y[idx], cfg, lr)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            m = evaluate(model, val_x, val_y, cfg, device, batch=1024)
            curve.append(dict(step=step, seconds=time.perf_counter() - t0, lr=lr, train_loss=loss.item(), **m))
            print(f"  step {step}: val full match {m['val_full_match']:.3f}, char {m['val_char_acc']:.3f} ({curve[-1]['seconds']:.0f} s)", flush=True)
    checkpoint.save(out, model, opt, cfg.max_steps, cfg, meta, curve[-1])
    return dict(config=cfg.to_dict(), curve=curve, train_seconds=curve[-1]["seconds"])


def test(ckpt_dir: Path, tests: list[str]) -> dict:
    """Export the checkpoint to a standalone .pt2 and measure it the way a user would."""
    from results.evaluate import evaluate as evaluate_rows
    from results.evaluate import load_rows
    from results.export import export_model
    from results.predict import load_predictor

    pt2 = export_model(ckpt_dir / checkpoint.FILE, ckpt_dir / "model.pt2")
    predictor = load_predictor(pt2)
    out = {}
    for t in tests:
        m = evaluate_rows(predictor, load_rows(t))
        out[Path(t).stem] = dict(full_match=m["full_match"], char_acc=m["char_acc"], n=m["n"])
        print(f"  {Path(t).name}: full match {m['full_match']:.3f}, char acc {m['char_acc']:.3f}", flush=True)
    return out


def plot(r: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, run in r["runs"].items():
        c = run["curve"]
        tests = ", ".join(f"{k} {v['full_match']:.1%}" for k, v in run["test"].items())
        ax.plot([p["seconds"] / 60 for p in c], [p["val_full_match"] for p in c], marker=".", label=f"{name} (test: {tests})")
    ax.set_xlabel("training minutes on one GPU")
    ax.set_ylabel("validation full match")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"{r['device']}: model {r['model']}, {r['data']['spec']} data ({r['data']['train']} train images), batch {r['batch_size']}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    val_x, val_y, _ = load_split(args.data, "val", base.img_height, base.img_width, processes=os.cpu_count())
    t_decode = time.perf_counter() - t0 - t_gen
    gpu_x = torch.from_numpy(np.array(train_x))[:, None].to(device).contiguous(memory_format=memory_format(device))
    gpu_y = torch.from_numpy(np.array(train_y)).to(device)

    args.out.mkdir(parents=True, exist_ok=True)
    rates = feed_rates(base, meta, train_x, train_y, gpu_x, gpu_y, device, args.feed_steps)
    result = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", torch=torch.__version__,
                  batch_size=base.batch_size, model=MODELS[args.model],
                  data=dict(spec=meta.get("spec", args.spec), train=len(train_x), val=len(val_x), generate_s=t_gen, decode_s=t_decode),
                  feed_images_per_s=rates, feed_ratio_gpu_resident_over_dataloader=rates["gpu_resident"] / rates["dataloader"], runs={})
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2), flush=True)
    for name in args.configs:
        rate = step_rate(config(name, base, 100, 100), meta, gpu_x, gpu_y, device)
        max_steps = max(20, int(rate * 0.9 * args.minutes * 60 / base.batch_size))  # ~10% goes to evaluation
        cfg = config(name, base, max_steps, min(args.eval_every, max(1, max_steps // 10)))
        print(f"{name}: {cfg.head} head, augment {cfg.augment}, {max_steps} steps, peak_lr {cfg.peak_lr:g}, warmup {cfg.warmup_steps}, period {cfg.cosine_period}, "
              f"gamma {cfg.focal_gamma}, pos_weight {cfg.focal_pos_weight}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            run = train(cfg, meta, gpu_x, gpu_y, val_x, val_y, device, Path(tmp))
            run["test"] = test(Path(tmp), args.test)
        result["runs"][name] = dict(run, images_per_s=rate)
        plot(result, args.out / "gpu_train.png")  # after each run: a cut-off command still leaves the runs done
        write_json(args.out, "gpu_train", result)

if __name__ == "__main__":
    main()
