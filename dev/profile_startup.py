"""Where a trial's start-up goes: a timeline of every Ray task and actor of one short training run.

    flock /tmp/captcha-tune-ray.lock python -m dev.profile_startup [--workers 2] [--runs 2]

Runs `trainable.driver.run_training` (the sweep trials' driver) `--runs` times with a few steps, marks
when each worker entered `train_fn_per_worker` and when each report reached the controller, then
prints every task of the job from Ray's state API: when it was submitted, when its process was ready
(scheduling + worker process start), and how long it ran (an actor's creation = its imports + __init__).
Writes bench/results/profile_startup[-TAG].json.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from bench.common import CACHE, RESULTS, easy_data, write_json


def phase_times(task) -> dict:
    """Seconds from submission to each state the task went through."""
    events = sorted(task.events or [], key=lambda e: e["created_ms"])
    t0 = events[0]["created_ms"] if events else 0
    return {e["state"]: (e["created_ms"] - t0) / 1000 for e in events}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--runs", type=int, default=2, help="runs one after another in one Ray (the 2nd shows warm-pool behaviour)")
    p.add_argument("--tag", default="", help="suffix of the JSON name, for a variant (e.g. run with some RAY_* setting)")
    args = p.parse_args()

    import ray
    import ray.train
    from ray.util.state import list_tasks

    import trainable.driver as driver
    from cluster.connect import init_ray
    from trainable.config import TrainConfig

    marks = CACHE / "profile_startup"
    marks.mkdir(parents=True, exist_ok=True)
    for f in marks.glob("*.jsonl"):
        f.unlink()
    original = driver.train_fn_per_worker  # what run_training runs unless given another train_fn

    def timed_train_fn(config):
        """Marks the entry of the per-worker function and times the calls it makes, then runs the real one."""
        import os

        import ray.train.torch
        import torch

        import trainable.checkpoint
        import trainable.worker as worker

        rank, calls = ray.train.get_context().get_world_rank(), []

        def timed(module, name, first_n=1000):
            fn = getattr(module, name)

            def wrapper(*a, **kw):
                t = time.time()
                try:
                    return fn(*a, **kw)
                finally:
                    if sum(c[0] == name for c in calls) < first_n:
                        calls.append((name, t, time.time()))

            setattr(module, name, wrapper)

        for module, name, first_n in [(worker, "load_split", 9), (worker, "build_model", 9), (worker, "evaluate", 9), (worker, "train_step", 3),
                                      (ray.train.torch, "prepare_data_loader", 9), (ray.train.torch, "prepare_model", 9),
                                      (trainable.checkpoint, "save", 9), (ray.train, "report", 9)]:
            timed(module, name, first_n)
        entry = dict(t=time.time(), rank=rank, ld_preload=os.environ.get("LD_PRELOAD", ""), threads=torch.get_num_threads(),
                     interop_threads=torch.get_num_interop_threads(), omp=os.environ.get("OMP_NUM_THREADS"))
        try:
            return original(config)
        finally:
            with open(marks / "entry.jsonl", "a") as f:
                f.write(json.dumps(dict(entry, calls=calls)) + "\n")

    class ReportTimes(ray.train.UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            with open(marks / "reports.jsonl", "a") as f:
                f.write(json.dumps(dict(t=time.time(), step=metrics[0]["step"], train_seconds=metrics[0]["train_seconds"])) + "\n")

    t0 = time.time()
    init_ray()
    t_ray = time.time()
    cfg = TrainConfig(data_dir=easy_data(), max_steps=20, eval_every=10, warmup_steps=2, cosine_period=20)
    calls = []
    for k in range(args.runs):
        start = time.time()
        driver.run_training(cfg, driver.RunSettings(workers=args.workers, storage=str(marks / "runs"), name=f"run{k}-{int(start)}"),
                            callbacks=[ReportTimes()], train_fn=timed_train_fn)
        calls.append((start, time.time()))
    time.sleep(2)  # let task events reach the GCS
    tasks = list_tasks(detail=True, limit=10000, raise_on_missing_output=False)
    entries = [json.loads(l) for l in (marks / "entry.jsonl").read_text().splitlines()]
    reports = [json.loads(l) for l in (marks / "reports.jsonl").read_text().splitlines()]

    print(f"ray.init: {t_ray - t0:.1f} s")
    rows = []
    for t in sorted(tasks, key=lambda t: t.creation_time_ms or 0):
        ph = phase_times(t)
        submitted = (t.creation_time_ms or 0) / 1000
        run = next((k for k, (a, b) in enumerate(calls) if a - 1 <= submitted <= b), -1)
        ready = ph.get("RUNNING", float("nan"))
        took = ((t.end_time_ms or 0) - (t.start_time_ms or 0)) / 1000 if t.end_time_ms and t.start_time_ms else float("nan")
        rows.append(dict(run=run, at=submitted - calls[max(run, 0)][0], type=t.type, name=t.name, pid=t.worker_pid, state=t.state,
                         to_running_s=ready, ran_s=took, phases=ph))
    for k, (a, b) in enumerate(calls):
        print(f"\nrun {k}: {b - a:.1f} s wall")
        for e in entries:
            if a <= e["t"] <= b:
                print(f"  rank {e['rank']} entered train_fn_per_worker at +{e['t'] - a:.1f} s "
                      f"(threads {e['threads']}, interop {e['interop_threads']}, LD_PRELOAD={e['ld_preload']!r})")
                for name, s, t in e["calls"]:
                    print(f"    rank {e['rank']} {name:20s} +{s - a:6.2f} s, {t - s:.3f} s")
        for r in reports:
            if a <= r["t"] <= b:
                print(f"  report step {r['step']} at +{r['t'] - a:.1f} s (train_seconds {r['train_seconds']:.1f})")
        print(f"  {'at':>6} {'to run':>7} {'ran':>7}  type / name")
        for r in rows:
            if r["run"] == k and (r["type"] == "ACTOR_CREATION_TASK" or r["ran_s"] > 0.3):
                print(f"  {r['at']:6.1f} {r['to_running_s']:7.2f} {r['ran_s']:7.2f}  {r['type']} {r['name']} (pid {r['pid']})")
    write_json(RESULTS, "profile_startup" + (f"-{args.tag}" if args.tag else ""), dict(env={k: v for k, v in os.environ.items() if k.startswith(("RAY_", "MALLOC_"))}, ray_init_s=t_ray - t0, calls=calls, entries=entries, reports=reports, tasks=rows))


if __name__ == "__main__":
    main()
