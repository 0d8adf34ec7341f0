"""Accuracy on the held-out bench sets of what the CPU-sized default sweep + retrain produce.

`bench/accuracy.sh` runs the sweep and the retrains; this collects their `summary.json` files:

    python -m bench.accuracy EXP/retrain/easy EXP/retrain/mixed

Writes bench/results/accuracy.json; `python -m bench.run` puts it in summary.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import RESULTS, Row, write_json


def collect(run_dirs, out) -> dict:
    from trainable.data import read_meta

    runs = {}
    for d in map(Path, run_dirs):
        s = json.loads((d / "summary.json").read_text())
        if "test" not in s:
            raise SystemExit(f"{d} was retrained without --test; nothing to collect")
        meta = read_meta(s["config"]["data_dir"])
        runs[d.name] = dict(spec=meta.get("spec", "?"), train_images=meta["counts"]["train"], steps=s["final_metrics"]["step"],
                            train_seconds=s["final_metrics"]["train_seconds"], workers=s["workers"],
                            val_full_match=s["best_metrics"]["val_full_match"], test=s["test"],
                            test_file=s["test"].get("file", f"synth-{meta.get('spec')}-test.parquet"))
    result = dict(runs=runs)
    write_json(out, "accuracy", result)
    return result


def rows(r: dict) -> list[Row]:
    return [Row("accuracy", f"{x['test_file']}: full match / char acc ({x['spec']}, {x['train_images'] // 1000}k images, {x['steps']} steps, "
                            f"{x['train_seconds'] / 60:.0f} min training on {x['workers']} workers)",
                f"{x['test']['full_match']:.3f} / {x['test']['char_acc']:.3f}") for x in r["runs"].values()]


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.accuracy")
    p.add_argument("runs", nargs="+", help="retrain run folders (EXP/retrain/NAME) holding summary.json")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    print(json.dumps(collect(args.runs, args.out), indent=2))
