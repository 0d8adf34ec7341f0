"""The per-worker training loop, read top to bottom. Ray touchpoints are numbered [1]..[5]."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time

import ray
import ray.train
import ray.train.torch
import torch
from torch.utils.data import DataLoader

from trainable import checkpoint, transfer
from trainable.errors import UserError
from trainable.augment import strength_at
from trainable.config import TrainConfig, input_shape
from trainable.data import dataset_meta, load_split
from trainable.metric import METRIC, WORST
from trainable.model import build_model
from trainable.schedule import lr_at
from trainable.step import CaptchaArrays, all_sum, evaluate, memory_format, train_step


class DivergedError(UserError):
    """The loss became NaN/inf: this config's learning rate is too high for it. `step`: where it happened."""

    def __init__(self, reason: str, step: int | None = None):
        super().__init__(reason)
        self.step = step

    def __reduce__(self):  # crosses process boundaries (Tune's trial actor -> driver) with its step
        return type(self), (str(self), self.step)


def quiet_report_logs() -> None:
    """Ray Train logs every report at INFO under a logger named by its source file (LoggingConfig misses it)."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_fn_per_worker(config: dict) -> dict | None:
    """Returns None, or why the run ended early: dict(step, reason) of a divergence."""
    cfg = TrainConfig.from_dict(config)  # typos fail here, before any compute
    quiet_report_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    cfg = input_shape(cfg, dataset_meta(cfg.data_dir))  # img_width 0 -> the data's aspect
    train_x, train_y, meta = load_split(cfg.data_dir, "train", cfg.img_height, cfg.img_width)
    val_x, val_y, _ = load_split(cfg.data_dir, "val", cfg.img_height, cfg.img_width)

    # [1] data: DistributedSampler over workers + moves batches to this worker's device
    loader = DataLoader(CaptchaArrays(train_x, train_y), batch_size=cfg.per_worker_batch(world), shuffle=True, drop_last=True)
    loader = ray.train.torch.prepare_data_loader(loader)
    device = ray.train.torch.get_device()

    # [2] model: placed on the device and wrapped in DDP (gloo on CPU, nccl on GPU)
    bare = build_model(cfg, len(meta["charset"]), meta["max_len"]).to(memory_format=memory_format(device))
    if cfg.init_from and not ray.train.get_checkpoint():  # transfer learning; a resumed run has weights of its own ([3])
        line = transfer.init_model(bare, transfer.load_source(cfg.init_from), cfg.init_from, meta["charset"])
        if rank == 0:
            print(line, flush=True)
    model = ray.train.torch.prepare_model(bare)
    optimizer = torch.optim.Adam(bare.parameters(), lr=cfg.peak_lr, amsgrad=True)

    # [3] resume: a restarted run (worker failure, Ctrl-C, retrain --resume) continues from its latest checkpoint
    step, best, best_full, evals_since_best, train_seconds = 0, -1.0, -1.0, 0, 0.0  # best: of val_score (METRIC), which patience counts
    restored = ray.train.get_checkpoint()
    if restored:
        with restored.as_directory() as d:
            state = checkpoint.load(d)
        bare.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, (best, best_full, evals_since_best, train_seconds) = state["step"], checkpoint.loop_state(state)  # checkpoint.LOOP's order
    start_step = step

    # [4] train: step-based, evaluate every eval_every steps and at the end
    steps_per_epoch = len(loader)
    loss_sum, n_loss, t0 = torch.zeros((), device=device), 0, time.perf_counter()
    while step < cfg.max_steps:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(step // steps_per_epoch)
        for images, targets in loader:
            lr = lr_at(step, **cfg.schedule())
            strength = strength_at(step, cfg.augment, cfg.max_steps)
            loss_sum += train_step(model, optimizer, images.to(memory_format=memory_format(device)), targets, cfg, lr, strength)
            n_loss += 1
            step += 1
            if step % cfg.eval_every and step < cfg.max_steps:
                continue

            # [5] evaluate on every rank's share, all-reduce, report; rank 0 alone writes the checkpoint
            train_loss = all_sum(loss_sum).item() / (n_loss * world)
            interval = time.perf_counter() - t0
            train_seconds += interval
            if not math.isfinite(train_loss):  # report it and end cleanly: retrying a divergence only repeats it
                ray.train.report(dict(step=step, lr=lr, train_loss=train_loss, val_full_match=0.0, val_score=WORST, diverged=1.0))
                return dict(step=step, reason=f"diverged: train loss {train_loss} at step {step} with peak_lr={cfg.peak_lr:g}; lower peak_lr")
            metrics = evaluate(model, val_x, val_y, cfg, device, rank, world)
            improved = metrics[METRIC] > best
            best, best_full = max(best, metrics[METRIC]), max(best_full, metrics["val_full_match"])
            evals_since_best = 0 if improved or step <= cfg.warmup_steps else evals_since_best + 1
            metrics.update(step=step, epoch=step / steps_per_epoch, lr=lr, train_loss=train_loss, best_val_full_match=best_full, best_val_score=best,
                           evals_since_best=evals_since_best, diverged=0.0, start_step=start_step, node_id=ray.get_runtime_context().get_node_id(), train_seconds=train_seconds, world_size=world,
                           images_per_s=n_loss * cfg.batch_size / interval)
            stop = step >= cfg.max_steps or (cfg.patience and evals_since_best >= cfg.patience)
            with tempfile.TemporaryDirectory() as tmp:
                if rank == 0:
                    checkpoint.save(tmp, bare, optimizer, step, cfg, meta, metrics, best_val_score=best, best_val_full_match=best_full,
                                    evals_since_best=evals_since_best, train_seconds=train_seconds)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
            loss_sum, n_loss, t0 = torch.zeros((), device=device), 0, time.perf_counter()
            if stop:
                return

