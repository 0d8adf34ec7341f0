"""The trainer's device feed (trainable/feed.py) gives each rank the batches the DataLoader + DistributedSampler path
gives for the same seed and epoch (the order Ray's prepare_data_loader sets up), every epoch reshuffled; on a CPU the
trainer keeps the DataLoader path. No Ray: CPU tensors stand in for the device."""

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from trainable import feed
from trainable.step import CaptchaArrays


def arrays(n=23, h=4, w=6):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, h, w), dtype=np.uint8), rng.integers(1, 11, (n, 3))


def test_device_feed_yields_the_distributed_loaders_batches_per_rank_and_epoch():
    images, targets = arrays()  # 23 rows over 2 ranks: DistributedSampler pads to 24, 12 a rank, 2 batches of 5
    x, y = feed.to_device(images, targets, torch.device("cpu"))
    for seed in (0, 7):
        epochs = []
        for rank in (0, 1):
            ds = CaptchaArrays(images, targets)
            sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=seed)
            ref = DataLoader(ds, batch_size=5, sampler=sampler, drop_last=True)
            ours = feed.DeviceBatches(x, y, 5, rank=rank, world=2, seed=seed)
            assert len(ours) == len(ref) == 2
            for epoch in (0, 1):
                ref.sampler.set_epoch(epoch)
                ours.sampler.set_epoch(epoch)
                got, want = list(ours), list(ref)
                assert len(got) == len(want) == 2
                for (gx, gy), (wx, wy) in zip(got, want):
                    assert gx.dtype == wx.dtype == torch.uint8 and gx.shape == wx.shape == (5, 1, 4, 6)
                    assert torch.equal(gx, wx) and torch.equal(gy, wy)
                epochs.append(torch.cat([b[1] for b in got]))
        assert not torch.equal(epochs[0], epochs[1])  # set_epoch reshuffles


def test_ranks_share_an_epoch_without_overlap():
    images, targets = arrays(n=24)
    targets = np.arange(24)[:, None]  # row ids as targets
    x, y = feed.to_device(images, targets, torch.device("cpu"))
    seen = [torch.cat([b[1] for b in feed.DeviceBatches(x, y, 4, rank=r, world=3, seed=1)]).flatten() for r in range(3)]
    assert sorted(torch.cat(seen).tolist()) == list(range(24))


def test_cpu_keeps_the_dataloader_path():
    images, targets = arrays()
    prepared = []
    loader = feed.loader(images, targets, 4, torch.device("cpu"), 0, 1, 0, prepare=lambda l: prepared.append(l) or l)
    assert isinstance(loader, DataLoader) and prepared == [loader] and not loader.pin_memory and loader.num_workers == 0
    x, yb = next(iter(loader))
    assert x.shape == (4, 1, 4, 6) and yb.shape == (4, 3)
