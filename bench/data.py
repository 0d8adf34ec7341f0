"""Does the data side keep up with training? Images/s per core of `trainable.data.generate` (1 and 2 processes),
of decoding PNGs to the cache (`images_to_array`) and of the worker's DataLoader over it, against what one training
worker consumes (Ray Train 1 worker from `throughput.json` when it exists, else a short bare loop here). No Ray.
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

from bench.common import Row, easy_data, read_json, write_json
from bench.loop import batches
from trainable.data import generate, load_split, read_rows, split_files
from trainable.preprocess import images_to_array

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
    feed = itertools.islice(batches(x, y, 128, torch.device("cpu")), n_batches)
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
    write_json(out, "data", result, plot(result))
    return result


def plot(r: dict):
    from matplotlib.figure import Figure

    bars = {
        "generate, 1 process": r["generate_images_per_s_per_core"]["1"],
        "generate, 2 processes (per core)": r["generate_images_per_s_per_core"]["2"],
        "decode PNG -> cache (1 core)": r["decode_images_per_s_per_core"],
        "DataLoader from cache (1 core)": r["loader_images_per_s"],
        "training consumes (1 worker)": r["train_images_per_s_per_worker"],
    }
    ax = Figure(figsize=(7.5, 3.6), layout="tight").subplots()
    colors = ["#9467bd", "#9467bd", "#ff7f0e", "#8c564b", "#1f77b4"]
    ax.bar_label(ax.barh(list(bars), list(bars.values()), color=colors), fmt=" {:,.0f}", fontsize=8)
    ax.set(xscale="log", xlim=(None, max(bars.values()) * 8), xlabel="images/s (log scale)")
    ax.invert_yaxis()
    ax.set_title(f"Data pipeline vs what training consumes, per core\ndecode / train = {r['decode_over_train']:.2f}, "
                 f"generate / train = {r['generate_over_train']:.2f}, loader / train = {r['loader_over_train']:.0f}", fontsize=9)
    return ax.figure


def rows(r: dict, throughput: dict | None = None) -> list[Row]:
    train = throughput["images_per_s"]["ray1"] if throughput else r["train_images_per_s_per_worker"]
    decode, gen, loaded = r["decode_images_per_s_per_core"], r["generate_images_per_s_per_core"], r["loader_images_per_s"]
    return [
        Row("data", "generation images/s per core, 1 / 2 processes", f"{gen['1']:.0f} / {gen['2']:.0f}"),
        Row("data", "decode (PNG -> cache) / training consumption, per core", decode / train, ">= 1", decode / train >= 1),
        Row("data", "generation / training consumption, per core", gen["1"] / train),
        Row("data", "DataLoader from cache / training consumption", loaded / train, ">= 10", loaded / train >= 10),
    ]
