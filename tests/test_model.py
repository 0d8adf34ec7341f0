"""The maths against references: focal loss vs BCE, CTC vs F.ctc_loss, greedy decoding, the LR schedule's key points,
labels, model shapes, augmentation, input shapes from the data and the settings that cannot work."""


import pytest
import torch
import torch.nn.functional as F

from trainable.charset import FULL_CHARSET, LabelError, decode, encode
from trainable.config import TrainConfig
from trainable.augment import augment
from trainable.config import input_shape
from trainable.loss import OVERFLOW, compute_loss, ctc_greedy, ctc_loss, decode_indices, focal_loss, match_counts, softmax_ce_loss
from trainable.model import CaptchaCNN, CaptchaCRNN, build_model
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
    full, chars = match_counts(logits.argmax(-1), target)
    assert (full.item(), chars.item()) == (2, 11)


def test_ctc_loss_matches_torch_on_a_hand_made_case():
    torch.manual_seed(0)
    logits = torch.randn(2, 9, 6)
    target = torch.tensor([[3, 3, 5, 0], [2, 0, 0, 0]])  # 'aab' with a pad, and 'c' with three pads
    expected = torch.stack([
        F.ctc_loss(logits[0].log_softmax(-1)[:, None], torch.tensor([[3, 3, 5]]), [9], [3], blank=0, reduction="sum") / 3,
        F.ctc_loss(logits[1].log_softmax(-1)[:, None], torch.tensor([[2]]), [9], [1], blank=0, reduction="sum") / 1,
    ]).mean()
    assert ctc_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_greedy_decoding_collapses_repeats_and_drops_blanks():
    path = torch.tensor([[0, 3, 3, 0, 3, 5, 5, 0, 0, 2], [4, 4, 4, 4, 0, 0, 0, 0, 0, 0], [1, 2, 1, 2, 1, 2, 1, 0, 0, 0]])
    decoded = ctc_greedy(F.one_hot(path, 6).float(), max_len=4)
    assert decoded.tolist() == [[3, 3, 5, 2], [4, 0, 0, 0], [1, 2, 1, OVERFLOW]]  # the last: 7 symbols, more than max_len


def test_both_heads_give_max_len_indices_and_train():
    torch.manual_seed(0)
    x, y = torch.randint(0, 256, (8, 1, 32, 96)).float(), torch.randint(1, 37, (8, 4))
    y[0, 2:] = 0  # a shorter label
    for head, sequence in (("multilabel", "conv"), ("ctc", "conv"), ("ctc", "gru"), ("ctc", "transformer")):
        for block in ("plain", "residual"):
            cfg = TrainConfig(head=head, block=block, sequence=sequence, img_width=96, channels=8, depth=4, seq_hidden=32)
            m = build_model(cfg, 37, 4)
            opt = torch.optim.Adam(m.parameters(), lr=3e-3)
            first = None
            for _ in range(30):
                loss = compute_loss(m(x), y, cfg)
                first = first if first is not None else loss.item()
                opt.zero_grad()
                loss.backward()
                opt.step()
            assert loss.item() < first * 0.7, (head, block)
            assert decode_indices(m.eval()(x), head, 4).shape == (8, 4)
    for sequence in ("conv", "gru", "transformer"):
        assert CaptchaCRNN(37, 4, 32, 96, channels=8, sequence=sequence)(x).shape == (8, 24, 37)  # one column per 4 pixels


def test_transformer_columns_attend_across_the_line_and_use_positions():
    """Unlike the conv layer (2 columns a side), a change in the first column reaches the last; and the sinusoidal
    positions make the layer tell the columns apart: two equal columns get different outputs."""
    from trainable.model import TransformerColumns, sinusoidal_positions

    torch.manual_seed(0)
    layer = TransformerColumns(features=16, hidden=32, heads=4).eval()
    f = torch.randn(1, 16, 24)
    g = f.clone()
    g[:, :, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(layer(f)[0, -1], layer(g)[0, -1])
        same = torch.zeros(1, 16, 24)
        out = layer(same)
    assert not torch.allclose(out[0, 0], out[0, 5])
    table = sinusoidal_positions(24, 32)
    assert table[0, 0::2].abs().max() == 0 and torch.all(table[0, 1::2] == 1)  # sin 0 and cos 0 at position 0
    assert table[:, 0].tolist() == pytest.approx(torch.sin(torch.arange(24.0)).tolist(), abs=1e-6)  # fastest wavelength: 2 pi


def test_augmentation_keeps_shapes_and_strength_0_is_identity():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 1, 32, 96)).to(torch.uint8)
    assert augment(x, 0.0) is x
    out = augment(x, 1.0)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 255 and not torch.equal(out, x.float())
    white = torch.full((2, 1, 32, 96), 255, dtype=torch.uint8)  # a blank captcha stays (nearly) blank: borders fill white
    assert augment(white, 1.0).mean() > 240


def test_augmentation_built_once_samples_as_a_pipeline_built_at_each_strength():
    """`augment` scales the draws of one strength-1 pipeline; with the same seed it gives what kornia's pipeline
    built at that strength gives (the ramp's strengths included), and strength 0 stays the identity."""
    from trainable.augment import built, pipeline

    x = torch.randint(0, 256, (16, 1, 32, 96), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    for s in (0.05, 0.3, 1.0):
        torch.manual_seed(1)
        ours = augment(x, s)
        torch.manual_seed(1)
        ref = (1.0 - pipeline(s)(1.0 - x.float() / 255.0).clamp(0, 1)) * 255.0
        assert (ours - ref).abs().max() < 0.05, s
    assert built.cache_info().currsize == 1 and augment(x, 0.0) is x


def test_input_shape_from_the_data_and_settings_that_cannot_work():
    meta = dict(max_len=5, image_size=[200, 50])
    assert input_shape(TrainConfig(img_height=32), meta).img_width == 128  # 200x50 at height 32: 4:1
    assert input_shape(TrainConfig(img_height=32, img_width=100), meta).img_width == 100
    with pytest.raises(ValueError, match="too small for depth"):
        TrainConfig(img_height=8, depth=4)
    with pytest.raises(ValueError, match="head must be one of"):
        TrainConfig(head="transformer")
    with pytest.raises(ValueError, match="sequence must be one of .*'transformer'.*not 'attention'"):
        TrainConfig(head="ctc", sequence="attention")
    with pytest.raises(ValueError, match="seq_hidden 100 must be a multiple of seq_heads 8"):
        TrainConfig(head="ctc", sequence="transformer", seq_hidden=100, seq_heads=8)
    assert TrainConfig(sequence="gru", seq_hidden=100, seq_heads=8).seq_heads == 8  # heads matter to the transformer only
    with pytest.raises(ValueError, match="augment must be"):
        TrainConfig(augment=-1)
    with pytest.raises(ValueError, match="ctc head needs img_width >= 60"):  # 7 symbols: 15 columns of 4 pixels
        input_shape(TrainConfig(head="ctc", img_width=40), dict(max_len=7))
