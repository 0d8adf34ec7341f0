"""Run the chosen benchmarks, then write summary.md from every NAME.json in the output folder.

The Ray benchmarks (throughput, overhead, search) share one embedded Ray in this process; on a shared machine run
the command under the Ray lock (`flock /tmp/captcha-tune-ray.lock python -m bench.run`).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
from pathlib import Path

from bench.common import RESULTS, machine, read_json

NAMES = ("data", "throughput", "overhead", "search")  # the order they run in; accuracy.json, sequence.json and sweeps.json come from their own commands


def fmt(value) -> str:
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        return "n/a" if math.isnan(value) else "never"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def summary(out: Path) -> str:
    results = {name: r for name in NAMES + ("accuracy", "sequence", "sweeps") if (r := read_json(out, name))}
    m = machine()
    lines = ["# Benchmarks", "", f"Machine: `{m['platform']}`, {m['cpu']}, {m['cores']} cores; torch {m['torch']}, ray {m['ray']}, "
             f"Python {m['python']}; summary written {m['date']}.", "", "| benchmark | figure | value | goal | met? |", "|---|---|---|---|---|"]
    for name, r in results.items():
        module = importlib.import_module(f"bench.{name}")
        for row in module.rows(r, results.get("throughput")) if name == "data" else module.rows(r):
            met = "" if row.met is None else ("yes" if row.met else "**no**")
            lines.append(f"| {row.benchmark} | {row.figure} | {fmt(row.value)} | {row.goal} | {met} |")
    lines.append("")
    for name, r in results.items():
        plot = f"![{name}]({name}.png)" if (out / f"{name}.png").exists() else "(no plot)"
        lines.append(f"- `{name}.json` ({r['machine']['date']}): {plot}")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that every benchmark runs (tests)")
    p.add_argument("--only", default=",".join(NAMES), help=f"comma-separated subset of {','.join(NAMES)}")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of NAME.json, plots and summary.md")
    args = p.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    if unknown := sorted(set(chosen) - set(NAMES)):
        p.error(f"unknown benchmark(s) {unknown}; choose from {','.join(NAMES)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: one thread per process, as the workers
    args.out.mkdir(parents=True, exist_ok=True)
    for name in (n for n in NAMES if n in chosen):
        print(f"--- bench {name}{' (quick)' if args.quick else ''}", flush=True)
        importlib.import_module(f"bench.{name}").run(args.out, args.quick)
    print(summary(args.out))


if __name__ == "__main__":
    main()
