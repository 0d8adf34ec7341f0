"""Read captchas: one predictor over an exported .pt2 or a checkpoint, images from files, folders or Parquet."""

from __future__ import annotations

import json
import re
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from results.export import META_FILE, RawImageModel, describe
from trainable.charset import decode
from trainable.errors import UserError
from trainable.importer import IMAGE_EXTS
from trainable.loss import OVERFLOW
from trainable.preprocess import decode_image
from trainable.storage import is_uri

BATCH = 256  # images per forward pass
MORE = "…"  # ends the text of a reading longer than max_len
EXPECTED = "expected a .pt2 from `captcha-tune export`, a checkpoint, a run folder or a sweep folder"
# 'A op B' with an optional '=' or '=?' after it: the arithmetic captchas of the mixed spec
QUESTION = re.compile(r"(\d{1,9})([+\-*])(\d{1,9})(?:=\??)?")


class Predictor:
    """Images -> logits, symbol indices or text. `forward` maps uint8 RGB [B, H, W, 3] to (logits, indices):
    logits [B, max_len, C] (multilabel) or [B, columns, C] (ctc), indices [B, max_len] decoded by the model.

    `origin` is the model's metadata: charset, max_len, input size, config, metrics and where it came
    from (for a .pt2 the captcha_tune.json it carries; for a checkpoint the same keys built from it).
    """

    def __init__(self, forward, charset: str, max_len: int, origin: dict, fixed_size: tuple[int, int] | None = None):
        self.forward, self.charset, self.max_len, self.origin, self.fixed_size = forward, charset, max_len, origin, fixed_size

    @torch.no_grad()
    def outputs(self, rgb_list) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, indices [N, max_len]) in input order; same-size images share a batch."""
        images = [as_rgb(a) for a in rgb_list]
        by_size = defaultdict(list)
        for i, a in enumerate(images):
            by_size[a.shape].append(i)
        logits, indices = None, torch.zeros(len(images), self.max_len, dtype=torch.int64)
        for shape, idx in by_size.items():
            if self.fixed_size and shape[:2] != self.fixed_size:
                raise UserError(f"this model was exported for {self.fixed_size[1]}x{self.fixed_size[0]} images only, got {shape[1]}x{shape[0]}")
            for k in range(0, len(idx), BATCH):
                sel = idx[k : k + BATCH]
                out, ind = self.forward(torch.from_numpy(np.stack([images[i] for i in sel])))
                if logits is None:
                    logits = torch.empty(len(images), *out.shape[1:])
                logits[sel], indices[sel] = out.float(), ind
        return logits, indices

    def logits(self, rgb_list) -> torch.Tensor:
        return self.outputs(rgb_list)[0]

    def indices(self, rgb_list) -> torch.Tensor:
        return self.outputs(rgb_list)[1]

    def predict(self, rgb_list) -> list[str]:
        return [text(row, self.charset) for row in self.indices(rgb_list)]


def text(indices, charset: str) -> str:
    """Decoded indices -> text; a CTC reading longer than max_len (an OVERFLOW index) ends in MORE."""
    row = [int(i) for i in indices]
    return decode([i for i in row if i != OVERFLOW], charset) + (MORE if OVERFLOW in row else "")


def as_rgb(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise UserError(f"images must be uint8 RGB arrays [H, W, 3], got {a.dtype} {list(a.shape)}")
    return a


# ---------------------------------------------------------------- loading a model
def zip_names(path: Path) -> list[str]:
    if not zipfile.is_zipfile(path):
        return []
    with zipfile.ZipFile(path) as z:
        return z.namelist()


def is_exported(names: list[str]) -> bool:
    return any(n.endswith("/archive_format") for n in names)


def load_predictor(path) -> Predictor:
    """A predictor from a .pt2, or from anything `results.checkpoints.resolve` accepts (URIs too)."""
    if not is_uri(path) and Path(path).is_file() and (Path(path).suffix == ".pt2" or is_exported(zip_names(Path(path)))):
        return load_exported(Path(path))
    return load_checkpoint(path)


def load_exported(path: Path) -> Predictor:
    names = zip_names(path)  # check before torch.export.load, which logs a traceback on foreign files
    if not is_exported(names):
        raise UserError(f"{path} is not a torch.export archive; {EXPECTED}")
    if not any(n.endswith(f"/extra/{META_FILE}") for n in names):
        raise UserError(f"{path} is a torch.export archive without {META_FILE}, so not made by captcha-tune; {EXPECTED}")
    extra = {META_FILE: ""}
    module = torch.export.load(path, extra_files=extra).module()
    meta = json.loads(extra[META_FILE])
    spec = meta.get("input", {})
    fixed = None if spec.get("dynamic_size", True) else (spec["height"], spec["width"])
    return Predictor(module, meta["charset"], meta["max_len"], meta, fixed)


def load_checkpoint(path) -> Predictor:
    from results.checkpoints import resolve
    from trainable.checkpoint import load_model

    file, origin = resolve(path)
    model, state = load_model(file)
    h, w = state["config"]["img_height"], state["config"]["img_width"]
    wrapper = RawImageModel(model, h, w, state["max_len"])
    return Predictor(wrapper, state["charset"], state["max_len"],
                     dict(describe(state, origin), checkpoint=str(file)))


# ---------------------------------------------------------------- reading images
def read_file(path: Path) -> tuple[str, np.ndarray, None]:
    try:
        return str(path), decode_image(path.read_bytes()), None
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None


def read_parquet(path: Path) -> list[tuple[str, np.ndarray, str | None]]:
    """Rows of a Parquet file with an `image` column (encoded bytes) and an optional `label` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        columns = pq.read_schema(path).names
    except pa.ArrowException as e:
        raise UserError(f"{path} is not a readable Parquet file ({e})") from None
    if "image" not in columns:
        raise UserError(f"{path} has no 'image' column (it has {columns}); expected encoded images in 'image', labels in 'label'")
    table = pq.read_table(path, columns=["image"] + (["label"] if "label" in columns else [])).to_pydict()
    labels = table.get("label", [None] * len(table["image"]))
    rows = []
    for i, (blob, label) in enumerate(zip(table["image"], labels)):
        try:
            rows.append((f"{path}:{i}", decode_image(blob), label))
        except ValueError as e:
            raise UserError(f"{path} row {i}: {e}") from None
    return rows


def read_images(inputs) -> list[tuple[str, np.ndarray, str | None]]:
    """(name, RGB uint8 [H, W, 3], label or None) from image files, folders of images and Parquet files."""
    rows = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if path.is_dir():
            files = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
            if not files:
                raise UserError(f"{path} holds no images ({' '.join(sorted(IMAGE_EXTS))}); pass Parquet files by name")
            rows += [read_file(p) for p in files]
        elif path.suffix.lower() == ".parquet":
            rows += read_parquet(path)
        else:
            rows.append(read_file(path))
    return rows


# ---------------------------------------------------------------- arithmetic captchas
def answer(text: str) -> str | None:
    """'3+5=?' -> '8', '12*34=?' -> '408'; None for anything that is not such a question."""
    m = QUESTION.fullmatch(text.strip())
    if not m:
        return None
    a, op, b = int(m[1]), m[2], int(m[3])
    return str(a + b if op == "+" else a - b if op == "-" else a * b)
