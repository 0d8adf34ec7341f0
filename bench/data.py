"""Does the data side keep up with training? Images/s of rendering, decoding and loading, per core.

- generation: `trainable.data.generate` (captcha rendering + PNG + Parquet) with 1 and 2 processes;
- decode: `trainable.preprocess.images_to_array` (PNG -> grayscale uint8 at the model size), 1 thread;
- loader: the worker's `DataLoader` over `CaptchaArrays` (memory-mapped cache -> batches of 128);
against what one training worker consumes (Ray Train 1 worker from `throughput.json` when it exists,
else a short bare loop measured here). No Ray.
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bench.common import Row, easy_data, read_json, write_json
from bench.loop import batches
from trainable.data import generate, load_split, read_rows, split_files
from trainable.preprocess import images_to_array
from trainable.step import CaptchaArrays

SIZES = dict(full=dict(n=2000, loader_batches=200, train_steps=120), quick=dict(n=400, loader_batches=20, train_steps=8))
HEIGHT, WIDTH = 32, 96  # the default model's input


def per_s(n: int, fn, *args, **kwargs) -> float:
    """n / the seconds `fn(*args, **kwargs)` takes."""
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return n / (time.perf_counter() - t0)


def run(out, quick: bool = False) -> dict:
    size = SIZES["quick" if quick else "full"]
    n, n_batches = size["n"], size["loader_batches"]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):  # generate's progress lines
        gen = {p: per_s(n, generate, "easy", n, Path(tmp) / f"p{p}", seed=0, processes=p) / p for p in (1, 2)}
        blobs = [b for f in split_files(Path(tmp) / "p2", "train") for b in read_rows(f, ["image"])["image"]]
    decode = per_s(len(blobs), images_to_array, blobs, HEIGHT, WIDTH)
    x, y, _ = load_split(easy_data(quick), "train", HEIGHT, WIDTH)
    loader = DataLoader(CaptchaArrays(x, y), batch_size=128, shuffle=True, drop_last=True)
    feed = itertools.islice(batches(loader, torch.device("cpu")), n_batches)
    loaded = per_s(n_batches * 128, collections.deque, feed, maxlen=0)
    if measured := read_json(out, "throughput"):
        train, source = measured["images_per_s"]["ray1"], "throughput.json: Ray Train, 1 worker"
    else:
        from bench.throughput import bare_loop, config, rate

        steps = size["train_steps"]
        train, source = rate(bare_loop(config(easy_data(quick), 1, max(1, steps // 4), 4))), "bare loop measured here (no throughput.json)"
    result = dict(settings=dict(size, image_size=[HEIGHT, WIDTH]), generate_images_per_s_per_core={str(p): r for p, r in gen.items()},
                  decode_images_per_s_per_core=decode, loader_images_per_s=loaded, train_images_per_s_per_worker=train, train_source=source,
                  decode_over_train=decode / train, generate_over_train=gen[1] / train, loader_over_train=loaded / train)
    plot(result, Path(out) / "data.png")
    write_json(out, "data", result)
    return result


def plot(r: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    bars = {
        "generate, 1 process": r["generate_images_per_s_per_core"]["1"],
        "generate, 2 processes (per core)": r["generate_images_per_s_per_core"]["2"],
        "decode PNG -> cache (1 core)": r["decode_images_per_s_per_core"],
        "DataLoader from cache (1 core)": r["loader_images_per_s"],
        "training consumes (1 worker)": r["train_images_per_s_per_worker"],
    }
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.barh(list(bars), list(bars.values()), color=["#9467bd", "#9467bd", "#ff7f0e", "#8c564b", "#1f77b4"])
    for i, v in enumerate(bars.values()):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    ax.set(xscale="log", xlim=(None, max(bars.values()) * 8), xlabel="images/s (log scale)")
    ax.invert_yaxis()
    ax.set_title(f"Data pipeline vs what training consumes, per core\n"
                 f"decode / train = {r['decode_over_train']:.2f}, generate / train = {r['generate_over_train']:.2f}, "
                 f"loader / train = {r['loader_over_train']:.0f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rows(r: dict, throughput: dict | None = None) -> list[Row]:
    train = throughput["images_per_s"]["ray1"] if throughput else r["train_images_per_s_per_worker"]
    decode, gen, loaded = r["decode_images_per_s_per_core"], r["generate_images_per_s_per_core"], r["loader_images_per_s"]
    return [
        Row("data", "generation images/s per core, 1 / 2 processes", f"{gen['1']:.0f} / {gen['2']:.0f}"),
        Row("data", "decode (PNG -> cache) / training consumption, per core", decode / train, ">= 1", decode / train >= 1),
        Row("data", "generation / training consumption, per core", gen["1"] / train),
        Row("data", "DataLoader from cache / training consumption", loaded / train, ">= 10", loaded / train >= 10),
    ]
