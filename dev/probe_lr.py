"""Which peak_lr can a head learn with before ASHA's first rung? A cheap probe, no Ray.

Trains the library's own model and step (bench/loop.py's loop) on a small generated easy set with the cpu preset's
settings (captcha_tune/commands/sweep.py PRESETS: batch 32, warmup 20, cosine period 600, max_steps 1200, an
evaluation every 100 steps) for a few steps past the first rung (search/scheduler.py `rungs`: 300 on that preset),
on ONE torch thread, and prints val full match / char accuracy there per head and peak_lr. The numbers justify the
per-head peak_lr ranges in search/space.py.

    OMP_NUM_THREADS=1 nice -n 10 python -m dev.probe_lr            # ~10 CPU-minutes
    OMP_NUM_THREADS=1 python -m dev.probe_lr --steps 100 --n 600   # a quick look
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.loop import batches, train_loop
from search.scheduler import rungs
from trainable.config import TrainConfig, input_shape
from trainable.data import generate, load_split

PRESET = dict(max_steps=1200, warmup_steps=20, cosine_period=600, eval_every=100, batch_size=32)  # PRESETS["cpu"]["train"]
GRID = dict(ctc=(1e-4, 2e-4, 4e-4, 1e-3, 1e-2), multilabel=(1e-4, 1e-3, 1e-2))


def probe(data: str, head: str, peak_lr: float, steps: int, seed: int) -> dict:
    """Train `steps` steps of the preset's 1200-step schedule (the LR follows the full run's cosine) and return the
    metrics of each evaluation."""
    cfg = TrainConfig(data_dir=data, head=head, peak_lr=peak_lr, seed=seed, **PRESET)
    x, y, meta = load_split(data, "train", cfg.img_height, input_shape(cfg, json.loads((Path(data) / "meta.json").read_text())).img_width)
    cfg = input_shape(cfg, meta)
    vx, vy, _ = load_split(data, "val", cfg.img_height, cfg.img_width)
    # train_loop runs cfg.max_steps steps; the schedule reads max_steps only through warmup and cosine_period, so
    # cutting max_steps to `steps` keeps the LR of the 1200-step run at every step it trains.
    _, _, curve = train_loop(cfg.replace(max_steps=steps), meta, batches(x, y, cfg.batch_size, torch.device("cpu")), vx, vy, torch.device("cpu"))
    return dict(head=head, peak_lr=peak_lr, curve=[dict(step=c["step"], full=c["val_full_match"], char=c["val_char_acc"]) for c in curve])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000, help="images generated (10%% validation)")
    p.add_argument("--steps", type=int, default=0, help="steps per run (default: the first rung + one evaluation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", action="append", default=[], metavar="HEAD=LR,LR", help="probe these instead of GRID (repeatable)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    first = rungs(PRESET["max_steps"], PRESET["eval_every"], round(0.2 * PRESET["max_steps"]))[0]
    steps = args.steps or first + PRESET["eval_every"]
    grid = {h: tuple(map(float, lrs.split(","))) for h, lrs in (g.split("=") for g in args.grid)} or GRID
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = str(generate("easy", args.n, Path(tmp) / "easy", seed=args.seed, processes=1))
        for head, lrs in grid.items():
            for lr in lrs:
                t0 = time.perf_counter()
                r = probe(data, head, lr, steps, args.seed)
                at = {c["step"]: c for c in r["curve"]}
                row = at.get(first, r["curve"][-1])
                results.append(dict(r, seconds=time.perf_counter() - t0))
                print(f"{head:10s} peak_lr {lr:.0e}: step {row['step']}: full {row['full']:.3f} char {row['char']:.3f}; "
                      f"step {r['curve'][-1]['step']}: full {r['curve'][-1]['full']:.3f} char {r['curve'][-1]['char']:.3f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(dict(n=args.n, steps=steps, first_rung=first, preset=PRESET, results=results), indent=2))


if __name__ == "__main__":
    main()
