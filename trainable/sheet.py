"""Contact sheet: a PNG grid of a dataset's first images, each with its label underneath."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from trainable.data import DataError, read_rows, split_files
from trainable.preprocess import decode_image

COLUMNS = 6
CELL = (160, 60)  # thumbnail box, width x height: the size of the synthetic captchas
LABEL_H = 16  # band under each image for its label


def first_rows(data, n: int) -> tuple[list[bytes], list[str]]:
    """The first n (image, label) of a Parquet file, or of a dataset's val split (train if it has none)."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"{data} not found; pass a dataset folder or a Parquet file with image and label columns")
    files = [data] if data.is_file() else split_files(data, "val" if any(data.glob("val-*.parquet")) else "train")
    images, labels = [], []
    for f in files:
        rows = read_rows(f)
        images, labels = images + rows["image"], labels + rows["label"]
        if len(images) >= n:
            break
    if not images:
        raise DataError(f"{data} holds no images")
    return images[:n], labels[:n]


def contact_sheet(data, out, n: int = 48) -> Path:
    """Draw the first n images of `data` in a grid of COLUMNS with their labels; save as PNG at `out`."""
    images, labels = first_rows(data, n)
    cols = min(COLUMNS, len(images))
    rows = -(-len(images) // cols)
    cell_w, cell_h = CELL[0], CELL[1] + LABEL_H
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (blob, label) in enumerate(zip(images, labels)):
        x, y = (i % cols) * cell_w, (i // cols) * cell_h
        thumb = ImageOps.contain(Image.fromarray(decode_image(blob)), CELL)
        sheet.paste(thumb, (x + (CELL[0] - thumb.width) // 2, y + (CELL[1] - thumb.height) // 2))
        draw.text((x + 4, y + CELL[1] + 2), label, fill="black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out
