"""Raw image -> model input. Pure torch, so the exported model carries the very same code."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from trainable.errors import UserError


def to_model_input(rgb: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [B, H, W, 3] (any H, W) -> uint8-valued float [B, 1, height, width] grayscale.

    The result is rounded to whole grey levels so the decoded cache (uint8) and the exported
    model see identical pixels.
    """
    x = rgb.permute(0, 3, 1, 2).float()
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    gray = F.interpolate(gray, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return gray.round().clamp(0, 255)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) -> uint8 [H, W, 3]. Raises ValueError on a corrupt file."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P"):  # transparent background -> white, not black
                im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises several types for bad files
        raise UserError(f"not a readable image ({type(e).__name__})") from None


def images_to_array(blobs, height: int, width: int) -> np.ndarray:
    """Encoded images -> uint8 [N, height, width] grayscale, the training cache format."""
    out = np.empty((len(blobs), height, width), dtype=np.uint8)
    for i, blob in enumerate(blobs):
        rgb = torch.from_numpy(decode_image(blob).copy())[None]
        out[i] = to_model_input(rgb, height, width)[0, 0].to(torch.uint8).numpy()
    return out
