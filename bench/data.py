"""Does the data side keep up with training? Images/s of rendering, decoding and loading, per core.

- generation: `trainable.data.generate` (captcha rendering + PNG + Parquet) with 1 and 2 processes;
- decode: `trainable.preprocess.images_to_array` (PNG -> grayscale uint8 at the model size), 1 thread;
- loader: the worker's `DataLoader` over `CaptchaArrays` (memory-mapped cache -> batches of 128);
against what one training worker consumes (Ray Train 1 worker from `throughput.json` when it exists,
else a short bare loop measured here). No Ray.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bench.common import Row, easy_data, pyplot, read_json, standalone, write_json
from trainable.data import generate, load_split, read_rows, split_files
from trainable.preprocess import images_to_array
from trainable.step import CaptchaArrays

SIZES = dict(full=dict(n=2000, loader_batches=200, train_steps=120), quick=dict(n=400, loader_batches=20, train_steps=8))
HEIGHT, WIDTH = 32, 96  # the default model's input


def generation_rate(n: int, processes: int, out: Path) -> float:
    """Total images/s of `generate` (rendering on `processes` cores, then Parquet on one)."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines
        generate("easy", n, out, seed=0, processes=processes)
    return n / (time.perf_counter() - t0)


def decode_rate(blobs: list[bytes]) -> float:
    t0 = time.perf_counter()
    images_to_array(blobs, HEIGHT, WIDTH)
    return len(blobs) / (time.perf_counter() - t0)


def loader_rate(data_dir: str, batches: int) -> float:
    x, y, _ = load_split(data_dir, "train", HEIGHT, WIDTH)
    loader = DataLoader(CaptchaArrays(x, y), batch_size=128, shuffle=True, drop_last=True)
    n, t0 = 0, time.perf_counter()
    while n < batches:
        for _ in loader:
            n += 1
            if n == batches:
                break
    return n * 128 / (time.perf_counter() - t0)


def training_rate(out, steps: int, quick: bool) -> tuple[float, str]:
    """Images/s one training worker consumes, and where the figure comes from."""
    measured = read_json(out, "throughput")
    if measured:
        return measured["images_per_s"]["ray1"], "throughput.json: Ray Train, 1 worker"
    from bench.throughput import bare_loop, config, rate

    return rate(bare_loop(config(easy_data(quick), 1, max(1, steps // 4), 4))), "bare loop measured here (no throughput.json)"


def run(out, quick: bool = False) -> dict:
    size = SIZES["quick" if quick else "full"]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        gen = {p: generation_rate(size["n"], p, Path(tmp) / f"p{p}") for p in (1, 2)}
        blobs = [b for f in split_files(Path(tmp) / "p2", "train") for b in read_rows(f, ["image"])["image"]]
    decode = decode_rate(blobs)
    loader = loader_rate(easy_data(quick), size["loader_batches"])
    train, source = training_rate(out, size["train_steps"], quick)
    result = dict(
        settings=dict(size, image_size=[HEIGHT, WIDTH]),
        generate_images_per_s={str(p): r for p, r in gen.items()},
        generate_images_per_s_per_core={str(p): r / p for p, r in gen.items()},
        generate_scaling_2_over_1=gen[2] / gen[1],
        decode_images_per_s_per_core=decode, loader_images_per_s=loader,
        train_images_per_s_per_worker=train, train_source=source,
        decode_over_train=decode / train, generate_over_train=gen[1] / train, loader_over_train=loader / train,
    )
    plot(result, Path(out) / "data.png")
    write_json(out, "data", result)
    return result


def plot(r: dict, path: Path) -> None:
    plt = pyplot()
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
    ax.set_xscale("log")
    ax.set_xlim(right=max(bars.values()) * 8)
    ax.invert_yaxis()
    ax.set_xlabel("images/s (log scale)")
    ax.set_title(f"Data pipeline vs what training consumes, per core\n"
                 f"decode / train = {r['decode_over_train']:.2f}, generate / train = {r['generate_over_train']:.2f}, "
                 f"loader / train = {r['loader_over_train']:.0f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rows(r: dict, throughput: dict | None = None) -> list[Row]:
    train = throughput["images_per_s"]["ray1"] if throughput else r["train_images_per_s_per_worker"]
    decode, gen = r["decode_images_per_s_per_core"], r["generate_images_per_s_per_core"]
    return [
        Row("data", "generation images/s per core, 1 / 2 processes", f"{gen['1']:.0f} / {gen['2']:.0f}"),
        Row("data", "decode (PNG -> cache) / training consumption, per core", decode / train, ">= 1", decode / train >= 1),
        Row("data", "generation / training consumption, per core", gen["1"] / train),
        Row("data", "DataLoader from cache / training consumption", r["loader_images_per_s"] / train, ">= 10", r["loader_images_per_s"] / train >= 10),
    ]


if __name__ == "__main__":
    standalone("data", run)
