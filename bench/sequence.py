"""The CTC head's sequence layer at equal time: `conv` (the default), `gru` and `transformer` (issue 24's attention
option), each trained for the same wall-clock seconds with the library's own loop (bench/loop.py, no Ray), the
recommended config otherwise (search/space.py RECOMMENDED: peak 1e-3, augment 0.3) at the cpu preset's batch.

    python -m bench.sequence --data DIR --seconds 150 --test ../shared/bench/synth-hard-test.parquet

Writes bench/results/sequence.json and sequence.png (validation full match against training seconds).
"""

from __future__ import annotations

import argparse
import os
import tempfile

from bench.common import RESULTS, Row, write_json

SEQUENCES = ("conv", "gru", "transformer")
PRESET = dict(batch_size=32, warmup_steps=20, eval_every=100, head="ctc", augment=0.3, peak_lr=1e-3)


def run(data: str, seconds: float, test: str | None, threads: int) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from bench.loop import batches, train_loop
    from results.evaluate import evaluate as evaluate_rows
    from results.evaluate import load_rows
    from results.predict import load_predictor
    from trainable import checkpoint
    from trainable.config import TrainConfig, input_shape
    from trainable.data import dataset_meta, load_split

    torch.set_num_threads(threads)
    meta = dataset_meta(data)
    rows = load_rows(test) if test else None
    out, fig = {}, plt.figure(figsize=(8, 4))
    for sequence in SEQUENCES:
        # a long nominal schedule: the time limit ends each run, at the same LR phase for all three
        cfg = input_shape(TrainConfig(data_dir=data, sequence=sequence, max_steps=100_000, cosine_period=100_000, **PRESET), meta)
        x, y, _ = load_split(data, "train", cfg.img_height, cfg.img_width)
        vx, vy, _ = load_split(data, "val", cfg.img_height, cfg.img_width)
        model, _, curve = train_loop(cfg, meta, batches(x, y, cfg.batch_size, torch.device("cpu")), vx, vy, torch.device("cpu"),
                                     time_limit=seconds)
        best = max(curve, key=lambda c: c["val_score"])
        result = dict(steps=curve[-1]["step"], seconds=curve[-1]["seconds"], val_full_match=curve[-1]["val_full_match"],
                      best_val_full_match=best["val_full_match"], parameters=sum(p.numel() for p in model.parameters()),
                      images_per_s=curve[-1]["step"] * cfg.batch_size / curve[-1]["seconds"], curve=curve)
        if rows:  # the last model, read through a checkpoint as `evaluate` would
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint.save(tmp, model, None, curve[-1]["step"], cfg, meta, curve[-1])
                metrics = evaluate_rows(load_predictor(tmp), rows)
            result["test"] = {k: metrics[k] for k in ("full_match", "char_acc", "n")}
        out[sequence] = result
        plt.plot([c["seconds"] for c in curve], [c["val_full_match"] for c in curve], marker=".", label=sequence)
        print(f"{sequence}: {result['steps']} steps in {result['seconds']:.0f} s, val full match {result['val_full_match']:.3f}"
              + (f", test {result['test']['full_match']:.3f}" if rows else ""), flush=True)
    plt.xlabel("training seconds")
    plt.ylabel("val_full_match")
    plt.title(f"CTC sequence layers at equal time ({os.path.basename(data.rstrip('/'))}, {threads} threads)")
    plt.legend()
    plt.grid(alpha=0.3)
    plt.tight_layout()
    return dict(data=data, seconds=seconds, threads=threads, test=test and os.path.basename(test), runs=out), fig


def rows(r: dict) -> list[Row]:
    return [Row("sequence", f"{name}: full match after {x['seconds']:.0f} s ({x['steps']} steps)"
                + (f", on {r['test']}" if "test" in x else ", validation"), x["test"]["full_match"] if "test" in x else x["val_full_match"])
            for name, x in r["runs"].items()]


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.sequence", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a dataset folder (data generate / import)")
    p.add_argument("--seconds", type=float, default=150.0, help="training seconds per sequence layer")
    p.add_argument("--test", default=None, help="a held-out Parquet set to read with each model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    result, fig = run(args.data, args.seconds, args.test, args.threads)
    write_json(args.out, "sequence", result, fig)
