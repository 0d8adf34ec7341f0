"""One checkpoint format (nanoGPT style: one dict) read by one loader: resume, evaluate, export, retrain.

The dict holds only tensors and plain values (str, int, float, bool, None, lists and dicts of them), so it
loads with `torch.load(weights_only=True)`: a checkpoint from elsewhere can't run code when it is opened.
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


def save(path, model, optimizer, step: int, cfg: TrainConfig, meta: dict, metrics: dict) -> None:
    """Write `path/checkpoint.pt` atomically. `model` is the bare module (not the DDP wrapper)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = dict(
        model=model.state_dict(), optimizer=optimizer.state_dict() if optimizer else None, step=step,
        config=plain(cfg.to_dict()), charset=plain(meta["charset"]), max_len=int(meta["max_len"]), metrics=plain(metrics),
    )
    tmp = path / (FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path / FILE)


def find(path) -> str:
    """A checkpoint file from a file, a checkpoint dir, or a run dir (its best checkpoint); local or a URI (s3://...)."""
    path = str(path)
    if storage.is_file(path):
        return path
    if storage.exists(storage.join(path, FILE)):
        return storage.join(path, FILE)
    summary = storage.join(path, "summary.json")
    if storage.exists(summary):
        return storage.join(json.loads(storage.read_text(summary))["best_checkpoint"], FILE)
    raise FileNotFoundError(f"no checkpoint at {path}: give a checkpoint dir, a checkpoint.pt, or a run dir with summary.json")


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
    """The checkpoint dict; anything but tensors and plain values inside is refused before it can run code."""
    file = find(path)
    source = io.BytesIO(storage.read_bytes(file)) if storage.is_uri(file) else file  # a URI is read into memory
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"unsupported global[^\n]*?(?=\.?\n|\.?$)|unsupported operand[^\n]*", str(e), re.IGNORECASE)
        if not found or not found.group(0).lower().startswith("unsupported global"):  # not a pickle at all: corrupt or foreign
            raise pickle.UnpicklingError(f"not a torch checkpoint ({found.group(0) if found else 'unreadable'})") from None
        raise UserError(f"{file} is not a plain captcha-tune checkpoint ({found.group(0)}), so it was not opened "
                        "(unpickling it could run code); if you trust it (e.g. saved by an older captcha-tune), convert it "
                        f"once: python -c \"from trainable.checkpoint import convert; convert('{file}')\"") from None


def convert(file) -> None:
    """Rewrite a checkpoint you trust (e.g. one saved before checkpoints were plain) so that `load` opens it.

    This unpickles the file in full (weights_only=False), which runs any code inside it: only for your own files.
    """
    state = torch.load(file, map_location="cpu", weights_only=False)
    tmp = f"{file}.tmp"
    torch.save({k: v if k in ("model", "optimizer") else plain(v) for k, v in state.items()}, tmp)
    os.replace(tmp, file)


def load_model(path_or_state, map_location="cpu"):
    """(model in eval mode, checkpoint dict)."""
    state = path_or_state if isinstance(path_or_state, dict) else load(path_or_state, map_location)
    cfg = TrainConfig.from_dict(state["config"])
    model = build_model(cfg, len(state["charset"]), state["max_len"])
    model.load_state_dict(state["model"])
    return model.eval(), state
