"""Checkpoints are safe to open: save -> load round-trips with torch.load(weights_only=True) and gives the
same logits, numpy values in metrics are stored as plain floats; a checkpoint.pt whose unpickling would run
code is refused by trainable.checkpoint.load and by `captcha-tune evaluate/predict/export` with one line
(exit 2, no traceback) and the code never runs; an older checkpoint holding numpy scalars is refused with
a hint, and `convert` makes it loadable."""

from __future__ import annotations

import os
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainable import checkpoint
from trainable.config import TrainConfig
from trainable.errors import UserError
from trainable.model import build_model

REPO = Path(__file__).resolve().parents[1]
CHARSET = " " + string.digits + string.ascii_uppercase
MAX_LEN = 4
CFG = TrainConfig(channels=8, img_height=32, img_width=96)
META = dict(charset=CHARSET, max_len=MAX_LEN)


class MakesMarker:
    """Unpickling this calls os.makedirs(marker): the stand-in for any code a hostile pickle would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def hostile_checkpoint(tmp_path) -> tuple[Path, Path]:
    """(a checkpoint dir whose checkpoint.pt runs code when unpickled, the marker that code would create)."""
    ckpt, marker = tmp_path / "ckpt", tmp_path / "code_ran"
    ckpt.mkdir()
    torch.save(dict(model={}, step=1, config=CFG.to_dict(), charset=CHARSET, max_len=MAX_LEN, metrics={}, x=MakesMarker(marker)),
               ckpt / checkpoint.FILE)
    return ckpt, marker


def test_save_load_round_trip_is_weights_only(tmp_path):
    torch.manual_seed(0)
    model = build_model(CFG, len(CHARSET), MAX_LEN).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    metrics = dict(val_full_match=np.float64(0.25), val_char_acc=0.5, step=np.int64(100), node_id="abc")
    checkpoint.save(tmp_path, model, optimizer, 100, CFG, META, metrics)

    state = torch.load(tmp_path / checkpoint.FILE, weights_only=True)  # the plain loader opens it
    assert type(state["metrics"]["val_full_match"]) is float and type(state["metrics"]["step"]) is int
    loaded, state = checkpoint.load_model(tmp_path)
    assert state["step"] == 100 and state["charset"] == CHARSET and state["config"] == CFG.to_dict()
    x = torch.rand(2, 1, CFG.img_height, CFG.img_width)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_code_in_a_checkpoint_never_runs(tmp_path):
    ckpt, marker = hostile_checkpoint(tmp_path)
    with pytest.raises(UserError, match="not a plain captcha-tune checkpoint") as e:
        checkpoint.load(ckpt)
    assert "\n" not in str(e.value) and "convert" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("verb", ["evaluate", "predict", "export"])
def test_cli_refuses_a_hostile_checkpoint_in_one_line(tmp_path, verb):
    ckpt, marker = hostile_checkpoint(tmp_path)
    args = {"evaluate": [ckpt, "--data", tmp_path / "data.parquet"], "predict": [ckpt, tmp_path / "c.png"],
            "export": [ckpt, "--out", tmp_path / "model.pt2"]}[verb]
    proc = subprocess.run([sys.executable, "-m", "captcha_tune", verb, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a plain captcha-tune checkpoint" in err[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "model.pt2").exists()


def test_an_old_checkpoint_with_numpy_values_converts(tmp_path):
    model = build_model(CFG, len(CHARSET), MAX_LEN)
    old = dict(model=model.state_dict(), optimizer=None, step=5, config=CFG.to_dict(), charset=CHARSET, max_len=MAX_LEN,
               metrics=dict(val_full_match=np.float64(0.5)))
    torch.save(old, tmp_path / checkpoint.FILE)
    with pytest.raises(UserError, match=r"numpy.*convert\('"):
        checkpoint.load(tmp_path)
    checkpoint.convert(tmp_path / checkpoint.FILE)
    state = checkpoint.load(tmp_path)
    assert state["metrics"]["val_full_match"] == 0.5 and state["step"] == 5
