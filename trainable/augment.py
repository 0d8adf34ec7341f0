"""Training-time augmentation on batches (kornia): random affine, perspective, blur and noise.

One `strength` scales every range: 0 is the identity (the reference run), 1 is strong for captchas
(about 8 degrees of rotation and shear, 10% scale, 5% shift, 0.2 perspective). Images are inverted
before warping so that pixels pulled in from outside the frame are background (white), not black.
Labels are untouched: every transform keeps the reading order.
"""

from __future__ import annotations

import functools

import torch


def strength_at(step: int, augment: float, max_steps: int) -> float:
    """Augmentation strength at a step: ramps linearly from 0 to `augment` over the first fifth of the run.

    A CTC head first has to leave its all-blank start; distorted images from step 0 delay that by
    hundreds of steps, the ramp lets it find the glyphs first and harden afterwards.
    """
    ramp = max(1, max_steps // 5)
    return augment * min(1.0, step / ramp)


@functools.lru_cache(maxsize=64)
def pipeline(strength: float):
    import kornia.augmentation as K

    s = strength
    return K.AugmentationSequential(
        K.RandomAffine(degrees=8 * s, translate=(0.05 * s, 0.05 * s), scale=(1 - 0.1 * s, 1 + 0.1 * s), shear=8 * s, p=0.9),
        K.RandomPerspective(distortion_scale=min(0.9, 0.2 * s), p=0.5),
        K.RandomGaussianBlur((3, 3), sigma=(0.1, 0.1 + 0.9 * s), p=0.3),
        K.RandomGaussianNoise(std=0.04 * s, p=0.5),
    )


def augment(images: torch.Tensor, strength: float) -> torch.Tensor:
    """uint8-valued images [B, 1, H, W] -> augmented float images of the same shape and 0..255 range."""
    if strength <= 0:
        return images
    ink = 1.0 - images.float() / 255.0  # background 0: what the warps pad with
    with torch.no_grad():
        out = pipeline(round(float(strength), 2)).to(images.device)(ink)  # 0.01 steps: a few dozen pipelines at most
    return ((1.0 - out.clamp(0, 1)) * 255.0).to(torch.float32)
