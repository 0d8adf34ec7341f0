"""GPU images/s of the training step for the GPU model size, against the FLOPs bound. No Ray.

The step is `trainable.step.train_step` as a GPU worker runs it: bf16 autocast, channels_last, uint8 images
already on the device (synthetic: this measures the step, not the loader), eager and `torch.compile`d.
The bound is the GPU's own dense bf16 matmul rate (one large matmul) divided by the step's FLOPs per
image (forward + backward, counted by `FlopCounterMode`). Without CUDA it writes `skipped: no GPU`.

    python -m bench.gpu [--quick] [--out DIR]
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Row, pyplot, standalone, write_json
from trainable.config import GPU_MODEL, TrainConfig, input_shape
from trainable.model import build_model
from trainable.step import memory_format, train_step

N_SYMBOLS, MAX_LEN = 37, 4  # the 'easy' charset (pad + 0-9A-Z), 4 positions
SIZES = dict(full=dict(batches=(64, 256, 1024), steps=50, warmup=10, matmul_n=8192),
             quick=dict(batches=(8,), steps=3, warmup=2, matmul_n=1024))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, n: int, iters: int = 20) -> float:
    """Dense bf16 matmul rate of the device: the roofline of a conv net's FLOPs."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def setup(cfg: TrainConfig, batch: int, device: torch.device, compiled: bool):
    torch.manual_seed(0)
    bare = build_model(cfg, N_SYMBOLS, MAX_LEN).to(device, memory_format=memory_format(device))
    model = torch.compile(bare) if compiled else bare
    optimizer = torch.optim.Adam(bare.parameters(), lr=cfg.peak_lr, amsgrad=True)
    images = torch.randint(0, 256, (batch, 1, cfg.img_height, cfg.img_width), dtype=torch.uint8, device=device)
    targets = torch.randint(0, N_SYMBOLS, (batch, MAX_LEN), device=device)
    return model, optimizer, images.contiguous(memory_format=memory_format(device)), targets


def flops_per_image(cfg: TrainConfig, batch: int, device: torch.device) -> float:
    """Forward + loss + backward FLOPs of one step, per image (the optimizer's few FLOPs are left out)."""
    model, optimizer, images, targets = setup(cfg, batch, device, compiled=False)
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(model, optimizer, images, targets, cfg, cfg.peak_lr)
    return counter.get_total_flops() / batch


def step_rate(cfg: TrainConfig, batch: int, device: torch.device, compiled: bool, steps: int, warmup: int) -> float:
    model, optimizer, images, targets = setup(cfg, batch, device, compiled)
    for _ in range(warmup):  # compilation and cuDNN autotuning happen here
        train_step(model, optimizer, images, targets, cfg, cfg.peak_lr)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, images, targets, cfg, cfg.peak_lr)
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def measure(device: torch.device, size: dict) -> dict:
    torch.backends.cudnn.benchmark = True
    cfg = input_shape(TrainConfig(**GPU_MODEL), dict(max_len=MAX_LEN, image_size=[160, 60]))  # the captcha generator's size
    tflops = matmul_tflops(device, size["matmul_n"])
    per_batch = {}
    for batch in size["batches"]:
        flops = flops_per_image(cfg, batch, device)
        bound = tflops * 1e12 / flops
        rates = {mode: step_rate(cfg, batch, device, mode == "compiled", size["steps"], size["warmup"]) for mode in ("eager", "compiled")}
        per_batch[str(batch)] = dict(flops_per_image=flops, bound_images_per_s=bound, **{f"{m}_images_per_s": r for m, r in rates.items()},
                                     **{f"{m}_fraction_of_bound": r / bound for m, r in rates.items()})
        print(f"gpu batch {batch}: eager {rates['eager']:.0f}, compiled {rates['compiled']:.0f} images/s; bound {bound:.0f}", flush=True)
    preset_batch = str(cfg.per_worker_batch(2))  # the gpu preset: global batch 128 over 2 workers
    return dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else str(device), model=GPU_MODEL,
                matmul_tflops_bf16=tflops, per_batch=per_batch, preset_per_worker_batch=int(preset_batch),
                preset=per_batch.get(preset_batch))


def run(out, quick: bool = False) -> dict:
    if not torch.cuda.is_available():
        result = dict(skipped="no GPU", torch_cuda=torch.version.cuda)
    else:
        result = measure(torch.device("cuda"), SIZES["quick" if quick else "full"])
        plot(result, Path(out) / "gpu.png")
    write_json(out, "gpu", result)
    return result


def plot(r: dict, path: Path) -> None:
    plt = pyplot()
    batches = list(r["per_batch"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = range(len(batches))
    for off, (mode, color) in zip((-0.2, 0.2), (("eager", "#1f77b4"), ("compiled", "#2ca02c"))):
        vals = [r["per_batch"][b][f"{mode}_images_per_s"] for b in batches]
        ax.bar([i + off for i in x], vals, width=0.4, color=color, label=mode)
        for i, b in enumerate(batches):
            ax.text(i + off, vals[i], f"{r['per_batch'][b][f'{mode}_fraction_of_bound']:.0%}", ha="center", va="bottom", fontsize=8)
    ax.hlines([r["per_batch"][b]["bound_images_per_s"] for b in batches], [i - 0.45 for i in x], [i + 0.45 for i in x],
              colors="k", lw=2, label="FLOPs bound (matmul rate / FLOPs per image)")
    ax.set_xticks(list(x), [f"batch {b}" for b in batches])
    ax.set_yscale("log")
    ax.set_ylabel("training images/s (label: fraction of bound)")
    ax.set_title(f"{r['device']}: bf16 + channels_last train step, GPU model\nmatmul {r['matmul_tflops_bf16']:.0f} TFLOP/s", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rows(r: dict) -> list[Row]:
    if r.get("skipped"):
        return [Row("gpu", "training step on GPU vs FLOPs bound", f"skipped: {r['skipped']}")]
    p, b = r["preset"] or next(iter(r["per_batch"].values())), r["preset_per_worker_batch"]
    best = max(r["per_batch"].items(), key=lambda kv: kv[1]["compiled_images_per_s"])
    return [
        Row("gpu", f"images/s eager / compiled, batch {b} ({r['device']})", f"{p['eager_images_per_s']:.0f} / {p['compiled_images_per_s']:.0f}"),
        Row("gpu", f"compiled fraction of FLOPs bound, batch {b}", p["compiled_fraction_of_bound"]),
        Row("gpu", f"compiled fraction of FLOPs bound, batch {best[0]}", best[1]["compiled_fraction_of_bound"]),
    ]


if __name__ == "__main__":
    standalone("gpu", run)
