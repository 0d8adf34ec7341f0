"""Where is the best checkpoint? One answer for export, predict, retrain, the report and the ensemble.

A sweep keeps each trial's Train run in EXP/train/<trial_id>/checkpoint_*/ (the best few by val_score), each with
the report it was saved at (trainable/checkpoint.REPORT). Ranking reads those small files: no Tune experiment
state, no checkpoint weights, and a trial's status file only where `finished` asks for it.
"""

from __future__ import annotations

import json

from results.experiment import METRICS
from search import status
from trainable import checkpoint, storage
from trainable.metric import METRIC



def ranked(exp, finished: bool = False) -> list[tuple[str, dict]]:
    """(checkpoint file, origin) of each trial at its best kept checkpoint by METRIC, best trial first (ties: the
    earlier trial). finished: only trials that ended (not running; a diverged trial's checkpoints from before it
    diverged count)."""
    exp = storage.normalize(str(exp))
    best: dict[str, tuple[str, dict]] = {}
    for run in storage.list_dir(storage.join(exp, "train")):
        trial_id = run.rsplit("/", 1)[-1]
        for folder in storage.list_dir(run):
            report = storage.join(folder, checkpoint.REPORT)
            if not folder.rsplit("/", 1)[-1].startswith("checkpoint_") or not storage.exists(report) or not storage.exists(storage.join(folder, checkpoint.FILE)):
                continue
            m = json.loads(storage.read_text(report))
            if trial_id not in best or m[METRIC] > best[trial_id][1][METRIC]:
                origin = dict(source=exp, trial_id=trial_id, step=int(m["step"]), **{k: float(m[k]) for k in METRICS if k in m})
                best[trial_id] = storage.join(folder, checkpoint.FILE), origin
    order = sorted(best.values(), key=lambda fo: (-fo[1][METRIC], fo[1]["trial_id"]))
    if finished:
        order = [fo for fo in order if status.read(exp, fo[1]["trial_id"])["kind"] != "running"]
    return order


def best(exp) -> tuple[str, dict]:
    """The best checkpoint in hindsight of a sweep: the best report by METRIC of any trial, running ones included."""
    top = ranked(exp)
    if not top:
        raise FileNotFoundError(f"{exp} has no checkpoint yet; wait for the first evaluation of a trial")
    return top[0]


def resolve(path) -> tuple[str, dict]:
    """(checkpoint file, origin) from a sweep experiment folder (its best checkpoint in hindsight), a run folder (its
    best checkpoint), a checkpoint folder or a checkpoint.pt; local or a URI (s3://...). A path that holds none or an
    unreadable file is a one-line error. origin: {"source", "trial_id" (sweeps), "run" (runs), "step", val metrics}."""
    path = str(path)
    if storage.exists(storage.join(path, "sweep.json")):
        return best(path)
    file, run = checkpoint.find(path)
    state = checkpoint.load(file)
    origin = dict(source=path, step=state["step"], **{k: state["metrics"].get(k) for k in METRICS if k in state["metrics"]})
    return file, dict(origin, run=run) if run else origin
