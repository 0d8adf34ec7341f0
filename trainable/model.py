"""The captcha models: a conv backbone, then one of two heads.

- multilabel (the original): conv blocks that halve height and width, flatten, one linear layer to
  MAX_LEN x CHARSET logits. Position k of the output reads character k of the label.
- ctc (a CRNN): the first two blocks halve height and width, the rest only the height, so the width
  axis survives as a sequence of columns (img_width / 4 of them). A sequence layer reads the columns
  (`sequence`: two 1-D convolutions over the columns, a bidirectional GRU, or a small transformer encoder) and a linear layer gives
  per-column logits over the charset, whose index 0 (the pad) is the CTC blank. Greedy decoding
  (`trainable.loss.ctc_greedy`) turns them into MAX_LEN indices. The conv sequence layer is the default:
  on 2 CPU threads it left CTC's all-blank start within 150 steps where the GRU took ~600 (batch 32,
  6,000 easy captchas: 74% vs 0% full match at step 300, 92% vs 53% at step 750).

Both take uint8-valued images [B, 1, H, W] and are decoded to indices [B, MAX_LEN] by `trainable.loss.decode_indices`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def conv_block(c_in: int, c_out: int, pool=2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(pool))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a skip connection (1x1 conv when the width changes), then pooling (ResNet basic block)."""

    def __init__(self, c_in: int, c_out: int, pool=2):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.out = nn.Sequential(nn.ReLU(inplace=True), nn.MaxPool2d(pool))

    def forward(self, x):
        return self.out(self.body(x) + self.skip(x))


def backbone(channels: int, depth: int, block: str, keep_width: bool) -> tuple[nn.Sequential, int]:
    """(conv blocks, output channels). Widths c, 2c, 4c, 4c, ...; keep_width pools only the height after block 2."""
    widths = [channels * min(2**i, 4) for i in range(depth)]
    make = ResidualBlock if block == "residual" else conv_block
    pools = [2 if i < 2 or not keep_width else (2, 1) for i in range(depth)]
    return nn.Sequential(*[make(c_in, c_out, p) for c_in, c_out, p in zip([1] + widths, widths, pools)]), widths[-1]


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1.0


class CaptchaCNN(nn.Module):
    """uint8-valued grayscale images [B, 1, H, W] -> logits [B, max_len, n_symbols] (the original head)."""

    head_kind = "multilabel"

    def __init__(self, n_symbols: int, max_len: int, img_height: int = 32, img_width: int = 96, channels: int = 16,
                 depth: int = 4, block: str = "plain"):
        super().__init__()
        self.n_symbols, self.max_len = n_symbols, max_len
        self.features, c = backbone(channels, depth, block, keep_width=False)
        h, w = img_height // 2**depth, img_width // 2**depth
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(c * h * w, max_len * n_symbols))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(normalize(x))).view(-1, self.max_len, self.n_symbols)


class CaptchaCRNN(nn.Module):
    """uint8-valued grayscale images [B, 1, H, W] -> per-column logits [B, W / 4, n_symbols] (index 0 = CTC blank)."""

    head_kind = "ctc"

    def __init__(self, n_symbols: int, max_len: int, img_height: int = 32, img_width: int = 96, channels: int = 16,
                 depth: int = 4, block: str = "plain", seq_hidden: int = 256, sequence: str = "conv", seq_heads: int = 4):
        super().__init__()
        self.n_symbols, self.max_len = n_symbols, max_len
        self.features, c = backbone(channels, depth, block, keep_width=True)
        self.sequence = sequence_layer(sequence, c * (img_height // 2**depth), seq_hidden, seq_heads)
        self.classify = nn.Linear(seq_hidden, n_symbols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(normalize(x)).flatten(1, 2)  # [B, C*h, T]: one feature vector per column
        return self.classify(self.sequence(f))


class ConvColumns(nn.Module):
    """Columns [B, F, T] -> [B, T, hidden]: two 3-wide 1-D convolutions (each column sees 2 neighbours a side)."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(features, hidden, 3, padding=1, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Conv1d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True))

    def forward(self, f):
        return self.net(f).transpose(1, 2)


class GRUColumns(nn.Module):
    """Columns [B, F, T] -> [B, T, hidden]: a layer-normed projection, then a bidirectional GRU (hidden / 2 a direction)."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(features, hidden), nn.LayerNorm(hidden))
        self.rnn = nn.GRU(hidden, hidden // 2, batch_first=True, bidirectional=True)

    def forward(self, f):
        out, _ = self.rnn(self.project(f.transpose(1, 2)))
        return out


class TransformerColumns(nn.Module):
    """Columns [B, F, T] -> [B, T, hidden]: a layer-normed projection plus sinusoidal positions, then LAYERS pre-norm
    transformer encoder layers with `heads` heads (attention: every column sees the whole line, not only its neighbours).
    Sinusoidal, not learned, positions: they need no column count at build time and hold for any input width."""

    LAYERS = 2

    def __init__(self, features: int, hidden: int, heads: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(features, hidden), nn.LayerNorm(hidden))
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=0.1, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, self.LAYERS, norm=nn.LayerNorm(hidden), enable_nested_tensor=False)

    def forward(self, f):
        x = self.project(f.transpose(1, 2))
        return self.encoder(x + sinusoidal_positions(x.shape[1], x.shape[2], x.device))


def sinusoidal_positions(length: int, width: int, device=None) -> torch.Tensor:
    """[length, width]: sin at even, cos at odd features, wavelengths 2 pi .. 10000 * 2 pi (Vaswani et al., 2017)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


def sequence_layer(sequence: str, features: int, hidden: int, heads: int) -> nn.Module:
    """The ctc head's layer over the columns, by its TrainConfig name (trainable.config.SEQUENCES)."""
    if sequence == "transformer":
        return TransformerColumns(features, hidden, heads)
    return GRUColumns(features, hidden) if sequence == "gru" else ConvColumns(features, hidden)


def build_model(cfg, n_symbols: int, max_len: int) -> nn.Module:
    if cfg.head == "ctc":
        return CaptchaCRNN(n_symbols, max_len, cfg.img_height, cfg.img_width, cfg.channels, cfg.depth, cfg.block, cfg.seq_hidden, cfg.sequence, cfg.seq_heads)
    return CaptchaCNN(n_symbols, max_len, cfg.img_height, cfg.img_width, cfg.channels, cfg.depth, cfg.block)


