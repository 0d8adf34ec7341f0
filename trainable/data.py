"""Captcha datasets on disk: Parquet shards (PNG bytes + label + kind) and a meta.json.

    DIR/meta.json              charset, max_len, spec, row counts
    DIR/train-00000.parquet    columns: image (PNG bytes), label, kind
    DIR/val-00000.parquet
    DIR/cache/KEY/train-48x128.npy decoded grayscale uint8, made once, memory-mapped by every worker;
                               KEY hashes meta.json (a fresh id per write) and the shards' names, sizes and mtimes
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import string
import time
import uuid
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainable.charset import FULL_CHARSET, MAX_LEN, PAD, charset_from_labels, check_label, encode
from trainable.errors import UserError
from trainable.preprocess import images_to_array

SHARD_ROWS = 5000
IMAGE_SIZE = (160, 60)  # width, height drawn by the `captcha` package (easy, mixed)
SPECS = {
    # 4 characters from 0-9A-Z, like the original easy captchas
    "easy": dict(charset=PAD + string.digits + string.ascii_uppercase, max_len=4),
    # 75% 4-7 characters from 0-9A-Za-z, 25% arithmetic questions 'A op B=?'
    "mixed": dict(charset=FULL_CHARSET, max_len=MAX_LEN),
    # 6 characters from 0-9a-z at 200x80, four font faces, heavier noise (../shared/bench/README.md's hard spec):
    # like the real 6-character line-noise set the CPU defaults failed on
    "hard": dict(charset=PAD + string.digits + string.ascii_lowercase, max_len=6, image_size=[200, 80]),
}


class DataError(UserError):
    """A dataset that is missing or unusable; the message says how to fix it."""


# ---------------------------------------------------------------- labels of each spec
def sample_label(spec: str, rng: random.Random) -> tuple[str, str]:
    """(label, kind) drawn from a spec's distribution."""
    if spec == "easy":
        return "".join(rng.choices(string.digits + string.ascii_uppercase, k=4)), "text"
    if spec == "hard":
        return "".join(rng.choices(string.digits + string.ascii_lowercase, k=6)), "text"
    if rng.random() < 0.75:
        return "".join(rng.choices(string.digits + string.ascii_letters, k=rng.randint(4, 7))), "text"
    a, b = (rng.randint(0, 9) if rng.random() < 0.5 else rng.randint(10, 99) for _ in range(2))
    return f"{a}{rng.choice('+-*')}{b}=?", "math"


def _render(labels: list[str], spec: str = "easy") -> list[bytes]:
    from captcha.image import ImageCaptcha  # draws from `secrets`: images can't be seeded

    if spec == "hard":
        return [_png(im) for im in _render_hard(labels)]
    gen = ImageCaptcha(width=IMAGE_SIZE[0], height=IMAGE_SIZE[1])
    return [gen.generate(label, format="png").getvalue() for label in labels]


def _render_chunk(args) -> list[bytes]:
    return _render(*args)


