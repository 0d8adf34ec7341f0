"""Measure a predictor on labelled images: full match, per-position character accuracy, top confusions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from results.predict import MORE, read_parquet
from trainable.charset import encode
from trainable.data import check_labels_fit, split_files
from trainable.errors import UserError
from trainable.loss import OVERFLOW, match_counts

SHOW_PAD = "␣"  # how the pad symbol appears in confusions
TOP = 10  # confusions reported


def load_rows(data, split: str = "val") -> list[tuple[str, object, str]]:
    """(name, RGB, label) rows of a Parquet file, or of a dataset folder's split."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"{data} does not exist; give a dataset folder or a Parquet file with image and label columns")
    files = [data] if data.is_file() else split_files(data, split)
    rows = [row for f in files for row in read_parquet(f)]
    if not rows:
        raise UserError(f"{data} holds no images")
    unlabelled = next((name for name, _, label in rows if label is None), None)
    if unlabelled:
        raise UserError(f"{unlabelled} has no label; evaluation needs a 'label' column")
    return rows


def evaluate(predictor, rows) -> dict:
    """Metrics of `predictor` on (name, RGB, label) rows; char_acc counts every position up to max_len.
    A reading longer than max_len (its last index OVERFLOW) is wrong, and confused with MORE at its last position."""
    if not rows:
        raise UserError("nothing to evaluate: no labelled images")
    charset, max_len = predictor.charset, predictor.max_len
    labels = [label for _, _, label in rows]
    check_labels_fit(labels, charset, max_len)
    target = torch.tensor([encode(label, charset, max_len) for label in labels], dtype=torch.int64)
    pred = predictor.indices([rgb for _, rgb, _ in rows])
    full, chars = match_counts(pred, target)
    wrong = pred != target
    counts = Counter(zip(target[wrong].tolist(), pred[wrong].tolist()))
    show = lambda i: SHOW_PAD if i == 0 else MORE if i == OVERFLOW else charset[i]
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
    n = len(rows)
    return dict(full_match=full.item() / n, char_acc=chars.item() / (n * max_len), n=n,
                confusions=[(show(t), show(p), c) for (t, p), c in top])
