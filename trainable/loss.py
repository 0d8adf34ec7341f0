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


def ctc_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CTC over per-column logits [B, T, C] with blank = index 0 (the pad, never in a label).

    target [B, L] holds the label's indices followed by pads, so its length is its count of non-pads.
    Mean over the batch of the loss divided by the label length (`F.ctc_loss`'s 'mean').
    """
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [T, B, C]
    input_lengths = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long, device=logits.device)
    target_lengths = (target != 0).sum(1)
    return F.ctc_loss(log_probs, target, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=True)


OVERFLOW = -1  # the last index of a CTC reading longer than max_len: it matches no label, so that reading counts as wrong


def ctc_greedy(logits: torch.Tensor, max_len: int) -> torch.Tensor:
    """Best path decoding: argmax per column, collapse repeats, drop blanks -> indices [B, max_len], pad-filled.

    A reading of more than max_len symbols ends in OVERFLOW instead of being cut to max_len (which could
    turn an extra glyph into a full match). Written with tensor ops only (cumsum + scatter) so that
    torch.export keeps it inside the model.
    """
    best = logits.argmax(-1)  # [B, T]
    keep = emitting_steps(logits, "ctc")
    slot = torch.where(keep, keep.long().cumsum(1) - 1, torch.full_like(best, max_len)).clamp(max=max_len)
    out = torch.zeros(best.shape[0], max_len + 1, dtype=best.dtype, device=best.device)
    out = out.scatter(1, slot, torch.where(keep, best, torch.zeros_like(best)))  # overflow lands in the last column
    too_long = keep.sum(1) > max_len
    last = torch.where(too_long, torch.full_like(out[:, 0], OVERFLOW), out[:, max_len - 1])
    return torch.cat([out[:, : max_len - 1], last[:, None]], dim=1)


def emitting_steps(logits: torch.Tensor, head: str) -> torch.Tensor:
    """bool [B, T]: the steps whose argmax is a symbol of the reading (ctc: the first column of a run of one
    symbol; multilabel: a position that is not a pad)."""
    best = logits.argmax(-1)
    if head != "ctc":
        return best != 0
    previous = torch.cat([torch.zeros_like(best[:, :1]), best[:, :-1]], dim=1)
    return (best != 0) & (best != previous)


def decode_indices(logits: torch.Tensor, head: str, max_len: int) -> torch.Tensor:
    """Logits of either head -> symbol indices [B, max_len] (pads where there is no symbol)."""
    return ctc_greedy(logits, max_len) if head == "ctc" else logits.argmax(-1)


def compute_loss(logits, target, cfg) -> torch.Tensor:
    """The training loss of `cfg` (head, loss, focal settings)."""
    if cfg.head == "ctc":
        return ctc_loss(logits, target)
    if cfg.loss == "focal":
        return focal_loss(logits.float(), target, cfg.focal_gamma, cfg.focal_pos_weight)
    return softmax_ce_loss(logits.float(), target)


def match_counts(indices: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(number of fully right labels, number of right characters) in the batch, from decoded indices [B, L]
    (an OVERFLOW index matches nothing)."""
    right = indices == target
    return right.all(dim=1).sum(), right.sum()
