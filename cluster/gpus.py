"""How a sweep's trials use the GPUs Ray sees: DDP workers per trial, GPUs per worker, trials sharing a card.

One GPU: one worker a trial, one trial a card unless `--gpus-per-worker` asks for a share (0.5: two trials a card,
0.25: four). Several GPUs: each trial's DDP takes every card of the biggest node. A packing that cannot run (a share
of a card above 1 that is not whole, more GPUs than a node has, more trials at a time than fit, trials a card whose
memory estimate exceeds the card) is one ResourceError before anything launches.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass

from cluster.connect import ResourceError

GIB = 2**30
# Per process on a card: the CUDA context and the caching allocator's slack (not measured here: bench/gpu_train.py
# reports max_memory_allocated per trial, to check this estimate against).
CONTEXT_BYTES = 1 * GIB
# Saved activations of a training step per input pixel per first-block channel: bf16 conv, norm and ReLU outputs of
# each block (3 x 2 bytes), the later blocks adding about as much again as the first, x1.3 for the head and the loss.
ACTIVATION_BYTES = 16


@dataclass(frozen=True)
class GpuPlan:
    workers_per_trial: int
    gpus_per_worker: float
    trials_per_card: int  # 1 when a trial takes whole cards

    def __str__(self) -> str:
        return (f"gpu plan: {self.workers_per_trial} worker(s) per trial x {self.gpus_per_worker:g} GPU, "
                f"{self.trials_per_card} trial(s) per card")


def trial_bytes(cfg, n_images: int, workers: int = 1) -> int:
    """Estimated device memory of one worker: the training set held on the device (trainable/feed.py), the saved
    activations of its per-worker batch, and the process's CUDA context. An estimate for refusing hopeless packings,
    not a budget."""
    width = cfg.img_width or math.ceil(cfg.img_height * 160 / 60)  # 0: the generator's 160x60 aspect
    data = n_images * (cfg.img_height * width + 64)  # uint8 pixels + int64 targets
    activations = cfg.per_worker_batch(workers) * cfg.img_height * width * cfg.channels * ACTIVATION_BYTES
    return data + activations + CONTEXT_BYTES


def card_bytes() -> int | None:
    """Memory of the smallest GPU this machine has (nvidia-smi), or None where it cannot tell."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=30)
    sizes = [int(line) for line in out.stdout.split() if line.strip().isdigit()]
    return min(sizes) * 2**20 if out.returncode == 0 and sizes else None


def plan_gpu(nodes: list[dict], workers_per_trial: int | None = None, gpus_per_worker: float | None = None,
             max_concurrent: int = 0, per_worker_bytes: int = 0, card: int | None = None) -> GpuPlan:
    """The trial shape on the cluster whose node resources are `nodes` (`connect.node_resources()`); the user's
    values, where given, are kept and checked. `per_worker_bytes` and `card` (bytes) check the memory of a packed card."""
    gpus = [n.get("GPU", 0) for n in nodes]
    total, biggest = sum(gpus), max(gpus, default=0)
    have = f"Ray sees {total:g} GPU(s) over {len(nodes)} node(s), at most {biggest:g} on one"
    if total <= 0:
        raise ResourceError(f"the gpu preset needs GPUs but {have}; use --preset cpu, or start Ray with its GPUs (ray start --num-gpus N)")
    gpw = 1.0 if gpus_per_worker is None else float(gpus_per_worker)
    if gpw <= 0:
        raise ResourceError(f"--gpus-per-worker {gpw:g} with the gpu preset: use a share of a card (0.5, 0.25) or whole cards (1, 2)")
    if gpw > 1 and gpw != int(gpw):
        raise ResourceError(f"--gpus-per-worker {gpw:g}: a worker takes a share of one card (at most 1) or whole cards; use 1 or {math.ceil(gpw)}")
    if gpw > biggest:
        raise ResourceError(f"--gpus-per-worker {gpw:g} but {have}; use --gpus-per-worker {biggest:g} or less")
    workers = workers_per_trial or (1 if gpw < 1 else max(1, int(biggest // gpw)))  # many cards: DDP over one node's
    if workers * gpw > total:
        raise ResourceError(f"{workers} worker(s) x {gpw:g} GPU = {workers * gpw:g} GPUs a trial but {have}; use fewer --workers-per-trial")
    per_card = math.floor(1 / gpw + 1e-9) if gpw < 1 else 1
    fit = sum(math.floor(g / gpw + 1e-9) for g in gpus) // workers
    if max_concurrent > fit:
        raise ResourceError(f"--max-concurrent {max_concurrent}: only {fit} trial(s) of {workers} x {gpw:g} GPU fit at a time ({have}); "
                            f"use --max-concurrent {fit} or a smaller --gpus-per-worker")
    if card and per_worker_bytes and per_card * per_worker_bytes > card:
        most = max(1, card // per_worker_bytes)
        raise ResourceError(f"{per_card} trials per card at about {per_worker_bytes / GIB:.1f} GiB each need {per_card * per_worker_bytes / GIB:.1f} GiB "
                            f"but a card has {card / GIB:.1f} GiB; use --gpus-per-worker {1 / most:.4g} or a smaller --batch-size/--data-n")
    return GpuPlan(workers, gpw, per_card)
