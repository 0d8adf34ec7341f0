"""The training step and the evaluation pass: plain PyTorch, no Ray, so a GPU box without Ray runs them."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from trainable.augment import augment
from trainable.loss import compute_loss, decode_indices, match_counts
from trainable.metric import score


class CaptchaArrays(Dataset):
    """Memory-mapped uint8 images [N, h, w] and targets [N, L] -> (image [1, h, w], target [L])."""

    def __init__(self, images: np.ndarray, targets: np.ndarray):
        self.images, self.targets = images, targets

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.images[i]))[None], torch.from_numpy(np.array(self.targets[i]))


def autocast(device: torch.device):
    """bf16 autocast on GPU, a no-op elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """The trainer's optimizer: Adam with AMSGrad (the reference run's), one fused kernel on a GPU."""
    return torch.optim.Adam(params, lr=lr, amsgrad=True, fused=device.type == "cuda")


def speed_up(model: torch.nn.Module, cfg, device: torch.device) -> None:
    """cuDNN picks its fastest convolutions for the (fixed) input shape on a GPU; cfg.compile compiles the model's
    forward in place (state dict keys unchanged, so checkpoints stay one format)."""
    torch.backends.cudnn.benchmark = device.type == "cuda"
    if cfg.compile:
        model.compile()


def train_step(model, optimizer, images, targets, cfg, lr: float, strength: float | None = None) -> torch.Tensor:
    """One optimizer step; returns the loss as a tensor (no host sync here).

    strength: augmentation strength of this step (`augment.strength_at`); None = cfg.augment."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    images = augment(images, cfg.augment if strength is None else strength)
    with autocast(images.device):
        logits = model(images)
    loss = compute_loss(logits, targets, cfg)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss.detach()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over workers when running distributed; identity in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def all_max(t: torch.Tensor) -> torch.Tensor:
    """Maximum over workers when running distributed; identity in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


@torch.no_grad()
def evaluate(model, images: np.ndarray, targets: np.ndarray, cfg, device, rank: int = 0, world: int = 1, batch: int = 256) -> dict:
    """Validation metrics over this worker's share (rows rank::world), summed over all workers."""
    model.eval()
    idx = np.arange(rank, len(images), world)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, full matches, right chars, n
    for k in range(0, len(idx), batch):
        sel = idx[k : k + batch]
        x = torch.from_numpy(np.array(images[sel]))[:, None].to(device)
        y = torch.from_numpy(np.array(targets[sel])).to(device)
        with autocast(device):
            logits = model(x)
        full, chars = match_counts(decode_indices(logits, cfg.head, y.shape[1]), y)
        loss = compute_loss(logits, y, cfg)
        sums += torch.stack([loss.double() * len(sel), full.double(), chars.double(), torch.tensor(float(len(sel)), device=device, dtype=torch.float64)])
    model.train()
    loss_sum, full, chars, n = all_sum(sums).tolist()
    char_acc = chars / (n * targets.shape[1])
    return dict(val_full_match=full / n, val_char_acc=char_acc, val_loss=loss_sum / n, val_score=score(full, char_acc, n))


def memory_format(device: torch.device):
    """channels_last on GPU (faster convs with bf16), the default layout elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
