"""Losses over the MAX_LEN x CHARSET logits, and the metrics. Pure tensor functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float, pos_weight: float) -> torch.Tensor:
    """Sigmoid focal loss of the original project. logits [B, L, C], target indices [B, L].

    With gamma=0 and pos_weight=1 it is exactly binary_cross_entropy_with_logits on one-hot targets.
    """
    onehot = F.one_hot(target, logits.shape[-1]).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(
        logits, onehot, pos_weight=torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device), reduction="none"
    )
    p = torch.sigmoid(logits)
    p_t = p * onehot + (1 - p) * (1 - onehot)
    return ((1 - p_t) ** gamma * bce).mean()


def softmax_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-position softmax cross-entropy over the same logits."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def compute_loss(logits, target, loss: str, gamma: float, pos_weight: float) -> torch.Tensor:
    if loss == "focal":
        return focal_loss(logits.float(), target, gamma, pos_weight)
    return softmax_ce_loss(logits.float(), target)


def match_counts(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(number of fully right labels, number of right characters) in the batch."""
    right = logits.argmax(-1) == target
    return right.all(dim=1).sum(), right.sum()
