"""Export a checkpoint as one standalone file: a torch.export program that takes raw RGB images.

The program maps uint8 RGB [B, H, W, 3] (any batch, height and width) to (logits float [B, L, C],
indices int64 [B, L]); grayscale, resizing and rounding (trainable/preprocess.py) are inside it.
`captcha_tune.json` in the same archive holds the charset (index 0 is the pad ' '), max_len, the
model input size, the training config, the metrics it was chosen by, and where it came from.

Load the exported model without captcha-tune (torch and Pillow only)::

    import json
    import torch
    from PIL import Image

    extra = {"captcha_tune.json": ""}
    model = torch.export.load("model.pt2", extra_files=extra).module()
    charset = json.loads(extra["captcha_tune.json"])["charset"]

    im = Image.open("captcha.png").convert("RGBA")  # a transparent background becomes white, as in training
    im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im).convert("RGB")
    rgb = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(1, im.height, im.width, 3)
    with torch.no_grad():
        logits, indices = model(rgb)  # stack same-size images for a batch
    print("".join(charset[i] for i in indices[0].tolist()).replace(" ", ""))
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from trainable.checkpoint import load_model
from trainable.errors import UserError
from trainable.loss import decode_indices
from trainable.preprocess import to_model_input

META_FILE = "captcha_tune.json"
USAGE = ("logits, indices = torch.export.load(path, extra_files={'captcha_tune.json': ''}).module()(rgb) with rgb uint8 [B, H, W, 3]; "
         "text = ''.join(charset[i] for i in indices[b]).replace(' ', '')")


class RawImageModel(nn.Module):
    """uint8 RGB [B, H, W, 3] -> (logits, indices [B, max_len]): preprocessing, the network and its decoding in one module.

    logits are [B, max_len, C] for the multilabel head and [B, columns, C] for the ctc head, whose
    greedy decoding (collapse repeats, drop blanks) is part of the program.
    """

    def __init__(self, model: nn.Module, img_height: int, img_width: int, max_len: int):
        super().__init__()
        self.model, self.img_height, self.img_width, self.max_len = model, img_height, img_width, max_len
        self.head = model.head_kind

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(to_model_input(rgb, self.img_height, self.img_width))
        return logits, decode_indices(logits, self.head, self.max_len)


def describe(state: dict, origin: dict | None = None) -> dict:
    """The metadata of a checkpoint: what the exported file carries, and what a predictor reports."""
    cfg = state["config"]
    return dict(
        head=cfg["head"], charset=state["charset"], max_len=state["max_len"], img_height=cfg["img_height"], img_width=cfg["img_width"],
        config=cfg, metrics=state["metrics"], step=state["step"], origin=origin or {}, torch=torch.__version__, usage=USAGE,
    )


def export_program(wrapper: nn.Module, size: tuple[int, int]) -> tuple[torch.export.ExportedProgram, dict]:
    """(program, input description): batch, height and width dynamic, traced at `size` (height, width), the model's
    recorded input size; if dynamic sizes fail, that size only; if that fails too, a one-line UserError."""
    example = torch.zeros(2, *size, 3, dtype=torch.uint8)
    batch, height, width = (torch.export.Dim(name, min=1, max=1 << 16) for name in ("batch", "height", "width"))
    try:
        ep = torch.export.export(wrapper, (example,), dynamic_shapes={"rgb": {0: batch, 1: height, 2: width}})
        return ep, dict(layout="uint8 RGB [B, H, W, 3]", dynamic_size=True)
    except Exception as e:  # the exporter's errors come in many types; each is a reason to try the one size the model records
        why = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
    try:
        ep = torch.export.export(wrapper, (example,), dynamic_shapes={"rgb": {0: batch}})
    except Exception as e:
        raise UserError(f"torch.export failed for any image size ({why}) and for {size[1]}x{size[0]} "
                        f"({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]})") from None
    return ep, dict(layout=f"uint8 RGB [B, {size[0]}, {size[1]}, 3]", dynamic_size=False, height=size[0], width=size[1], why_fixed=why)


def export_model(checkpoint_file, out, origin: dict | None = None) -> Path:
    """Write the checkpoint as a standalone .pt2 at `out` (atomically: a failed export leaves nothing)."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{out} is a folder; give the file to write, e.g. {out / 'model.pt2'}")
    model, state = load_model(checkpoint_file)
    cfg = state["config"]
    ep, input_spec = export_program(RawImageModel(model, cfg["img_height"], cfg["img_width"], state["max_len"]).eval(),
                                    (cfg["img_height"], cfg["img_width"]))
    meta = dict(describe(state, origin), input=input_spec, checkpoint=str(checkpoint_file))
    return save_program(ep, meta, out)


def save_program(ep: torch.export.ExportedProgram, meta: dict, out) -> Path:
    """Write a program and its captcha_tune.json as `out` (atomically: a failure leaves nothing), readable by all
    as a plain file would be; the single export and the ensemble (results/ensemble.py) both end here."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{out} is a folder; give the file to write, e.g. {out / 'model.pt2'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as f:
            torch.export.save(ep, f, extra_files={META_FILE: json.dumps(meta, indent=2, default=str)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
