"""Find the checkpoint a command should use, from whatever path the user gave."""

from __future__ import annotations

import json
from pathlib import Path

from trainable import checkpoint


def best_checkpoint(path) -> tuple[str, dict]:
    """(checkpoint file, origin) from a checkpoint file or dir, a run dir, or a sweep experiment dir.

    origin says where the checkpoint came from: {"source": ..., "trial_id": ..., "step": ..., metrics}.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give a sweep experiment, a run folder or a checkpoint")
    if (path / "sweep.json").exists():
        from results.experiment import best_in_hindsight

        return best_in_hindsight(path)
    file = checkpoint.find(path)
    state = checkpoint.load(file)
    origin = dict(source=str(path), step=state["step"], **{k: state["metrics"].get(k) for k in ("val_full_match", "val_char_acc", "val_loss")})
    summary = path / "summary.json"
    if summary.exists():
        origin["run"] = json.loads(summary.read_text()).get("run_path")
    return str(file), origin
