"""Training-time augmentation on batches (kornia): random affine, perspective, blur and noise.

One `strength` scales every range: 0 is the identity (the reference run), 1 is strong for captchas
(about 8 degrees of rotation and shear, 10% scale, 5% shift, 0.2 perspective). Images are inverted
before warping so that pixels pulled in from outside the frame are background (white), not black.
Labels are untouched: every transform keeps the reading order.
"""

from __future__ import annotations

import functools

import torch


def strength_at(step: int, augment: float, max_steps: int, ramp_steps: int = 0) -> float:
    """Augmentation strength at a step: ramps linearly from 0 to `augment` over `ramp_steps` (0: the first fifth of
    the run).

    A CTC head first has to leave its all-blank start; distorted images from step 0 delay that by
    hundreds of steps, the ramp lets it find the glyphs first and harden afterwards.
    """
    ramp = max(1, ramp_steps or max_steps // 5)
    return augment * min(1.0, step / ramp)


def pipeline(strength: float = 1.0):
    """The kornia pipeline at one fixed strength: the reference that `augment` scales (and tests compare against)."""
    import kornia.augmentation as K

    s = strength
    return K.AugmentationSequential(
        K.RandomAffine(degrees=8 * s, translate=(0.05 * s, 0.05 * s), scale=(1 - 0.1 * s, 1 + 0.1 * s), shear=8 * s, p=0.9),
        K.RandomPerspective(distortion_scale=min(0.9, 0.2 * s), p=0.5),
        K.RandomGaussianBlur((3, 3), sigma=(0.1, 0.1 + 0.9 * s), p=0.3),
        K.RandomGaussianNoise(std=0.04 * s, p=0.5),
    )


@functools.lru_cache(maxsize=4)
def built(device: torch.device):
    """The strength-1 pipeline, built once per process (a worker) and device."""
    return pipeline(1.0).to(device)


def scaled(params: list, strength: float) -> list:
    """Parameters sampled at strength 1 -> the same draw at `strength`: every range above is linear in it
    (uniform low + (high - low) * u, noise std * randn), so scaling the draw is sampling at that strength."""
    s, persp = strength, min(strength, 4.5)  # the perspective's distortion stops at 0.9 = 0.2 * 4.5
    for item in params:
        d = item.data
        if "angle" in d:
            d.update(angle=d["angle"] * s, translations=d["translations"] * s, scale=1 + (d["scale"] - 1) * s,
                     shear_x=d["shear_x"] * s, shear_y=d["shear_y"] * s)
        elif "end_points" in d:
            d.update(end_points=d["start_points"] + (d["end_points"] - d["start_points"]) * persp)
        elif "sigma" in d:
            d.update(sigma=0.1 + (d["sigma"] - 0.1) * s)
        elif "gaussian_noise" in d:
            d.update(gaussian_noise=d["gaussian_noise"] * s)
    return params


def augment(images: torch.Tensor, strength: float) -> torch.Tensor:
    """uint8-valued images [B, 1, H, W] -> augmented float images of the same shape and 0..255 range.

    One pipeline per worker; `strength` (the ramp's value of this step) scales what it samples."""
    if strength <= 0:
        return images
    ink = 1.0 - images.float() / 255.0  # background 0: what the warps pad with
    pipe = built(images.device)
    with torch.no_grad():
        out = pipe(ink, params=scaled(pipe.forward_parameters(ink.shape), float(strength)))
    return ((1.0 - out.clamp(0, 1)) * 255.0).to(torch.float32)