def _render_hard(labels: list[str]):
    """The hard spec, drawn as the package's own `generate_image` does, with more noise."""
    import secrets

    import matplotlib
    from captcha.image import DEFAULT_FONTS, ImageCaptcha, random_color
    from PIL.ImageFilter import SMOOTH

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = DEFAULT_FONTS + [str(ttf / f) for f in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")]
    gen = ImageCaptcha(width=200, height=80, fonts=fonts, font_sizes=(42, 48, 54))
    for label in labels:
        color = random_color(10, 200, secrets.randbelow(36) + 220)
        im = gen.create_captcha_image(label, color, random_color(238, 255))
        gen.create_noise_dots(im, color, width=2, number=120)
        for _ in range(3):
            gen.create_noise_curve(im, color)
        yield im.filter(SMOOTH)


def _png(im) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- writing
def write_dataset(out, rows: dict[str, list[tuple[bytes, str, str]]], charset: str, max_len: int, **info) -> Path:
    """Write splits of (png, label, kind) rows as Parquet shards plus meta.json (with a fresh id), replacing
    a dataset already in `out`: its shards of these splits and its decoded cache are deleted first."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # a write cut short leaves no dataset rather than a mixed one
    shutil.rmtree(out / "cache", ignore_errors=True)
    for old in [f for split in rows for f in out.glob(f"{split}-*.parquet")]:
        old.unlink()
    for split, items in rows.items():
        for k in range(0, max(len(items), 1), SHARD_ROWS):
            chunk = items[k : k + SHARD_ROWS]
            table = pa.table({name: [r[i] for r in chunk] for i, name in enumerate(("image", "label", "kind"))},
                             schema=pa.schema([("image", pa.binary()), ("label", pa.string()), ("kind", pa.string())]))
            pq.write_table(table, out / f"{split}-{k // SHARD_ROWS:05d}.parquet")
    meta = dict(charset=charset, max_len=max_len, counts={s: len(r) for s, r in rows.items()}, id=uuid.uuid4().hex, **info)
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return out


def generate(spec: str, n: int, out, val_fraction: float = 0.1, seed: int | None = None, processes: int | None = None) -> Path:
    """Render n captchas of a spec on all cores, with progress, and store them as a dataset."""
    if spec not in SPECS:
        raise DataError(f"unknown spec {spec!r}; choose one of {sorted(SPECS)}")
    if n < 10:
        raise DataError(f"--n {n} is too small for a train/validation split; use at least 10")
    rng = random.Random(seed)
    labels = [sample_label(spec, rng) for _ in range(n)]
    chunks = [labels[i : i + 100] for i in range(0, n, 100)]
    images, t0 = [], time.time()
    with Pool(processes or os.cpu_count()) as pool:
        for done in pool.imap(_render_chunk, [([l for l, _ in c], spec) for c in chunks]):
            images += done
            if len(images) % 1000 < 100 or len(images) == n:
                print(f"generated {len(images)}/{n} images ({len(images) / (time.time() - t0):.0f} img/s)", flush=True)
    rows = [(img, label, kind) for img, (label, kind) in zip(images, labels)]
    n_val = max(1, int(n * val_fraction))
    return write_dataset(out, {"train": rows[n_val:], "val": rows[:n_val]}, spec=spec, **{"image_size": list(IMAGE_SIZE), **SPECS[spec]})


# ---------------------------------------------------------------- reading
def read_meta(data_dir) -> dict:
    path = Path(data_dir) / "meta.json"
    if not path.exists():
        raise DataError(f"{data_dir} is not a dataset (no meta.json); make one with `captcha-tune data generate` or `data import`")
    return json.loads(path.read_text())


def dataset_meta(data_dir) -> dict:
    """meta.json of a dataset, local or on shared storage (copied once per node, as load_split does)."""
    import tempfile

    from trainable.storage import local_copy

    return read_meta(local_copy(data_dir, os.path.join(tempfile.gettempdir(), "captcha-tune-data")))


def read_rows(path, columns=("image", "label")) -> dict[str, list]:
    """All rows of one Parquet file."""
    return pq.read_table(path, columns=list(columns)).to_pydict()


def split_files(data_dir, split: str) -> list[Path]:
    files = sorted(Path(data_dir).glob(f"{split}-*.parquet"))
    if not files:
        raise DataError(f"{data_dir} has no '{split}' split ({split}-*.parquet)")
    return files


def content_key(data_dir, files) -> str:
    """12 hex digits naming what a split's cache was decoded from: meta.json's bytes and each shard's name, size, mtime."""
    h = hashlib.sha256((Path(data_dir) / "meta.json").read_bytes())
    for f in files:
        st = Path(f).stat()
        h.update(f"{Path(f).name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def _cached(path: Path, make) -> np.ndarray:
    """np.load(mmap) of `path`, made once by whoever gets the lock first (workers share one copy)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, make())
            os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def _decode_file(args) -> np.ndarray:
    path, height, width = args
    import torch

    torch.set_num_threads(1)  # one shard per process: N processes x N torch threads each stalled a 16-core box for minutes
    return images_to_array(read_rows(path, ["image"])["image"], height, width)


def decode_files(files, height: int, width: int, processes: int = 1) -> np.ndarray:
    """Decode shards into one uint8 array; with processes > 1, one shard per process (spawned: no forked threads)."""
    jobs = [(f, height, width) for f in files]
    if processes <= 1 or len(files) == 1:
        return np.concatenate([_decode_file(j) for j in jobs])
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(min(processes, len(files))) as pool:
        return np.concatenate(pool.map(_decode_file, jobs))


def load_split(data_dir, split: str, height: int, width: int, processes: int = 1) -> tuple[np.ndarray, np.ndarray, dict]:
    """(images uint8 [N, h, w] memory-mapped, targets int64 [N, max_len], meta) of a split.

    The decoded images are cached beside the data the first time (`processes` decode shards in parallel).

    A dataset on shared storage (s3://, gs://) is copied once per node into the local temp folder.
    """
    import tempfile

    from trainable.storage import local_copy

    data_dir = local_copy(data_dir, os.path.join(tempfile.gettempdir(), "captcha-tune-data"))
    meta = read_meta(data_dir)
    files = split_files(data_dir, split)
    cache = Path(data_dir) / "cache" / content_key(data_dir, files)
    images = _cached(cache / f"{split}-{height}x{width}.npy",
                     lambda: decode_files(files, height, width, processes))
    targets = _cached(cache / f"{split}-targets.npy",
                      lambda: np.array([encode(l, meta["charset"], meta["max_len"]) for f in files for l in read_rows(f, ["label"])["label"]], dtype=np.int64))
    return images, targets, meta


def check_labels_fit(labels, charset: str, max_len: int) -> None:
    """Raise DataError naming the first labels a model with this charset cannot read."""
    bad = [(l, why) for l in labels if (why := check_label(l, charset, max_len))]
    if bad:
        raise DataError(f"{len(bad)} label(s) don't fit the model (first: {bad[0][1]}); evaluate on data with the model's charset")


__all__ = ["generate", "write_dataset", "read_meta", "read_rows", "load_split", "charset_from_labels", "DataError"]
