"""Find the checkpoint a command should use, from whatever path the user gave."""

from __future__ import annotations

import json

from trainable import checkpoint, storage


def best_checkpoint(path) -> tuple[str, dict]:
    """(checkpoint file, origin) from a checkpoint file or dir, a run dir, or a sweep experiment dir; local or a URI.

    origin says where the checkpoint came from: {"source": ..., "trial_id": ..., "step": ..., metrics}.
    """
    path = str(path)
    if not storage.exists(path):
        raise FileNotFoundError(f"{path} does not exist; give a sweep experiment, a run folder or a checkpoint")
    if storage.exists(storage.join(path, "sweep.json")):
        from results.experiment import best_in_hindsight

        return best_in_hindsight(path)
    file = checkpoint.find(path)
    state = checkpoint.load(file)
    origin = dict(source=path, step=state["step"], **{k: state["metrics"].get(k) for k in ("val_full_match", "val_char_acc", "val_loss")})
    summary = storage.join(path, "summary.json")
    if storage.exists(summary):
        origin["run"] = json.loads(storage.read_text(summary)).get("run_path")
    return str(file), origin
