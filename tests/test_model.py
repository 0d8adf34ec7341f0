"""The maths against references: focal loss vs BCE, the LR schedule's key points, labels, model shapes."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainable.charset import FULL_CHARSET, LabelError, decode, encode
from trainable.config import TrainConfig
from trainable.loss import focal_loss, match_counts, softmax_ce_loss
from trainable.model import CaptchaCNN
from trainable.schedule import lr_at


def test_focal_loss_with_gamma0_posweight1_is_bce():
    logits, target = torch.randn(4, 7, 68), torch.randint(0, 68, (4, 7))
    bce = F.binary_cross_entropy_with_logits(logits, F.one_hot(target, 68).float())
    assert focal_loss(logits, target, gamma=0.0, pos_weight=1.0).item() == pytest.approx(bce.item(), rel=1e-6)


def test_focal_loss_focuses_and_weights():
    logits, target = torch.randn(4, 7, 68), torch.randint(0, 68, (4, 7))
    assert focal_loss(logits, target, 2.0, 1.0) < focal_loss(logits, target, 0.0, 1.0)  # easy examples down-weighted
    assert focal_loss(logits, target, 0.0, 3.0) > focal_loss(logits, target, 0.0, 1.0)  # positives up-weighted


def test_softmax_ce_matches_cross_entropy():
    logits, target = torch.randn(2, 4, 10), torch.randint(0, 10, (2, 4))
    ref = sum(F.cross_entropy(logits[:, i], target[:, i]) for i in range(4)) / 4
    assert softmax_ce_loss(logits, target).item() == pytest.approx(ref.item(), rel=1e-6)


def test_schedule_warmup_peak_floor_and_restart():
    kw = dict(peak_lr=1e-3, min_lr=1e-5, warmup_steps=100, cosine_period=1000)
    assert lr_at(0, **kw) == 1e-5  # warmup starts at the floor
    assert lr_at(50, **kw) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(100, **kw) == 1e-3  # peak at the end of warmup
    assert lr_at(600, **kw) == pytest.approx((1e-3 + 1e-5) / 2)  # half way down the cosine
    assert lr_at(1099, **kw) == pytest.approx(1e-5, abs=1e-8)  # floor at the end of the period
    assert lr_at(1100, **kw) == 1e-3  # warm restart
    assert all(lr_at(s, **kw) >= 1e-5 for s in range(0, 3000, 7))


def test_reference_defaults_equal_the_original_run():
    c = TrainConfig()
    assert (c.peak_lr, c.min_lr, c.warmup_steps, c.cosine_period, c.max_steps) == (1e-3, 1e-5, 5000, 150000, 300000)
    assert (c.focal_gamma, c.focal_pos_weight, c.batch_size, c.grad_clip) == (2.0, 3.0, 128, 1.0)


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_dict({"peak_lrr": 1e-3})
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(peak_lr=1e-6, min_lr=1e-5)


def test_label_round_trip_and_errors():
    idx = encode("3+5=?", FULL_CHARSET, 7)
    assert len(idx) == 7 and idx[-2:] == [0, 0] and decode(idx, FULL_CHARSET) == "3+5=?"
    assert len(FULL_CHARSET) == 68
    with pytest.raises(LabelError, match="outside the charset"):
        encode("ab#", FULL_CHARSET, 7)
    with pytest.raises(LabelError, match="more than max length"):
        encode("ABCDEFGH", FULL_CHARSET, 7)


def test_model_output_shape_and_metrics():
    m = CaptchaCNN(n_symbols=37, max_len=4, img_height=32, img_width=96, channels=8)
    logits = m(torch.randint(0, 256, (3, 1, 32, 96)).float())
    assert logits.shape == (3, 4, 37)
    target = logits.argmax(-1)
    target[0, 0] = (target[0, 0] + 1) % 37
    full, chars = match_counts(logits, target)
    assert (full.item(), chars.item()) == (2, 11)
