"""Datasets on disk: what `generate` writes matches its spec, `load_split` caches and memory-maps
the decoded images, `import_folder` keeps exactly the usable images and names every skipped one,
the CLI turns an unusable import into a one-line error, contact sheets are real PNGs, and labels
survive an encode/decode round trip."""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from trainable.charset import FULL_CHARSET, PAD, LabelError, charset_from_labels, decode, encode
from trainable.data import DataError, generate, load_split, read_meta, read_rows, split_files
from trainable.importer import import_folder
from trainable.sheet import contact_sheet

REPO = Path(__file__).resolve().parents[1]


def png(text: str, fmt: str = "PNG") -> bytes:
    """A small captcha-like image with `text` drawn on it (distinct text -> distinct bytes)."""
    im = Image.new("RGB", (160, 60), (random.randint(200, 255), 255, 255))
    ImageDraw.Draw(im).text((20, 20), text, fill="black")
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def all_labels(data_dir) -> list[str]:
    return [l for split in ("train", "val") for f in split_files(data_dir, split) for l in read_rows(f, ["label"])["label"]]


@pytest.fixture(scope="module")
def easy(tmp_path_factory) -> Path:
    return generate("easy", 40, tmp_path_factory.mktemp("easy"), seed=0, processes=2)


# ---------------------------------------------------------------- (a) generate
def test_generate_easy_matches_spec(easy):
    meta = read_meta(easy)
    assert len(meta["charset"]) == 37 and meta["charset"][0] == PAD and meta["max_len"] == 4
    assert meta["counts"]["train"] + meta["counts"]["val"] == 40 and meta["counts"]["val"] >= 1
    assert split_files(easy, "train") and split_files(easy, "val")
    labels = all_labels(easy)
    assert len(labels) == 40
    assert all(re.fullmatch(r"[0-9A-Z]{4}", l) for l in labels)


def test_generate_mixed_labels(tmp_path):
    generate("mixed", 80, tmp_path, seed=1, processes=2)
    labels, kinds = [], []
    for f in split_files(tmp_path, "train") + split_files(tmp_path, "val"):
        r = read_rows(f, ["label", "kind"])
        labels += r["label"]
        kinds += r["kind"]
    assert len(labels) == 80 and {"math", "text"} <= set(kinds)
    for label, kind in zip(labels, kinds):
        if kind == "math":
            assert re.fullmatch(r"\d{1,2}[+\-*]\d{1,2}=\?", label), label
        else:
            assert re.fullmatch(r"[0-9A-Za-z]{4,7}", label), label


# ---------------------------------------------------------------- (b) load_split
def test_load_split_is_cached_and_memory_mapped(easy):
    images, targets, meta = load_split(easy, "train", 32, 96)
    n = meta["counts"]["train"]
    assert images.dtype == np.uint8 and images.shape == (n, 32, 96)
    assert isinstance(images, np.memmap) or getattr(images, "filename", None)
    assert targets.shape == (n, 4) and targets.dtype == np.int64
    cached = next((easy / "cache").glob("*/train-32x96.npy"))
    mtime = cached.stat().st_mtime_ns
    again, _, _ = load_split(easy, "train", 32, 96)
    assert cached.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(np.asarray(again), np.asarray(images))


def test_regenerating_into_a_folder_replaces_the_data_and_its_cache(tmp_path):
    """200 images, a split loaded (its cache made), then 100 into the same folder: the new count and labels,
    none of the old shards or decoded arrays."""
    def labels(split):
        return [l for f in split_files(tmp_path, split) for l in read_rows(f, ["label"])["label"]]

    generate("easy", 200, tmp_path, seed=0, processes=1)
    old_images, old_targets, _ = load_split(tmp_path, "train", 32, 96)
    assert len(old_images) == 180
    stale = tmp_path / "train-00001.parquet"  # a shard the new write does not make: a bigger earlier dataset's
    stale.write_bytes(split_files(tmp_path, "train")[0].read_bytes())
    generate("easy", 100, tmp_path, seed=1, processes=1)
    assert not stale.exists() and len(list((tmp_path / "cache").glob("*/*.npy"))) == 0
    images, targets, meta = load_split(tmp_path, "train", 32, 96)
    assert len(images) == len(targets) == meta["counts"]["train"] == 90 and len(labels("train")) == 90
    assert [decode(t, meta["charset"]) for t in targets] == labels("train")
    assert not np.array_equal(np.asarray(targets[:90]), np.asarray(old_targets[:90]))


