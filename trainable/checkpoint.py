"""One checkpoint format (nanoGPT style: one dict) read by one loader: resume, evaluate, export, retrain."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch

from trainable import storage
from trainable.config import TrainConfig
from trainable.model import build_model

FILE = "checkpoint.pt"


def save(path, model, optimizer, step: int, cfg: TrainConfig, meta: dict, metrics: dict) -> None:
    """Write `path/checkpoint.pt` atomically. `model` is the bare module (not the DDP wrapper)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = dict(
        model=model.state_dict(), optimizer=optimizer.state_dict() if optimizer else None, step=step,
        config=cfg.to_dict(), charset=meta["charset"], max_len=meta["max_len"], metrics=metrics,
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


def load(path, map_location="cpu") -> dict:
    file = find(path)
    source = io.BytesIO(storage.read_bytes(file)) if storage.is_uri(file) else file  # a URI is read into memory
    return torch.load(source, map_location=map_location, weights_only=False)


def load_model(path_or_state, map_location="cpu"):
    """(model in eval mode, checkpoint dict)."""
    state = path_or_state if isinstance(path_or_state, dict) else load(path_or_state, map_location)
    cfg = TrainConfig.from_dict(state["config"])
    model = build_model(cfg, len(state["charset"]), state["max_len"])
    model.load_state_dict(state["model"])
    return model.eval(), state
