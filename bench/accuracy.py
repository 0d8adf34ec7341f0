"""Accuracy on the held-out bench sets of what the default sweeps + retrains produce (`bench/accuracy.sh` runs them):
`pngs` writes its small-data input, `collect` the retrains' test figures and each sweep's head x augmentation table.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from bench.common import RESULTS, Row, write_json


def write_pngs(n: int, out, seed: int) -> Path:
    """n 'easy' captchas written as OUT/LABEL.png, like a user's own labelled folder (repeated labels get _k)."""
    from trainable.data import _render, sample_label

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    labels = [sample_label("easy", rng)[0] for _ in range(n)]
    for k, (label, png) in enumerate(zip(labels, _render(labels))):
        path = out / f"{label}.png"
        (path if not path.exists() else out / f"{label}_{k}.png").write_bytes(png)
    return out


def head_augment_table(exp: Path) -> list[dict]:
    """Best validation full match of a sweep's trials per head and augmentation (off / on)."""
    from results.experiment import load

    trials = load(exp)[0]
    if "head" not in trials:
        return []
    trials = trials.assign(augmented=trials.get("augment", 0).fillna(0) > 0)
    return [dict(head=head, augment="on" if augmented else "off", trials=len(g), best_val_full_match=float(g["best_val_full_match"].max()))
            for (head, augmented), g in trials.groupby(["head", "augmented"])]


def collect(run_dirs, out) -> dict:
    from trainable.data import read_meta

    runs = {}
    for d in map(Path, run_dirs):
        s = json.loads((d / "summary.json").read_text())
        if "test" not in s:
            raise SystemExit(f"{d} was retrained without --test; nothing to collect")
        meta = read_meta(s["config"]["data_dir"])
        exp = d.parent.parent
        runs[d.name] = dict(spec=meta.get("spec", "?"), train_images=meta["counts"]["train"], steps=s["final_metrics"]["step"],
                            train_seconds=s["final_metrics"]["train_seconds"], workers=s["workers"], head=s["config"]["head"],
                            augment=s["config"]["augment"], val_full_match=s["best_metrics"]["val_full_match"], test=s["test"],
                            test_file=s["test"].get("file"), sweep=str(exp), sweep_trials=head_augment_table(exp))
    write_json(out, "accuracy", dict(runs=runs))
    return runs


def rows(r: dict) -> list[Row]:
    out = []
    for name, x in r["runs"].items():
        out.append(Row("accuracy", f"{name}: {x['test_file']} full match / char acc ({x['spec']}, {x['train_images']} train images, "
                                   f"{x['head']} head, augment {x['augment']:.2f}, {x['steps']} steps, "
                                   f"{x['train_seconds'] / 60:.0f} min on {x['workers']} workers)",
                       f"{x['test']['full_match']:.3f} / {x['test']['char_acc']:.3f}"))
        for t in x["sweep_trials"]:
            out.append(Row("accuracy", f"{name} sweep: best val full match, {t['head']} head, augment {t['augment']} ({t['trials']} trials)",
                           f"{t['best_val_full_match']:.3f}"))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.accuracy")
    sub = p.add_subparsers(dest="verb", required=True)
    c = sub.add_parser("collect", help="retrain summaries -> accuracy.json")
    c.add_argument("runs", nargs="+", help="retrain run folders (EXP/retrain/NAME) holding summary.json")
    c.add_argument("--out", type=Path, default=RESULTS)
    g = sub.add_parser("pngs", help="easy captchas as PNG files named by their labels")
    g.add_argument("--n", type=int, default=1000)
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.verb == "pngs":
        print(f"wrote {len(list(write_pngs(args.n, args.out, args.seed).glob('*.png')))} PNGs to {args.out}")
    else:
        print(json.dumps(collect(args.runs, args.out), indent=2))
