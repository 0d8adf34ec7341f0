"""`--init-from` (transfer learning): a model trained on digits, started on digits+letters, keeps its digit rows and
backbone exactly and leaves the new letters at their fresh init, for both heads; what can't be loaded is listed;
bad sources are one line before Ray starts; and a real `train --init-from` run starts from the source's weights."""

import json
import random
import string

import pytest
import torch

from conftest import TINY, cli_error, main, printed
from trainable import checkpoint
from trainable.charset import PAD
from trainable.config import TrainConfig
from trainable.data import SPECS, IMAGE_SIZE, write_dataset
from trainable.errors import UserError
from trainable.model import build_model
from trainable.transfer import init_state, summary

DIGITS = PAD + string.digits
EASY = SPECS["easy"]["charset"]  # PAD + digits + upper case


def models(head, source_cfg=None, target_cfg=None, seed=0):
    """(source built for DIGITS, fresh target built for EASY)."""
    torch.manual_seed(seed)
    source = build_model(source_cfg or TrainConfig(head=head, channels=8, img_width=96), len(DIGITS), 4)
    torch.manual_seed(seed + 1)
    target = build_model(target_cfg or TrainConfig(head=head, channels=8, img_width=96), len(EASY), 4)
    return source.state_dict(), target.state_dict()


def output_rows(state, head, n_symbols):
    """The output layer's weight as [positions, symbols, features] (positions = 1 for the ctc classifier)."""
    w = state["head.2.weight" if head == "multilabel" else "classify.weight"]
    return w.view(-1, n_symbols, w.shape[-1])


@pytest.mark.parametrize("head", ["multilabel", "ctc"])
def test_digit_rows_kept_letters_fresh(head):
    source, fresh = models(head)
    state, report = init_state(fresh, source, DIGITS, EASY)
    assert report["loaded"] == list(fresh) and not report["skipped"] and not report["absent"]
    assert report["mapped"] == 11 and report["symbols"] == 37 and "".join(report["new"]) == string.ascii_uppercase
    for name, t in state.items():
        if name.startswith("features."):
            assert torch.equal(t, source[name]), name
    got, src, init = output_rows(state, head, 37), output_rows(source, head, 11), output_rows(fresh, head, 37)
    assert torch.equal(got[:, :11], src)  # EASY starts with DIGITS: rows 0..10 are the pad and the digits, in order
    assert torch.equal(got[:, 11:], init[:, 11:]) and not torch.equal(init[:, 11:], torch.zeros_like(init[:, 11:]))
    bias = state["head.2.bias" if head == "multilabel" else "classify.bias"].view(-1, 37)
    assert torch.equal(bias[:, :11], source["head.2.bias" if head == "multilabel" else "classify.bias"].view(-1, 11))
    assert summary("src", report).startswith(f"init from src: {len(fresh)}/{len(fresh)} tensors loaded, 11 of 37 symbols mapped; new: 'ABC")


def test_symbols_map_by_name_not_index():
    """A source charset in another order: each target row comes from the source row of the same symbol."""
    source, fresh = models("ctc")
    shuffled = PAD + "9876543210"
    state, _ = init_state(fresh, source, shuffled, EASY)
    for t, c in enumerate(EASY[:11]):
        assert torch.equal(state["classify.weight"][t], source["classify.weight"][shuffled.index(c)]), c


def test_other_shapes_are_skipped_and_listed():
    """A deeper target loads the source's first blocks; its new block and the head (other input size) stay fresh."""
    source, fresh = models("multilabel", target_cfg=TrainConfig(channels=8, depth=5, img_width=96))
    state, report = init_state(fresh, source, DIGITS, EASY)
    assert "features.0.0.weight" in report["loaded"] and torch.equal(state["features.0.0.weight"], source["features.0.0.weight"])
    assert "head.2.weight" in report["skipped"] and any(n.startswith("features.4.") for n in report["absent"])
    assert torch.equal(state["head.2.weight"], fresh["head.2.weight"])
    assert "output layer fresh" in summary("src", report) and "skipped (shape differs): ['head.2.weight', 'head.2.bias']" in summary("src", report)


def test_no_backbone_fits_is_a_user_error():
    source, fresh = models("ctc", target_cfg=TrainConfig(head="ctc", channels=16, img_width=96))
    with pytest.raises(UserError, match=r"no backbone tensor of the source model fits this model \(features.0.0.weight: \[8, 1, 3, 3\] there, \[16, 1, 3, 3\] here\)"):
        init_state(fresh, source, DIGITS, EASY)


