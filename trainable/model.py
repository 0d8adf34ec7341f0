"""The captcha CNN: conv blocks with batch norm, then a MAX_LEN x CHARSET head."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2))


class CaptchaCNN(nn.Module):
    """uint8-valued grayscale images [B, 1, H, W] -> logits [B, max_len, n_symbols]."""

    def __init__(self, n_symbols: int, max_len: int, img_height: int = 32, img_width: int = 96, channels: int = 16):
        super().__init__()
        self.n_symbols, self.max_len = n_symbols, max_len
        widths = [channels, channels * 2, channels * 4, channels * 4]
        self.features = nn.Sequential(*[conv_block(c_in, c_out) for c_in, c_out in zip([1] + widths, widths)])
        h, w = img_height // 16, img_width // 16
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(widths[-1] * h * w, max_len * n_symbols))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 127.5 - 1.0
        return self.head(self.features(x)).view(-1, self.max_len, self.n_symbols)


def build_model(cfg, n_symbols: int, max_len: int) -> CaptchaCNN:
    return CaptchaCNN(n_symbols, max_len, cfg.img_height, cfg.img_width, cfg.channels)
