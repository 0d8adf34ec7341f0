"""Import your own labelled images as a dataset (the format of trainable/data.py).

Two sources:
    a folder whose file names are the labels         226md.png -> '226md'
    a folder plus a CSV/TSV of `filename,label`      (an optional `filename,label` header row)

Every image is decoded in full and re-encoded as PNG. Unusable files are skipped with one
printed line each and counted in a closing summary; nothing usable left is a DataError.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
import re
import statistics
from collections import Counter
from pathlib import Path

from PIL import Image

from trainable.charset import PAD, charset_from_labels, check_label
from trainable.data import DataError, write_dataset
from trainable.preprocess import decode_image

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}
# skip reason -> plural, for the summary line
PLURAL = {
    "missing file": "missing files",
    "corrupt image": "corrupt images",
    "duplicate": "duplicates",
    "empty label": "empty labels",
    "label too long": "labels too long",
    "label with a space": "labels with a space",
    "label outside charset": "labels outside charset",
}


# ---------------------------------------------------------------- listing (file, label) pairs
def list_named_files(src: Path) -> list[tuple[Path, str]]:
    """Images in `src` labelled by their file name: 226md.png -> '226md', and a second image of the same text, which
    a folder can't hold under the same name, 226md_2.png -> '226md' (no charset has '_'). Taken as labels, such
    suffixes made one folder's max_len 8 instead of 4, doubling its sweep's trials and misreading three images."""
    return [(p, DUPLICATE.sub("", p.stem)) for p in sorted(src.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTS]


DUPLICATE = re.compile(r"_\d+$")  # LABEL_N: the N-th file of the same label


def read_labels_file(src: Path, labels_file) -> list[tuple[Path, str]]:
    """(src/filename, label) rows of a CSV or TSV; a `filename,label` header row is dropped."""
    text = Path(labels_file).read_text(encoding="utf-8-sig")
    suffix = Path(labels_file).suffix.lower()
    if suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
    else:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",\t;").delimiter
        except csv.Error:
            raise DataError(f"can't tell how {labels_file} separates filename and label; name it .csv or .tsv") from None
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["filename", "label"]:
        rows = rows[1:]
    return [(src / r[0].strip(), r[1].strip() if len(r) > 1 else "") for r in rows]


def label_kind(label: str, max_len: int) -> str:
    """The summary category of a label that check_label rejected (same order of checks)."""
    if not label:
        return "empty label"
    if len(label) > max_len:
        return "label too long"
    return "label with a space" if PAD in label else "label outside charset"


def to_png(data: bytes) -> bytes:
    """Decode fully (ValueError if corrupt) and re-encode as RGB PNG."""
    buf = io.BytesIO()
    Image.fromarray(decode_image(data)).save(buf, format="PNG")
    return buf.getvalue()


def median_size(pngs) -> list[int]:
    """[width, height], each the median over the images (read from the PNG headers only)."""
    sizes = []
    for png in pngs:
        with Image.open(io.BytesIO(png)) as im:
            sizes.append(im.size)
    return [int(statistics.median(w for w, _ in sizes)), int(statistics.median(h for _, h in sizes))]


# ---------------------------------------------------------------- the import
def import_folder(src, out, labels_file=None, charset=None, max_len: int | None = None, val_fraction: float = 0.1) -> Path:
    """Check, re-encode and split labelled images from `src` into a dataset at `out`.

    max_len None = the longest label kept; meta.json records the images' median size, from which
    training takes its input aspect (`trainable.config.input_shape`).
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src} is not a folder; pass the folder that holds your images")
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction {val_fraction} must be between 0 and 1 (e.g. 0.1)")
    entries = read_labels_file(src, labels_file) if labels_file else list_named_files(src)
    if not entries:
        where = f"{labels_file} lists no files" if labels_file else f"{src} has no images ({', '.join(sorted(IMAGE_EXTS))})"
        raise DataError(f"{where}; name each image by its label (226md.png) or pass --labels FILE.csv")
    # 1) the given symbols (pad first), or None: the charset then comes from the kept labels
    allowed = charset_from_labels([charset]) if charset else None

    # 2) keep each file whose label fits, whose bytes are new, and whose image decodes
    rows, seen, skipped = [], set(), Counter()

    def skip(path: Path, kind: str, why: str) -> None:
        skipped[kind] += 1
        print(f"skip {path.name}: {why}")

    limit = max_len or max((len(label) for _, label in entries), default=1)
    for path, label in entries:
        if why := check_label(label, allowed or label, limit):  # no charset given: any symbol goes
            skip(path, label_kind(label, limit), why)
            continue
        if not path.is_file():
            skip(path, "missing file", f"listed in {Path(labels_file).name} but not found in {src}")
            continue
        data = path.read_bytes()
        digest = hashlib.sha256(data).digest()
        if digest in seen:
            skip(path, "duplicate", "same bytes as an image imported before")
            continue
        try:
            png = to_png(data)
        except ValueError as e:
            skip(path, "corrupt image", str(e))
            continue
        seen.add(digest)
        rows.append((png, label, "math" if label.endswith("=?") else "text"))

    # 3) the summary; too few usable rows is the user's to fix
    counts = ", ".join(f"{n} {kind if n == 1 else PLURAL[kind]}" for kind, n in skipped.most_common())
    summary = f"skipped {sum(skipped.values())}" + (f": {counts}" if counts else "")
    if len(rows) < 2:
        raise DataError(f"only {len(rows)} of {len(entries)} images usable, {summary}; need at least 2: fix the files "
                        "listed above or pass a --charset/--max-len that covers the labels")
    # 4) the charset, then a deterministic shuffle with the validation rows first
    charset = allowed or charset_from_labels(label for _, label, _ in rows)
    random.Random(0).shuffle(rows)
    n_val = min(max(1, int(len(rows) * val_fraction)), len(rows) - 1)
    train, val = rows[n_val:], rows[:n_val]
    max_len = max_len or max(len(label) for _, label, _ in rows)
    out = write_dataset(out, {"train": train, "val": val}, charset=charset, max_len=max_len, spec="import", source=str(src),
                        image_size=median_size(png for png, _, _ in rows))
    print(f"imported {len(rows)} images (train {len(train)}, val {len(val)}); {summary}")
    return out
