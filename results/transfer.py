"""Where `--init-from` points, settled on the driver before Ray starts: the checkpoint folder behind an exported
model, a sweep experiment or a run, and a check that its weights fit the model they will start.

The workers get a plain checkpoint folder (TrainConfig.init_from) and map it with trainable/transfer.py.
"""

from __future__ import annotations

import json
import posixpath
import zipfile
from pathlib import Path

from results.export import META_FILE
from results.predict import is_exported, zip_names
from results import checkpoints
from trainable import storage
from trainable.config import TrainConfig, input_shape
from trainable.errors import UserError
from trainable.model import build_model
from trainable.transfer import init_model, load_source, shape_settings

EXPECTED = "give a model.pt2, a sweep experiment, a run folder or a checkpoint"


def source_folder(path) -> str:
    """The checkpoint folder behind `path`: a .pt2 (the checkpoint it was exported from), a sweep experiment (its best
    checkpoint in hindsight), a run folder (its best checkpoint), a checkpoint folder or checkpoint.pt."""
    path = str(path)
    if not storage.is_uri(path) and Path(path).is_file() and (path.endswith(".pt2") or is_exported(zip_names(Path(path)))):
        path = exported_checkpoint(Path(path))
    try:
        file, _ = checkpoints.resolve(path)
    except FileNotFoundError as e:
        raise UserError(f"--init-from: {e}") from None
    return storage.normalize(posixpath.dirname(file) if storage.is_uri(file) else str(Path(file).parent))


def exported_checkpoint(path: Path) -> str:
    """The checkpoint a .pt2 was exported from (recorded in its META_FILE): a .pt2 holds a compiled program, whose
    weights are constants of that program, so fine-tuning starts from the checkpoint behind it."""
    meta_name = next((n for n in zip_names(path) if n.endswith(f"/extra/{META_FILE}")), None)
    if meta_name is None:
        raise UserError(f"--init-from {path}: not a model exported by captcha-tune (no {META_FILE} inside); {EXPECTED}")
    with zipfile.ZipFile(path) as z:
        recorded = json.loads(z.read(meta_name)).get("checkpoint")
    if not recorded or not storage.exists(recorded):
        raise UserError(f"--init-from {path}: a .pt2 starts training only from the checkpoint it was exported from, and "
                        f"{'it records none (an ensemble?)' if not recorded else f'{recorded} no longer exists'}; "
                        "give the run folder or sweep experiment it came from")
    return recorded


def source(path) -> tuple[str, dict]:
    """(checkpoint folder behind `path`, the source's shape settings: a target's defaults, under its flags)."""
    folder = source_folder(path)
    return folder, shape_settings(load_source(folder))


def check(cfg: TrainConfig, meta: dict) -> str:
    """Build the model `cfg` trains on a dataset with this meta.json and map cfg.init_from into it once: the report
    line, or a one-line UserError when no backbone tensor fits."""
    cfg = input_shape(cfg, meta)
    return init_model(build_model(cfg, len(meta["charset"]), meta["max_len"]), load_source(cfg.init_from), cfg.init_from, meta["charset"])