# ---------------------------------------------------------------- (c-f) import
def test_import_named_files_skips_bad_ones(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    good = ["0A1B", "2C3D", "4E5F", "6A7B", "8C9D", "AB12", "CD34", "EF56"]
    for label in good:
        (src / f"{label}.png").write_bytes(png(label))
    (src / "BEEF.jpg").write_bytes(png("BEEF", "JPEG"))  # other formats come in as PNG too
    (src / "CAFE.png").write_bytes(os.urandom(300))  # corrupt
    (src / "ab12.png").write_bytes(png("ab12"))  # lowercase: outside the charset
    (src / "ABCDEF0123.png").write_bytes(png("ABCDEF0123"))  # 10 > max_len 7
    (src / "DEAD.png").write_bytes((src / "0A1B.png").read_bytes())  # duplicate bytes
    (src / "notes.txt").write_text("not an image, not listed")
    (src / "EF56_2.png").write_bytes(png("EF56"))  # a second image of the same text: its label is EF56

    out = import_folder(src, tmp_path / "ds", charset="FEDCBA98765432100", max_len=7)
    printed = capsys.readouterr().out
    meta = read_meta(out)
    assert meta["charset"] == PAD + "0123456789ABCDEF"
    assert meta["counts"] == {"train": 9, "val": 1} and meta["spec"] == "import"
    assert sorted(all_labels(out)) == sorted(good + ["BEEF", "EF56"])
    for f in split_files(out, "train"):
        assert all(b.startswith(b"\x89PNG") for b in read_rows(f, ["image"])["image"])
    skips = [l for l in printed.splitlines() if l.startswith("skip ")]
    assert len(skips) == 4
    assert any("CAFE.png" in l and "not a readable image" in l for l in skips)
    assert any("ab12.png" in l and "outside the charset" in l for l in skips)
    assert any("ABCDEF0123.png" in l and "max length 7" in l for l in skips)
    assert any("DEAD.png" in l and "same bytes" in l for l in skips)
    summary = printed.strip().splitlines()[-1]
    assert summary.startswith("imported 10 images (train 9, val 1); skipped 4: ")
    for part in ("1 corrupt image", "1 label outside charset", "1 label too long", "1 duplicate"):
        assert part in summary


@pytest.mark.parametrize("name,sep", [("labels.csv", ","), ("labels.tsv", "\t"), ("labels.txt", "\t")])
def test_import_with_labels_file(tmp_path, capsys, name, sep):
    src = tmp_path / "src"
    src.mkdir()
    labels = {f"img{i}.png": lab for i, lab in enumerate(["3+5=?", "xYz9", "12*4=?", "Hello", "abc"])}
    for fname, lab in labels.items():
        (src / fname).write_bytes(png(lab))
    lines = ["filename,label".replace(",", sep)] + [f"{f}{sep}{l}" for f, l in labels.items()] + [f"gone.png{sep}ABCD"]
    (tmp_path / name).write_text("\n".join(lines) + "\n")

    out = import_folder(src, tmp_path / "ds", labels_file=tmp_path / name)
    printed = capsys.readouterr().out
    meta = read_meta(out)
    assert meta["charset"] == charset_from_labels(labels.values())  # not the 'ABCD' of the missing file
    assert sum(meta["counts"].values()) == 5
    assert sorted(all_labels(out)) == sorted(labels.values())
    kinds = [k for s in ("train", "val") for f in split_files(out, s) for k in read_rows(f, ["kind"])["kind"]]
    assert sorted(kinds) == ["math", "math", "text", "text", "text"]
    assert re.search(r"skip gone\.png: listed in .* but not found", printed)
    assert printed.strip().splitlines()[-1].endswith("skipped 1: 1 missing file")


def test_import_with_nothing_usable_raises(tmp_path, capsys):
    for name in ("AAAA.png", "BBBB.png"):
        (tmp_path / name).write_bytes(os.urandom(200))
    with pytest.raises(DataError, match="only 0 of 2 images usable, skipped 2: 2 corrupt images"):
        import_folder(tmp_path, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_cli_import_error_is_one_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "AAAA.png").write_bytes(os.urandom(200))
    proc = subprocess.run([sys.executable, "-m", "captcha_tune", "data", "import", str(src), "--out", str(tmp_path / "ds")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- (g) contact sheet
def test_contact_sheet_of_dataset(easy, tmp_path):
    out = contact_sheet(easy, tmp_path / "sheet.png", n=48)
    with Image.open(out) as im:
        assert im.format == "PNG"
        n_val = read_meta(easy)["counts"]["val"]
        assert im.width == 160 * min(6, n_val) and im.height >= 60


def test_contact_sheet_of_parquet(easy, tmp_path):
    from trainable.sheet import CELL, COLUMNS, LABEL_H

    out = contact_sheet(split_files(easy, "train")[0], tmp_path / "shard.png", n=12)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (COLUMNS * CELL[0], -(-12 // COLUMNS) * (CELL[1] + LABEL_H))


# ---------------------------------------------------------------- (h) charset
def test_encode_decode_round_trip():
    ids = encode("3+5=?", FULL_CHARSET, 7)
    assert len(ids) == 7 and ids[5:] == [0, 0] and 0 not in ids[:5]
    assert decode(ids, FULL_CHARSET) == "3+5=?"


def test_encode_rejects_what_the_charset_cannot_hold():
    with pytest.raises(LabelError, match="outside the charset"):
        encode("ab!", FULL_CHARSET, 7)
    with pytest.raises(LabelError, match="more than max length"):
        encode("ABCDEFGH", FULL_CHARSET, 7)


def test_import_takes_input_shape_and_max_len_from_the_images(tmp_path):
    """A user's 200x50 captchas of up to 5 characters: the model input keeps their 4:1 aspect, max_len is 5."""
    from captcha.image import ImageCaptcha

    from trainable.config import TrainConfig, input_shape

    src = tmp_path / "src"
    src.mkdir()
    gen = ImageCaptcha(width=200, height=50)
    for label in ["AB12", "CD345", "EF67", "GH890", "JK12"]:
        gen.write(label, str(src / f"{label}.png"))
    meta = read_meta(import_folder(src, tmp_path / "ds"))
    assert meta["max_len"] == 5 and meta["image_size"] == [200, 50]
    cfg = input_shape(TrainConfig(img_height=32), meta)
    assert (cfg.img_height, cfg.img_width) == (32, 128)
