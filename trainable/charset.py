"""Label <-> index encoding. A dataset records its own charset; index 0 is always the pad (space)."""

from __future__ import annotations

import string

from trainable.errors import UserError

PAD = " "
# The original project's 68 symbols: digits, upper, lower, the space pad, arithmetic signs.
FULL_CHARSET = PAD + string.digits + string.ascii_uppercase + string.ascii_lowercase + "+-*=?"
MAX_LEN = 7


class LabelError(UserError):
    """A label that this charset / max length cannot represent."""


def charset_from_labels(labels) -> str:
    """Smallest charset covering `labels`: the pad first, then the symbols in a stable order."""
    symbols = set("".join(labels)) - {PAD}
    order = {c: i for i, c in enumerate(FULL_CHARSET)}
    return PAD + "".join(sorted(symbols, key=lambda c: (order.get(c, len(order)), c)))


def check_label(label: str, charset: str, max_len: int) -> str | None:
    """Why `label` can't be encoded, or None when it can."""
    if not label:
        return "empty label"
    if len(label) > max_len:
        return f"label {label!r} has {len(label)} characters, more than max length {max_len}"
    if PAD in label:
        return f"label {label!r} contains a space (space is the padding symbol)"
    bad = sorted(set(label) - set(charset))
    if bad:
        return f"label {label!r} has symbols outside the charset: {''.join(bad)!r}"
    return None


def encode(label: str, charset: str, max_len: int) -> list[int]:
    """'3+5=?' -> indices, right-padded with the pad index to max_len."""
    why = check_label(label, charset, max_len)
    if why:
        raise LabelError(why)
    index = {c: i for i, c in enumerate(charset)}
    return [index[c] for c in label.ljust(max_len, PAD)]


def decode(indices, charset: str) -> str:
    """Indices -> text; pads are dropped wherever the model put them."""
    return "".join(charset[int(i)] for i in indices).replace(PAD, "")
