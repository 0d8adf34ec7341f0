"""The per-worker training loop, read top to bottom. Ray touchpoints are numbered [1]..[5]."""

from __future__ import annotations

import math
import os
import tempfile
import time

import ray
import ray.train
import ray.train.torch
import torch

from trainable import checkpoint, feed, transfer
from trainable.ray_internals import quiet_report_logs
from trainable.errors import UserError
from trainable.augment import strength_at
from trainable.config import TrainConfig, input_shape
from trainable.data import dataset_meta, load_split
from trainable.metric import METRIC, WORST
from trainable.model import build_model
from trainable.schedule import cycle_at, lr_at
from trainable.step import adam, all_max, all_sum, evaluate, memory_format, speed_up, train_step


class DivergedError(UserError):
    """The loss became NaN/inf: this config's learning rate is too high for it. `step`: where it happened."""

    def __init__(self, reason: str, step: int | None = None):
        super().__init__(reason)
        self.step = step

    def __reduce__(self):  # crosses process boundaries (Tune's trial actor -> driver) with its step
        return type(self), (str(self), self.step)


def train_fn_per_worker(config: dict) -> dict:
    """Returns why the run ended: dict(step, kind, reason), kind one of cap, time, plateau, diverged."""
    cfg = TrainConfig.from_dict(config)  # typos fail here, before any compute
    quiet_report_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    cfg = input_shape(cfg, dataset_meta(cfg.data_dir))  # img_width 0 -> the data's aspect
    train_x, train_y, meta = load_split(cfg.data_dir, "train", cfg.img_height, cfg.img_width)
    val_x, val_y, _ = load_split(cfg.data_dir, "val", cfg.img_height, cfg.img_width)

    # [1] data: the set on this worker's GPU when it fits, else a DataLoader that Ray gives a DistributedSampler over
    # workers and moves batches to the device (trainable/feed.py)
    device = ray.train.torch.get_device()
    loader = feed.loader(train_x, train_y, cfg.per_worker_batch(world), device, rank, world, cfg.seed, prepare=ray.train.torch.prepare_data_loader)

    # [2] model: placed on the device and wrapped in DDP (gloo on CPU, nccl on GPU)
    bare = build_model(cfg, len(meta["charset"]), meta["max_len"]).to(memory_format=memory_format(device))
    if cfg.init_from and not ray.train.get_checkpoint():  # transfer learning; a resumed run has weights of its own ([3])
        line = transfer.init_model(bare, transfer.load_source(cfg.init_from), cfg.init_from, meta["charset"])
        if rank == 0:
            print(line, flush=True)
    model = ray.train.torch.prepare_model(bare)
    optimizer = adam(bare.parameters(), cfg.peak_lr, device)
    speed_up(bare, cfg, device)  # cudnn.benchmark on a GPU, torch.compile when cfg.compile

    # [3] resume: a restarted run (worker failure, Ctrl-C, retrain --resume) continues from its latest checkpoint
    step, (best, best_full, evals_since_best, train_seconds, recent) = 0, checkpoint.LOOP.values()  # best: of val_score (METRIC)
    restored = ray.train.get_checkpoint()
    if restored:
        with restored.as_directory() as d:
            state = checkpoint.load(d)
        bare.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, (best, best_full, evals_since_best, train_seconds, recent) = state["step"], checkpoint.loop_state(state)  # checkpoint.LOOP's order
    start_step = step

    # [4] train: step-based, evaluate every eval_every steps and at the end
    steps_per_epoch = len(loader)
    loss_sum, n_loss, t0 = torch.zeros((), device=device), 0, time.perf_counter()
    while step < cfg.max_steps:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(step // steps_per_epoch)
        for images, targets in loader:
            lr = lr_at(step, **cfg.schedule())
            strength = strength_at(step, cfg.augment, cfg.max_steps, cfg.augment_ramp)
            loss_sum += train_step(model, optimizer, images.to(memory_format=memory_format(device)), targets, cfg, lr, strength)
            n_loss += 1
            step += 1
            if step % cfg.eval_every and step < cfg.max_steps:
                continue

            # [5] evaluate on every rank's share, all-reduce, report; rank 0 alone writes the checkpoint
            train_loss = all_sum(loss_sum).item() / (n_loss * world)
            # the slowest rank's clock: every rank must take the same stop decision (a time budget read from each
            # rank's own clock once ended one rank's run while the other waited in its next all-reduce, for ever)
            interval = all_max(torch.tensor(time.perf_counter() - t0, dtype=torch.float64, device=device)).item()
            train_seconds += interval
            if not math.isfinite(train_loss):  # report it and end cleanly: retrying a divergence only repeats it
                ray.train.report(dict(step=step, lr=lr, train_loss=train_loss, val_full_match=0.0, val_score=WORST, diverged=1.0))
                return dict(step=step, kind="diverged", reason=f"diverged: train loss {train_loss} at step {step} with peak_lr={cfg.peak_lr:g}; lower peak_lr")
            metrics = evaluate(model, val_x, val_y, cfg, device, rank, world)
            improved = metrics[METRIC] > best
            best, best_full = max(best, metrics[METRIC]), max(best_full, metrics["val_full_match"])
            evals_since_best = 0 if improved or step <= cfg.warmup_steps else evals_since_best + 1
            recent = (*recent, metrics[METRIC])[-4:]
            stop = stop_reason(cfg, step, evals_since_best, recent, train_seconds)
            metrics.update(step=step, epoch=step / steps_per_epoch, lr=lr, train_loss=train_loss, best_val_full_match=best_full, best_val_score=best,
                           evals_since_best=evals_since_best, diverged=0.0, start_step=start_step, node_id=ray.get_runtime_context().get_node_id(), train_seconds=train_seconds, world_size=world,
                           images_per_s=n_loss * cfg.batch_size / interval)
            with tempfile.TemporaryDirectory() as tmp:
                if rank == 0:
                    checkpoint.save(tmp, bare, optimizer, step, cfg, meta, metrics, best_val_score=best, best_val_full_match=best_full,
                                    evals_since_best=evals_since_best, train_seconds=train_seconds, recent_val_scores=recent)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
            loss_sum, n_loss, t0 = torch.zeros((), device=device), 0, time.perf_counter()
            if stop:
                return dict(step=step, kind=stop[0], reason=stop[1])


def stop_reason(cfg: TrainConfig, step: int, evals_since_best: int, recent: tuple, train_seconds: float) -> tuple[str, str] | None:
    """(kind, why) when the run ends at this evaluation: its step cap, its time budget, or a plateau.

    A plateau: no better val_score for `patience` evaluations past warmup and for at least the current cosine
    cycle's length (after a warm restart the score dips while the LR is high: only a whole cycle without a new best
    is a plateau), and the score did not rise in each of the last 3 evaluations."""
    if step >= cfg.max_steps:
        return "cap", f"reached max_steps {cfg.max_steps}"
    if cfg.time_budget_s and train_seconds >= cfg.time_budget_s:
        return "time", f"time budget of {cfg.time_budget_s:.0f} s spent at step {step}"
    if not cfg.patience or step <= cfg.warmup_steps:
        return None
    cycle = cycle_at(step, cfg.warmup_steps, cfg.cosine_period, cfg.cosine_mult)[1]
    needed = max(cfg.patience, math.ceil(cycle / cfg.eval_every))
    rising = len(recent) == 4 and all(a < b for a, b in zip(recent, recent[1:]))
    if evals_since_best >= needed and not rising:
        return "plateau", f"plateau: no better val_score in {evals_since_best} evaluations (a cosine cycle of {cycle} steps) at step {step}"
    return None
