"""How each trial ended, recorded where it happens (no code infers it from steps or parses it back from sentences).

One small JSON file per trial: EXP/status/<trial_id>.json = {"kind": ..., "step": ..., "reason": ...}.
- the trial function writes `completed`, `diverged` or `errored` (it knows how its Train run ended): `diverged` is a
  non-finite loss (the config's doing); `errored` is anything else, an infrastructure fault included once the trial's
  retries are spent (search/trial.py), its reason saying which;
- ASHA writes `asha` when it stops a trial at a rung (it made the decision);
- the sweep driver writes `budget` for the trials still running when the time budget ran out, and `errored` for a
  trial whose actor Tune saw fail before its function could record anything.
A trial without a record is still running (or pending).
"""

from __future__ import annotations

import json

from trainable import storage

FOLDER = "status"
KINDS = ("completed", "asha", "budget", "diverged", "errored")  # plus "running": no record yet
FINISHED = ("completed", "asha", "budget")  # kinds with a final result worth ranking


def record(exp: str, trial_id: str, kind: str, step: int | None = None, reason: str = "") -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown status kind {kind!r}; one of {KINDS}")
    text = json.dumps(dict(kind=kind, step=None if step is None else int(step), reason=str(reason)[:500]))
    storage.write_text(storage.join(storage.normalize(exp), FOLDER, f"{trial_id}.json"), text)


def record_first(exp: str, trial_id: str, kind: str, step: int | None = None, reason: str = "") -> None:
    """record(), unless the trial has a record already (ASHA's, written before the trial's function returns)."""
    if read(exp, trial_id)["kind"] == "running":
        record(exp, trial_id, kind, step, reason)


def reopen(exp: str, trial_id: str) -> None:
    """A trial whose function starts again has no end yet. Tune reruns only trials it saw unfinished (a resumed sweep
    leaves the errored ones, resume_errored=False), so an `errored` record from the trial's earlier life is that
    function seeing its Train run torn down by a Ctrl-C or a killed driver, not the trial's end: it goes, and the
    rerun records how it ends (with it kept, record_first would keep `errored` for a trial that completed)."""
    if read(exp, trial_id)["kind"] == "errored":
        storage.remove(storage.join(storage.normalize(exp), FOLDER, f"{trial_id}.json"))


def read(exp: str, trial_id: str) -> dict:
    """{"kind", "step", "reason"}; kind "running" when nothing was recorded yet."""
    path = storage.join(storage.normalize(exp), FOLDER, f"{trial_id}.json")
    if not storage.exists(path):
        return dict(kind="running", step=None, reason="")
    return json.loads(storage.read_text(path))


def short(kind: str, step: int | None) -> str:
    """A status for a terminal column: 'completed', 'ASHA@200', 'budget@300', 'diverged@450', 'errored', 'running'."""
    if kind in ("asha", "budget", "diverged") and step is not None:
        return f"{'ASHA' if kind == 'asha' else kind}@{step}"
    return kind
