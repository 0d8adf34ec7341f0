"""Checkpoints are safe to open: save -> load round-trips with torch.load(weights_only=True) and gives the
same logits, numpy values in metrics are stored as plain floats; a checkpoint.pt whose unpickling would run
code is refused by trainable.checkpoint.load and by `captcha-tune evaluate/predict/export` with one line
(exit 2, no traceback) and the code never runs; an older checkpoint holding numpy scalars is refused with
one line too."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from results import checkpoints
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
    assert "\n" not in str(e.value) and "could run code" in str(e.value)
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


def test_a_checkpoint_with_numpy_values_is_refused_in_one_line(tmp_path):
    """Not plain (numpy scalars need unpickling): refused, never opened with weights_only=False."""
    model = build_model(CFG, len(CHARSET), MAX_LEN)
    old = dict(model=model.state_dict(), optimizer=None, step=5, config=CFG.to_dict(), charset=CHARSET, max_len=MAX_LEN,
               metrics=dict(val_full_match=np.float64(0.5)))
    torch.save(old, tmp_path / checkpoint.FILE)
    with pytest.raises(UserError, match=r"not a plain captcha-tune checkpoint \(.*numpy") as e:
        checkpoint.load(tmp_path)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- one lookup for every path, loop counters
def test_resolve_takes_each_kind_of_path(tmp_path):
    """A sweep folder (its best checkpoint in hindsight, ranked by val_score from each kept checkpoint's report), a
    run folder (summary.json), a checkpoint folder and a checkpoint.pt all resolve to the same file; a trial whose
    checkpoint file is gone, or that is still running, is left out where asked."""
    from results import checkpoints
    from search import status

    exp = tmp_path / "exp"
    run = exp / "train" / "a"
    model = build_model(CFG, len(CHARSET), MAX_LEN)
    for step, score in ((10, 0.25), (20, 0.5)):
        checkpoint.save(run / f"checkpoint_0000{step}", model, None, step, CFG, META,
                        dict(val_full_match=score, val_char_acc=0.75, val_loss=0.3, val_score=score + 0.749))
    ckpt = run / "checkpoint_000020"
    (run / "summary.json").write_text(json.dumps(dict(run_path=str(run), best_checkpoint=str(ckpt))))
    gone = exp / "train" / "b" / "checkpoint_000020"  # a better report whose checkpoint file was deleted
    checkpoint.save(gone, model, None, 20, CFG, META, dict(val_full_match=0.9, val_char_acc=0.9, val_loss=0.1, val_score=1.8))
    (gone / checkpoint.FILE).unlink()
    checkpoint.save(exp / "train" / "c" / "checkpoint_000010", model, None, 10, CFG, META,
                    dict(val_full_match=0.4, val_char_acc=0.5, val_loss=0.5, val_score=0.9))
    (exp / "sweep.json").write_text("{}")
    status.record(str(exp), "a", "completed", 20)  # c has no record: still running

    file = str(ckpt / checkpoint.FILE)
    resolved = {kind: checkpoints.resolve(p) for kind, p in dict(sweep=exp, run=run, folder=ckpt, file=file).items()}
    assert {kind: f for kind, (f, _) in resolved.items()} == dict(sweep=file, run=file, folder=file, file=file)
    assert resolved["sweep"][1] == dict(source=str(exp), trial_id="a", step=20, val_full_match=0.5, val_char_acc=0.75, val_loss=0.3, val_score=1.249)
    assert resolved["run"][1] == dict(source=str(run), run=str(run), step=20, val_full_match=0.5, val_char_acc=0.75, val_loss=0.3, val_score=1.249)
    assert resolved["folder"][1] == dict(source=str(ckpt), step=20, val_full_match=0.5, val_char_acc=0.75, val_loss=0.3, val_score=1.249)
    assert [o["trial_id"] for _, o in checkpoints.ranked(exp)] == ["a", "c"]
    assert [o["trial_id"] for _, o in checkpoints.ranked(exp, finished=True)] == ["a"]
    assert checkpoint.load(run)["step"] == checkpoint.load(file)["step"] == 20


def test_paths_without_a_checkpoint_are_one_line_errors(tmp_path):
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "summary.json").write_text(json.dumps(dict(run_path="x", best_checkpoint=None)))
    for path, error in [(tmp_path / "nope", "does not exist"), (tmp_path, "no checkpoint in"), (tmp_path / "empty_run", "no checkpoint yet")]:
        with pytest.raises(FileNotFoundError, match=error) as e:
            checkpoints.resolve(path)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("content", ["empty", "text", "cut short", "a tensor", "a foreign dict"])
def test_unreadable_checkpoints_are_one_line_user_errors(tmp_path, content):
    file = tmp_path / checkpoint.FILE
    if content in ("empty", "text"):
        file.write_text("" if content == "empty" else "not a checkpoint\n")
    elif content == "cut short":
        torch.save(dict(model=build_model(CFG, len(CHARSET), MAX_LEN).state_dict()), file)
        file.write_bytes(file.read_bytes()[:2000])
    else:
        torch.save(torch.zeros(2) if content == "a tensor" else dict(weights=torch.zeros(2)), file)
    with pytest.raises(UserError, match="can't read a captcha-tune checkpoint from") as e:
        checkpoints.resolve(tmp_path)
    assert "\n" not in str(e.value) and "give a sweep experiment folder" in str(e.value)


def test_loop_counters_are_top_level_fields_that_resume_restores(tmp_path):
    model = build_model(CFG, len(CHARSET), MAX_LEN)
    loop = dict(best_val_score=0.625, best_val_full_match=0.5, evals_since_best=2, train_seconds=12.5, recent_val_scores=[0.5, 0.625])
    metrics = dict(val_full_match=0.25, best_val_score=0.0, best_val_full_match=0.0, evals_since_best=0, train_seconds=1.0)
    checkpoint.save(tmp_path, model, None, 30, CFG, META, metrics, **loop)
    state = torch.load(tmp_path / checkpoint.FILE, weights_only=True)
    assert {k: state[k] for k in checkpoint.LOOP} == loop
    assert checkpoint.loop_state(state) == (0.625, 0.5, 2, 12.5, [0.5, 0.625])  # the top level, not the metrics
    with pytest.raises(TypeError, match="unknown loop counters.*best_val_los"):
        checkpoint.save(tmp_path, model, None, 30, CFG, META, metrics, best_val_los=1.0)
