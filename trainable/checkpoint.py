"""One checkpoint module (nanoGPT style: one dict): it finds the checkpoint behind any path a user gives, saves
and loads it, for resume, evaluate, predict, export and retrain.

The dict holds only tensors and plain values (str, int, float, bool, None, lists and dicts of them), so it
loads with `torch.load(weights_only=True)`: a checkpoint from elsewhere can't run code when it is opened.
The training loop's counters (LOOP) sit at its top level, as nanoGPT keeps iter_num and best_val_loss.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
from pathlib import Path

import torch

from trainable import storage
from trainable.errors import UserError
from trainable.config import TrainConfig
from trainable.model import build_model

FILE = "checkpoint.pt"
REPORT = "report.json"  # beside FILE: the evaluation it was saved at (results/checkpoints.py ranks by it)
KEYS = ("model", "step", "config", "charset", "max_len", "metrics")  # what every checkpoint holds
LOOP = dict(best_val_score=-1.0, best_val_full_match=-1.0, evals_since_best=0, train_seconds=0.0, recent_val_scores=())  # loop counters, at step 0
EXPECTED = "give a sweep experiment folder, a run folder (summary.json), a checkpoint folder or a checkpoint.pt"


def save(path, model, optimizer, step: int, cfg: TrainConfig, meta: dict, metrics: dict, **loop) -> None:
    """Write `path/checkpoint.pt` atomically. `model` is the bare module (not the DDP wrapper); `loop`: LOOP's counters."""
    if loop.keys() - LOOP.keys():
        raise TypeError(f"unknown loop counters {sorted(loop.keys() - LOOP.keys())}; expected some of {list(LOOP)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = dict(
        model=model.state_dict(), optimizer=optimizer.state_dict() if optimizer else None, step=step,
        config=plain(cfg.to_dict()), charset=plain(meta["charset"]), max_len=int(meta["max_len"]), metrics=plain(metrics),
        **plain(loop),
    )
    tmp = path / (FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path / FILE)
    (path / REPORT).write_text(json.dumps(plain(dict(metrics, step=step))))  # what ranking reads without torch.load


def loop_state(state: dict) -> tuple:
    """LOOP's counters, in its order, to resume from."""
    return tuple(state[k] for k in LOOP)


def find(path) -> tuple[str, str | None]:
    """(checkpoint file, run folder or None) of a checkpoint.pt, a checkpoint folder or a run folder."""
    path = str(path)
    if storage.is_file(path):
        return path, None
    if storage.exists(storage.join(path, FILE)):
        return storage.join(path, FILE), None
    summary = storage.join(path, "summary.json")
    if storage.exists(summary):
        run = json.loads(storage.read_text(summary))
        if not run.get("best_checkpoint"):
            raise FileNotFoundError(f"run {path} has no checkpoint yet: it ended before its first evaluation")
        return storage.join(run["best_checkpoint"], FILE), run.get("run_path", path)
    raise FileNotFoundError(f"{path} does not exist; {EXPECTED}" if not storage.exists(path) else f"no checkpoint in {path}; {EXPECTED}")


def plain(v):
    """`v` with numpy scalars and arrays turned into Python values (which weights_only loads), recursively."""
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(plain(x) for x in v)
    if hasattr(v, "tolist") and not isinstance(v, torch.Tensor):  # np.float64(0.5), np.int64(3), np.ndarray
        return v.tolist()
    return v


def load(path, map_location="cpu") -> dict:
    """The checkpoint dict of a checkpoint.pt, a checkpoint folder or a run folder. Anything but tensors and plain
    values inside is refused before it can run code; a file that is not a checkpoint is a one-line UserError."""
    file, _ = find(path)
    try:
        source = io.BytesIO(storage.read_bytes(file)) if storage.is_uri(file) else file  # a URI is read into memory
        state = torch.load(source, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as e:
        found = re.search(r"unsupported global[^\n]*?(?=\.?\n|\.?$)|unsupported operand[^\n]*", str(e), re.IGNORECASE)
        if found and found.group(0).lower().startswith("unsupported global"):
            raise UserError(f"{file} is not a plain captcha-tune checkpoint ({found.group(0)}), so it was not opened "
                            "(unpickling it could run code); only plain checkpoints written by captcha-tune's training load") from None
        why = "not a torch file" if isinstance(e, pickle.UnpicklingError) else str(e).split("\n")[0].split(". ")[0] or "empty"
        raise UserError(f"can't read a captcha-tune checkpoint from {file} ({type(e).__name__}: {why}); {EXPECTED}") from None
    if not isinstance(state, dict) or not set(KEYS) <= state.keys():
        has = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise UserError(f"can't read a captcha-tune checkpoint from {file} (a torch file holding {has}, not {list(KEYS)}); {EXPECTED}")
    return state


def load_model(path_or_state, map_location="cpu"):
    """(model in eval mode, checkpoint dict)."""
    state = path_or_state if isinstance(path_or_state, dict) else load(path_or_state, map_location)
    cfg = TrainConfig.from_dict(state["config"])
    model = build_model(cfg, len(state["charset"]), state["max_len"])
    model.load_state_dict(state["model"])
    return model.eval(), state
