"""A worker's training batches: the whole set on the device, batched there, when it fits; else a DataLoader.

Both give each DDP rank its share of a shuffled epoch the way torch's DistributedSampler does (the same indices for
the same seed and epoch: tests/test_feed.py), reseeded by `sampler.set_epoch(epoch)`. On a GPU the device feed
replaces per-image `__getitem__`, collation and a host-to-device copy per batch with one copy per worker and one
gather per batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from trainable.step import CaptchaArrays, memory_format

# Share of the device's free memory the training set may take: the rest is the model's, its activations' and, when
# trials share a card, the other trials'.
DEVICE_SHARE = 0.25


class DeviceBatches:
    """Shuffled batches gathered from tensors on the device: `for x, y in feed` is one epoch of this rank's share.

    `sampler` is a DistributedSampler over the set's length (a sampler of indices only), so the order per rank,
    seed and epoch is the DataLoader path's; `drop_last` batches, as the trainer's loader."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch: int, rank: int = 0, world: int = 1, seed: int = 0):
        self.images, self.targets, self.batch = images, targets, batch
        self.sampler = DistributedSampler(range(len(images)), num_replicas=world, rank=rank, shuffle=True, seed=seed)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch

    def __iter__(self):
        idx = torch.tensor(list(self.sampler), device=self.images.device)
        fmt = memory_format(self.images.device)
        for k in range(len(self)):
            sel = idx[k * self.batch : (k + 1) * self.batch]
            yield self.images[sel].contiguous(memory_format=fmt), self.targets[sel]


def to_device(images: np.ndarray, targets: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, h, w] and targets [N, L] -> tensors [N, 1, h, w] and [N, L] on the device, copied once."""
    return torch.from_numpy(np.array(images))[:, None].to(device), torch.from_numpy(np.array(targets)).to(device)  # a copy: the arrays are read-only maps


def fits_on(device: torch.device, images: np.ndarray, targets: np.ndarray) -> bool:
    """Whether the set takes at most DEVICE_SHARE of the device's free memory; only a GPU counts (on a CPU the
    DataLoader path is the trainer's: tests/test_feed.py measures the two)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return images.nbytes + targets.nbytes <= DEVICE_SHARE * free


def loader(images: np.ndarray, targets: np.ndarray, batch: int, device: torch.device, rank: int, world: int, seed: int,
           prepare=lambda loader: loader):
    """This worker's feed: DeviceBatches when the set fits on the GPU, else `prepare(DataLoader)` (Ray's
    prepare_data_loader: its DistributedSampler and device moves) over pinned host memory with loader processes on a
    GPU, in-process on a CPU."""
    if fits_on(device, images, targets):
        return DeviceBatches(*to_device(images, targets, device), batch, rank, world, seed)
    cuda = device.type == "cuda"
    return prepare(DataLoader(CaptchaArrays(images, targets), batch_size=batch, shuffle=True, drop_last=True,
                              pin_memory=cuda, num_workers=2 if cuda else 0, persistent_workers=cuda))