# ---------------------------------------------------------------- the CLI: bad sources, one line, exit 2, no Ray
def source_checkpoint(folder, head="multilabel", channels=8):
    cfg = TrainConfig(head=head, channels=channels, img_width=160 * 32 // 60 // 8 * 8)
    torch.manual_seed(0)
    checkpoint.save(folder, build_model(cfg, len(DIGITS), 4), None, 10, cfg, dict(charset=DIGITS, max_len=4), dict(val_full_match=0.5))
    return folder


@pytest.fixture
def meta_only(tmp_path):
    """A dataset folder with only its meta.json: enough for every check before Ray starts."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps(dict(charset=EASY, max_len=4, image_size=list(IMAGE_SIZE))))
    return d


@pytest.mark.parametrize("verb", ["train", "sweep"])
def test_bad_sources_are_one_line(verb, tmp_path, meta_only, capsys):
    data = ["--data-dir" if verb == "train" else "--data", meta_only]
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    fake = tmp_path / "model.pt2"
    fake.write_text("not a program")
    ckpt = source_checkpoint(tmp_path / "ckpt")
    cases = {
        tmp_path / "nope": "does not exist",
        junk: "can't read a captcha-tune checkpoint",
        fake: "not a model exported by captcha-tune",
    }
    for source, why in cases.items():
        code, err = cli_error(capsys, verb, *data, "--storage", tmp_path / "runs", "--init-from", source)
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err
    # a model shape the source can't start (a flag overrides the source's channels)
    code, err = cli_error(capsys, verb, *data, "--storage", tmp_path / "runs", "--init-from", ckpt, "--channels", 16)
    assert code == 2 and "no backbone tensor of the source model fits" in err, err
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_retrain_bad_source_is_one_line(tmp_path, capsys):
    code, err = cli_error(capsys, "retrain", tmp_path / "exp", "--init-from", tmp_path / "nope")
    assert code == 2 and "--init-from" in err and "does not exist" in err and len(err.strip().splitlines()) == 1, err


def test_exported_model_resolves_to_its_checkpoint(tmp_path):
    """A .pt2 starts from the checkpoint it was exported from; once that is gone, one line says what to give instead."""
    from results.export import export_model
    from results.transfer import source_folder

    ckpt = source_checkpoint(tmp_path / "ckpt")
    pt2 = export_model(ckpt / checkpoint.FILE, tmp_path / "model.pt2")
    assert source_folder(pt2) == str(ckpt)
    (ckpt / checkpoint.FILE).unlink()
    with pytest.raises(UserError, match="starts training only from the checkpoint it was exported from.*no longer exists"):
        source_folder(pt2)


# ---------------------------------------------------------------- end to end, real Ray
def digits_dataset(folder, n=600, seed=0):
    from captcha.image import ImageCaptcha

    rng, gen = random.Random(seed), ImageCaptcha(width=IMAGE_SIZE[0], height=IMAGE_SIZE[1])
    labels = ["".join(rng.choices(string.digits, k=4)) for _ in range(n)]
    rows = [(gen.generate(label, format="png").getvalue(), label, "text") for label in labels]
    return str(write_dataset(folder, {"train": rows[60:], "val": rows[:60]}, DIGITS, 4, spec="digits", image_size=list(IMAGE_SIZE)))


def flags(d):
    return [x for k, v in d.items() for x in (f"--{k.replace('_', '-')}", v)]


def test_train_init_from_a_digits_run(module_ray, easy_data, tmp_path, capsys):
    """Both runs in this process (`main`) on one Ray (`module_ray`)."""
    digits = digits_dataset(tmp_path / "digits")
    main("train", "--data-dir", digits, "--workers", 1, "--storage", tmp_path, "--name", "digits", *flags({**TINY, "max_steps": 60}))
    source = checkpoint.load(tmp_path / "digits")  # the run folder's best checkpoint

    # a learning rate of ~0 keeps the weights where they started: the run's checkpoint shows what was loaded
    still = {**TINY, "max_steps": 2, "eval_every": 2, "warmup_steps": 0, "peak_lr": 1e-12, "min_lr": 1e-12}
    capsys.readouterr()
    main("train", "--data-dir", easy_data, "--workers", 1, "--storage", tmp_path, "--name", "easy", "--init-from", tmp_path / "digits",
         *flags({k: v for k, v in still.items() if k != "channels"}))  # channels: the source's
    out = printed(capsys, "tensors loaded")
    n = len(source["model"])
    assert f"init from {tmp_path / 'digits'}" in out and f"{n}/{n} tensors loaded, 11 of 37 symbols mapped; new: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'" in out, out[-3000:]

    run = checkpoint.load(tmp_path / "easy")
    assert checkpoint.load(run["config"]["init_from"])["step"] == source["step"]  # the source run's best checkpoint folder
    assert run["config"]["channels"] == TINY["channels"]
    got, src = output_rows(run["model"], "multilabel", 37), output_rows(source["model"], "multilabel", 11)
    torch.testing.assert_close(got[:, :11], src, atol=1e-6, rtol=0)
    torch.testing.assert_close(run["model"]["features.0.0.weight"], source["model"]["features.0.0.weight"], atol=1e-6, rtol=0)
    torch.manual_seed(0)  # the worker's seed: the letters' rows are the fresh init
    fresh = build_model(TrainConfig.from_dict(run["config"]), 37, 4).state_dict()
    torch.testing.assert_close(got[:, 11:], output_rows(fresh, "multilabel", 37)[:, 11:], atol=1e-6, rtol=0)
