"""The worker's training loop (trainable/worker.py [4]-[5]) on one device, without Ray, DDP, checkpoints or reports.

Run by the throughput benchmark's bare arm and `bench.gpu_train`; schedule, augmentation ramp, step and evaluation
are the library's own.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

from trainable.augment import strength_at
from trainable.feed import DeviceBatches
from trainable.model import build_model
from trainable.schedule import lr_at
from trainable.step import CaptchaArrays, adam, evaluate, memory_format, speed_up, train_step


def batches(images, targets, batch: int, device):
    """Shuffled batches of a Train worker's DataLoader over the arrays, on the device, epoch after epoch."""
    loader = DataLoader(CaptchaArrays(images, targets), batch_size=batch, shuffle=True, drop_last=True)
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True, memory_format=memory_format(device)), y.to(device, non_blocking=True)


def resident(x, y, batch: int, seed: int = 0):
    """Shuffled batches of the trainer's device feed (`trainable.feed.DeviceBatches`) over a device-resident set,
    epoch after epoch: no loader, no host copies."""
    device_batches, epoch = DeviceBatches(x, y, batch, seed=seed), 0
    while True:
        device_batches.sampler.set_epoch(epoch)
        yield from device_batches
        epoch += 1


def train_loop(cfg, meta: dict, feed, val_x, val_y, device, verbose: bool = False, time_limit: float = 0.0):
    """cfg.max_steps steps from `feed`, evaluating every cfg.eval_every steps and at the end, off the clock; with a
    `time_limit`, ends at the first evaluation past that many training seconds.

    Returns (model, optimizer, curve): per evaluation its step, training seconds so far, the interval's images/s
    (the loss is read before the clock stops: on a GPU that waits for the queued steps) and the metrics."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, len(meta["charset"]), meta["max_len"]).to(device, memory_format=memory_format(device))
    optimizer = adam(model.parameters(), cfg.peak_lr, device)
    speed_up(model, cfg, device)
    curve, seconds, loss_sum, n, t0 = [], 0.0, 0.0, 0, time.perf_counter()
    for step in range(cfg.max_steps):
        images, targets = next(feed)
        lr = lr_at(step, **cfg.schedule())
        loss_sum += train_step(model, optimizer, images, targets, cfg, lr, strength_at(step, cfg.augment, cfg.max_steps, cfg.augment_ramp))
        n += 1
        if (step + 1) % cfg.eval_every and step + 1 < cfg.max_steps:
            continue
        train_loss = float(loss_sum) / n
        interval = time.perf_counter() - t0
        seconds += interval
        m = evaluate(model, val_x, val_y, cfg, device)
        curve.append(dict(step=step + 1, seconds=seconds, lr=lr, train_loss=train_loss, images_per_s=n * cfg.batch_size / interval, **m))
        if verbose:
            print(f"  step {step + 1}: val full match {m['val_full_match']:.3f}, char {m['val_char_acc']:.3f} ({seconds:.0f} s)", flush=True)
        if time_limit and seconds >= time_limit:
            break
        loss_sum, n, t0 = 0.0, 0, time.perf_counter()
    return model, optimizer, curve
