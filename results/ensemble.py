"""Top-k ensemble: the best K trials' best checkpoints as one standalone .pt2 that averages their probabilities.

Members are the K trials of a sweep with the highest best METRIC (trainable/metric.py: val_score, full match
with ties broken by character accuracy), each at its best checkpoint in hindsight: the ranking
`results.checkpoints` gives export for the single best. They must share charset and max_len; heads and input sizes may differ, and each
member's preprocessing (`trainable.preprocess.to_model_input` at its own img_height x img_width) runs
inside the program, which takes raw uint8 RGB [B, H, W, 3] like a single export.

How the members are combined (equal weights), whatever their heads: each member reads the image (its own
decoding: argmax per position for multilabel, greedy CTC for ctc) with a probability per emitted symbol, the
geometric mean of its maximum softmax at the steps that emitted a symbol (a non-pad position, or the column
that starts a run of a symbol on the greedy path; every step when it read nothing). A product over every step
instead favoured multilabel members (max_len positions) over ctc members (22-42 columns). The ensemble's reading is the
one with the highest mean probability over the members, a member that read something else adding 0; a tie
goes to the better-ranked member. Returns (that mean probability [B], indices [B, max_len]).
Averaging the per-column softmax of CTC members instead mixes alignments that peak at different columns: on
the top-3 CTC trials of a 2-core easy sweep it read 54.2% of the validation split against 90.0% for the best
member; this rule read 91.7% (mixed sweep: 66.3% against 64.7%), measured with the product over every step.
The rule was chosen on validation splits.

`captcha_tune.json` says `ensemble: K`, the rule (`combine`), and each member's trial id, checkpoint,
step, head, input size and validation metrics. `results.predict.load_predictor` reads the file as it
reads a single export.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from results import checkpoints, experiment
from results.export import META_FILE, USAGE, export_program, save_program  # noqa: F401 (META_FILE: for readers of this module)
from trainable import checkpoint, storage
from trainable.errors import UserError
from trainable.loss import decode_indices, emitting_steps
from trainable.preprocess import to_model_input

COMBINE = "readings"  # the rule above, named in captcha_tune.json


class EnsembleModel(nn.Module):
    """uint8 RGB [B, H, W, 3] -> (probability [B], indices [B, max_len]) of several members (see the module docstring)."""

    def __init__(self, members: list[tuple[nn.Module, int, int]], max_len: int):
        super().__init__()
        self.models = nn.ModuleList([m for m, _, _ in members])
        self.sizes = [(h, w) for _, h, w in members]
        self.heads = [m.head_kind for m, _, _ in members]
        self.max_len = max_len
        self.combine = COMBINE

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, readings, probs = {}, [], []
        for model, size, head in zip(self.models, self.sizes, self.heads):
            if size not in inputs:  # members of one input size share the preprocessing
                inputs[size] = to_model_input(rgb, *size)
            logits = model(inputs[size]).float()
            readings.append(decode_indices(logits, head, self.max_len))
            probs.append(per_symbol(logits, head))
        readings, probs = torch.stack(readings), torch.stack(probs)  # [K, B, max_len], [K, B]
        agree = (readings[:, None] == readings[None]).all(-1).float()  # [K, K, B]: member j read what member k read
        mean = (agree * probs[None]).mean(1)  # [K, B]: mean probability of member k's reading
        best = mean.argmax(0)  # the first maximum: the better-ranked member on a tie
        pick = best[None, :, None].expand(1, *readings.shape[1:])
        return mean.gather(0, best[None])[0], readings.gather(0, pick)[0]


def per_symbol(logits: torch.Tensor, head: str) -> torch.Tensor:
    """[B]: a member's probability of its reading per emitted symbol (see the module docstring)."""
    emitted = emitting_steps(logits, head)
    weight = torch.where(emitted.any(-1, keepdim=True), emitted, torch.ones_like(emitted)).float()
    return ((logits.log_softmax(-1).amax(-1) * weight).sum(-1) / weight.sum(-1)).exp()


def top_checkpoints(exp, k: int) -> list[tuple[str, dict]]:
    """The best `k` finished trials (results.checkpoints.ranked); a one-line UserError when the sweep has fewer."""
    if k < 1:
        raise UserError(f"--top-k must be at least 1, got {k}")
    if not storage.exists(storage.join(storage.normalize(str(exp)), "sweep.json")):
        raise UserError(f"--top-k needs a sweep experiment (a folder with sweep.json); {exp} is not one")
    ranked = checkpoints.ranked(exp, finished=True)
    if k > len(ranked):
        raise UserError(f"--top-k {k}: {exp} has {len(ranked)} finished trial{'s' if len(ranked) != 1 else ''} with a checkpoint; "
                        f"give --top-k {max(1, len(ranked))} or less, or let the sweep run more trials")
    return ranked[:k]


def export_ensemble(members: list[tuple[str, dict]], out, source: str | None = None):
    """Write one .pt2 at `out` that averages the (checkpoint file, origin) `members` (atomically); returns its path."""
    if not members:
        raise UserError("an ensemble needs at least one member")
    if Path(out).is_dir():  # before the slow part; save_program checks again
        raise UserError(f"{out} is a folder; give the file to write, e.g. {Path(out) / 'ensemble.pt2'}")
    loaded = [(checkpoint.load_model(file), file, origin) for file, origin in members]
    (_, first), first_file, _ = loaded[0]
    for (_, state), file, origin in loaded[1:]:
        for key in ("charset", "max_len"):
            if state[key] != first[key]:
                raise UserError(f"ensemble members must share {key}: {origin.get('trial_id') or file} has {state[key]!r}, "
                                f"{members[0][1].get('trial_id') or first_file} has {first[key]!r}")
    wrapper = EnsembleModel([(model, s["config"]["img_height"], s["config"]["img_width"]) for (model, s), _, _ in loaded], first["max_len"])
    ep, input_spec = export_program(wrapper.eval(), wrapper.sizes[0])  # the best member's input size, if one size it must be
    meta = dict(
        ensemble=len(members), combine=wrapper.combine, head="ensemble", charset=first["charset"], max_len=first["max_len"],
        members=[dict(trial_id=origin.get("trial_id"), checkpoint=str(file), step=s["step"], head=s["config"]["head"],
                      img_height=s["config"]["img_height"], img_width=s["config"]["img_width"],
                      **{m: origin.get(m, s["metrics"].get(m)) for m in experiment.METRICS})
                 for (_, s), file, origin in loaded],
        origin=dict(source=source) if source else {}, input=input_spec, torch=torch.__version__,
        usage=USAGE.replace("logits, indices", "probability, indices", 1),
    )
    return save_program(ep, meta, out)


def compare_members(predictor, rows) -> dict:
    """Metrics of an ensemble predictor and of each of its members (read from their checkpoints) on `rows`;
    gain_* = ensemble minus the best member (by full match, then char accuracy)."""
    from results.evaluate import evaluate
    from results.predict import load_predictor

    members = predictor.origin.get("members")
    if not members:
        raise UserError("--compare-members needs an ensemble .pt2 (from `captcha-tune export EXP --top-k K`)")
    ensemble = evaluate(predictor, rows)
    each = [dict(trial_id=m.get("trial_id"), checkpoint=m["checkpoint"], **evaluate(load_predictor(m["checkpoint"]), rows)) for m in members]
    best = max(each, key=lambda m: (m["full_match"], m["char_acc"]))
    return dict(ensemble=ensemble, members=each, best_member=best["trial_id"] or best["checkpoint"],
                gain_full_match=ensemble["full_match"] - best["full_match"], gain_char_acc=ensemble["char_acc"] - best["char_acc"])
