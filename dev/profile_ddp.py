"""Where a 2-worker DDP step's time goes: py-spy samples of both Train workers while they train.

    pip install --target /tmp/pyspy py-spy
    flock /tmp/captcha-tune-ray.lock python -m dev.profile_ddp [--py-spy /tmp/pyspy/bin/py-spy]

Starts `run_training` (2 workers, the throughput benchmark's step), waits for the workers to train, then
records each worker's training-loop thread with `py-spy record --native --idle` and sorts the samples by the
innermost recognisable frame: gloo all-reduce / waiting, backward, forward, optimizer, data loading,
evaluation + report, other. Writes bench/results/profile_ddp.json.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import threading
import time

from bench.common import CACHE, RESULTS, ProcessSampler, easy_data, write_json

# First match wins, searched from the innermost frame outwards.
KINDS = [
    ("all-reduce / wait for the other worker", ("gloo", "allreduce", "all_reduce", "Reducer", "ProcessGroup", "Work::wait", "futex")),
    ("optimizer (Adam, clip)", ("optim/", "clip_grad", "adam")),
    ("backward", ("backward", "autograd")),
    ("forward + loss", ("forward", "compute_loss", "conv", "linear")),
    ("data loading", ("dataloader", "collate", "__getitem__", "fetch")),
    ("evaluate + checkpoint + report", ("evaluate", "checkpoint", "report")),
]


def classify(stack: str) -> str:
    frames = [f.lower() for f in stack.split(";")][::-1]
    for frame in frames:
        for kind, needles in KINDS:
            if any(n.lower() in frame for n in needles):
                return kind
    return "other"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--py-spy", default="/tmp/pyspy/bin/py-spy")
    p.add_argument("--seconds", type=int, default=20)
    args = p.parse_args()

    from cluster.connect import init_ray
    from trainable.config import TrainConfig
    from trainable.driver import RunSettings, run_training

    init_ray()
    cfg = TrainConfig(data_dir=easy_data(), batch_size=256, max_steps=400, eval_every=100)
    run = threading.Thread(target=run_training, args=(cfg, RunSettings(workers=2, storage=str(CACHE / "profile_ddp"), name=f"ddp-{int(time.time())}")))
    run.start()
    with ProcessSampler(every=1.0) as sampler:
        while not any(t.startswith("ray::RayTrainWorker") for _, procs in sampler.samples[-1:] for t, *_ in procs.values()):
            time.sleep(1)
        time.sleep(15)  # start-up and the first steps
        workers = sorted(pid for pid, (t, *_) in sampler.samples[-1][1].items() if t.startswith("ray::RayTrainWorker"))
    outs = [CACHE / f"profile_ddp_{pid}.txt" for pid in workers]
    spies = [subprocess.Popen([args.py_spy, "record", "--pid", str(pid), "--duration", str(args.seconds), "--rate", "100", "--native",
                               "--idle", "--format", "raw", "--output", str(out), "--nonblocking"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid, out in zip(workers, outs)]
    for s in spies:
        s.wait()
    run.join()
    result = {}
    for pid, out in zip(workers, outs):
        counts = collections.Counter()
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if "train_fn_per_worker" in stack:  # the thread that runs the training loop
                counts[classify(stack)] += int(n)
        total = sum(counts.values())
        result[str(pid)] = {k: v / total for k, v in counts.most_common()}
        print(f"worker {pid}: " + ", ".join(f"{k} {v / total:.0%}" for k, v in counts.most_common()))
    write_json(RESULTS, "profile_ddp", dict(seconds=args.seconds, per_worker_share_of_samples=result))


if __name__ == "__main__":
    main()
