"""Issue 24's goals read off finished bench sweeps: per sweep, the trials that ended below half its best validation
full match (goal: at most 1 of 8), the best trial's margin over the recommended config (goal: >= 1 point in at
least 3 of the 4 bench sweeps), and what each choice setting was drawn as. `bench/accuracy.sh` runs the sweeps.

    python -m bench.sweeps S/demo S/small S/mixed S/hard        # -> bench/results/sweeps.json and summary rows
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import RESULTS, Row, write_json


def read(exp: Path) -> dict:
    from results.experiment import load, load_sweep, matches

    sweep, (trials, _) = load_sweep(exp), load(exp)
    score = trials["best_val_full_match"].fillna(0.0)
    best = float(score.max())
    rec = [i for i, r in trials.iterrows() if sweep.get("recommended") and matches(r, sweep["recommended"])]
    recommended = float(score[rec[0]]) if rec else None
    choices = {name: trials[name].astype(str).tolist() for name, p in sweep["space"].items() if p.get("kind") == "choice" and name in trials}
    return dict(trials=len(trials), best=best, below_half=int((score < best / 2).sum()), recommended=recommended,
                margin=None if recommended is None else best - recommended, stopped=int((trials["status"] == "asha").sum()),
                choices=choices, scores=[round(float(v), 4) for v in score], statuses=trials["status"].tolist())


def rows(r: dict) -> list[Row]:
    out = []
    for name, x in r["sweeps"].items():
        out.append(Row("sweeps", f"{name}: trials below half the sweep's best ({x['best']:.3f})", f"{x['below_half']} of {x['trials']}",
                       "<= 1", x["below_half"] <= 1))
        if x["margin"] is not None:
            out.append(Row("sweeps", f"{name}: best - recommended config, validation full match (points)", round(100 * x["margin"], 1),
                           ">= 1", x["margin"] >= 0.01))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.sweeps", description=__doc__.splitlines()[0])
    p.add_argument("exps", nargs="+", type=Path, help="finished sweep experiments (STORAGE/NAME)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    result = dict(sweeps={exp.name: read(exp) for exp in args.exps})
    write_json(args.out, "sweeps", result)
    print(json.dumps(result, indent=1))
    for row in rows(result):
        print(f"{row.figure}: {row.value}")
