"""Transfer learning: start a model from one trained on other captchas (`--init-from`).

Every tensor whose name and shape match is copied. The output layers, whose rows are symbols (the
multilabel head's MAX_LEN x CHARSET rows, the ctc head's per-column classifier), are copied row by
row, matched by symbol: a symbol the source never saw keeps its fresh init, and a multilabel source
with fewer positions fills the first ones. Anything else whose shape differs (other channels, depth,
input size) keeps its fresh init and is listed. No backbone tensor that fits is a UserError.
"""

from __future__ import annotations

import torch

from trainable import checkpoint
from trainable.errors import UserError

# The layers whose output rows are symbols (trainable/model.py): CaptchaCNN.head[2] gives MAX_LEN x CHARSET
# rows (position-major, as its view(-1, max_len, n_symbols) reads them), CaptchaCRNN.classify one row a symbol.
OUTPUTS = ("head.2.", "classify.")
BACKBONE = "features."
# The settings that decide the tensors' shapes: a target takes the source's unless a flag says otherwise.
SHAPE = ("head", "channels", "depth", "block", "sequence", "seq_hidden", "img_height")


def init_state(model_state: dict, source_state: dict, source_charset: str, target_charset: str) -> tuple[dict, dict]:
    """(state to load into the model, report). `model_state`: the freshly built model's state dict."""
    source_index = {c: i for i, c in enumerate(source_charset)}
    rows = [(t, source_index[c]) for t, c in enumerate(target_charset) if c in source_index]  # (target row, source row)
    state, loaded, skipped, absent, mapped = {}, [], [], [], False
    for name, fresh in model_state.items():
        src = source_state.get(name)
        state[name] = fresh.clone()
        if src is None:
            absent.append(name)
        elif name.startswith(OUTPUTS) and output_fits(name, model_state, source_state):
            n_t, n_s = len(target_charset), len(source_charset)
            positions = min(fresh.shape[0] // n_t, src.shape[0] // n_s)  # 1 for the ctc classifier
            t_rows = torch.tensor([k * n_t + t for k in range(positions) for t, _ in rows], dtype=torch.long)
            s_rows = torch.tensor([k * n_s + s for k in range(positions) for _, s in rows], dtype=torch.long)
            state[name][t_rows] = src[s_rows].to(fresh.dtype)
            loaded.append(name)
            mapped = True
        elif src.shape == fresh.shape:
            state[name] = src.clone().to(fresh.dtype)
            loaded.append(name)
        else:
            skipped.append(name)
    if not any(n.startswith(BACKBONE) and model_state[n].dim() for n in loaded):  # a BN's step counter fits any model
        first = next((n for n in model_state if n.startswith(BACKBONE) and n in source_state), None)
        why = (f" ({first}: {list(source_state[first].shape)} there, {list(model_state[first].shape)} here)" if first
               else f" (it has no {BACKBONE}* tensors)")
        raise UserError(f"no backbone tensor of the source model fits this model{why}; train with the source's "
                        f"{', '.join(SHAPE[1:4])} settings")
    new = [c for c in target_charset if c not in source_index]
    report = dict(loaded=loaded, total=len(model_state), skipped=skipped, absent=absent,
                  mapped=len(rows) if mapped else 0, symbols=len(target_charset), new=new if mapped else [])
    return state, report


def output_fits(name: str, model_state: dict, source_state: dict) -> bool:
    """An output layer's rows can be mapped when its weight reads the same features in both (a bias follows its weight)."""
    weight = name[: name.rindex(".") + 1] + "weight"
    return weight in source_state and source_state[weight].shape[1:] == model_state[weight].shape[1:]


def summary(source: str, report: dict) -> str:
    """The one line that says what was loaded."""
    def names(xs):
        return str(xs if len(xs) <= 6 else xs[:6] + [f"... {len(xs) - 6} more"])

    line = f"init from {source}: {len(report['loaded'])}/{report['total']} tensors loaded, "
    line += (f"{report['mapped']} of {report['symbols']} symbols mapped; new: {''.join(report['new'])!r}" if report["mapped"]
             else "output layer fresh (the source's head or input size differs)")
    if report["skipped"]:
        line += f"; skipped (shape differs): {names(report['skipped'])}"
    if report["absent"]:
        line += f"; not in source: {names(report['absent'])}"
    return line


def load_source(path) -> dict:
    """The source checkpoint dict (a checkpoint folder or file), or a one-line UserError."""
    try:
        return checkpoint.load(path)
    except FileNotFoundError as e:
        raise UserError(f"--init-from: {e}") from None


def shape_settings(source: dict) -> dict:
    """The source's shape-deciding settings (SHAPE), to build a target its tensors fit."""
    return {k: source["config"][k] for k in SHAPE if k in source["config"]}


def init_model(model: torch.nn.Module, source: dict, path, charset: str) -> str:
    """Load the source checkpoint dict into `model` (mapped by symbol); returns the one-line report."""
    try:
        state, report = init_state(model.state_dict(), source["model"], source["charset"], charset)
    except UserError as e:
        raise UserError(f"--init-from {path}: {e}") from None
    model.load_state_dict(state)
    return summary(str(path), report)
