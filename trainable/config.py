"""Settings of one training run: one frozen dataclass, defaults equal to the original project's run.

Dicts cross the Ray boundary; `TrainConfig.from_dict` turns them back and rejects unknown keys, so
a typo in a search space fails before any worker starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from trainable.errors import UserError


def setting(default, help: str, choices: tuple = (), flag: str | None = None, kind: type | None = None):
    """A dataclass field whose command-line flag is generated (add_arguments): its help, allowed values, a flag name
    where it differs from the field's, and its type where the default (None) does not tell it."""
    return field(default=default, metadata=dict(help=help, choices=choices, flag=flag, kind=kind))


@dataclass(frozen=True)
class TrainConfig:
    # --- data
    data_dir: str = setting("data/easy", "dataset folder made by `captcha-tune data generate|import`")
    img_height: int = setting(32, "model input height in pixels (images are resized to it)")
    img_width: int = setting(0, "model input width in pixels; 0 = the data's own aspect at img_height (see input_shape)")
    # --- model
    head: str = setting("multilabel", "'multilabel' (MAX_LEN x CHARSET logits, the original) or 'ctc' (CRNN: conv columns -> sequence layer -> CTC)")
    channels: int = setting(16, "width of the first conv block; later blocks double up to 4x")
    depth: int = setting(4, "conv blocks, each halving the height (the first two also halve the width)")
    block: str = setting("plain", "'plain' (conv-bn-relu) or 'residual' (two convs with a skip connection) conv blocks")
    sequence: str = setting("conv", "the ctc head's layer over the image columns: 'conv' (two 1-D convolutions), 'gru' (bidirectional GRU) or 'transformer' (2 encoder layers)")
    seq_hidden: int = setting(256, "width of the ctc head's sequence layer")
    seq_heads: int = setting(4, "attention heads of sequence=transformer; seq_hidden must be a multiple of it")
    augment: float = setting(0.0, "training-time augmentation strength (affine, perspective, blur, noise); 0 = off, 1 = strong")
    augment_ramp: int = setting(0, "steps over which augmentation ramps up to its strength (0 = the first fifth of max_steps)")
    # --- loss
    loss: str = setting("focal", "'focal' (sigmoid focal loss, the original) or 'ce' (per-position softmax)")
    focal_gamma: float = setting(2.0, "focal loss focusing exponent; 0 = plain BCE")
    focal_pos_weight: float = setting(3.0, "weight of the positive (right-symbol) term of the focal loss")
    # --- optimisation (Adam with AMSGrad)
    batch_size: int = setting(128, "global batch size, split evenly over the workers")
    peak_lr: float = setting(1e-3, "learning rate at the end of warmup and at each warm restart")
    min_lr: float = setting(1e-5, "floor of the cosine decay")
    warmup_steps: int = setting(5000, "linear warmup length in steps")
    cosine_period: int = setting(150000, "steps of one cosine decay cycle (then a warm restart)")
    cosine_mult: float = setting(1.0, "each cosine cycle is this many times the one before (1 = the original fixed period; 2 = SGDR's doubling)")
    max_steps: int = setting(300000, "optimizer steps of the whole run")
    grad_clip: float = setting(1.0, "gradient-norm clipping threshold")
    compile: int = setting(0, "1 = torch.compile the model (a minute of compiling first; pays on a GPU), 0 = eager")
    # --- evaluation and stopping
    eval_every: int = setting(2000, "steps between validation passes (each one reports and checkpoints)")
    patience: int = setting(0, "stop on a plateau: this many evaluations past warmup without a better val_score, in the low-LR half of a cosine cycle and not rising over the last 3 (0 = never)")
    time_budget_s: float = setting(0.0, "stop at the first evaluation after this many seconds of training (0 = none)")
    seed: int = setting(0, "seed of weights init and batch order")
    init_from: str = setting("", "checkpoint folder to start from (transfer learning, trainable/transfer.py); '' = a fresh init")

    def __post_init__(self):
        problems = []
        if self.loss not in ("focal", "ce"):
            problems.append(f"loss must be 'focal' or 'ce', not {self.loss!r}")
        if self.head not in HEADS:
            problems.append(f"head must be one of {HEADS}, not {self.head!r}")
        if self.sequence not in SEQUENCES:
            problems.append(f"sequence must be one of {SEQUENCES}, not {self.sequence!r}")
        elif self.sequence == "transformer" and (self.seq_heads <= 0 or self.seq_hidden % self.seq_heads):
            problems.append(f"seq_hidden {self.seq_hidden} must be a multiple of seq_heads {self.seq_heads} for sequence=transformer (each head gets seq_hidden / seq_heads features)")
        if self.block not in BLOCKS:
            problems.append(f"block must be one of {BLOCKS}, not {self.block!r}")
        if not 0 <= self.augment <= 2:
            problems.append(f"augment must be in [0, 2] (0 = off, 1 = strong), got {self.augment}")
        if not 1 <= self.depth <= 8:
            problems.append(f"depth must be in [1, 8], got {self.depth}")
        elif self.img_height < 2 ** self.depth:
            problems.append(f"img_height {self.img_height} is too small for depth {self.depth} (each block halves it): use img_height >= {2 ** self.depth} or a smaller depth")
        if self.img_width < 0:
            problems.append(f"img_width must be >= 0 (0 = from the data), got {self.img_width}")
        for name in ("img_height", "channels", "seq_hidden", "batch_size", "max_steps", "eval_every", "cosine_period"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if self.cosine_mult < 1:
            problems.append(f"cosine_mult must be >= 1 (1 = a fixed period), got {self.cosine_mult}")
        if self.warmup_steps < 0 or self.augment_ramp < 0 or self.patience < 0 or self.time_budget_s < 0 or self.focal_gamma < 0 or self.focal_pos_weight <= 0:
            problems.append("warmup_steps, augment_ramp, patience, time_budget_s and focal_gamma must be >= 0 and focal_pos_weight > 0")
        if not 0 < self.min_lr <= self.peak_lr:
            problems.append(f"need 0 < min_lr <= peak_lr, got min_lr={self.min_lr}, peak_lr={self.peak_lr}")
        if problems:
            raise UserError("; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown training setting(s) {unknown}; known: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def check_fits(self, max_len: int) -> None:
        """Raise ValueError when this input shape can't read labels of max_len characters."""
        if self.img_width and self.img_width < 2 ** min(self.depth, 2 if self.head == "ctc" else self.depth):
            raise UserError(f"img_width {self.img_width} is too small for depth {self.depth}; use a wider input")
        if self.head == "ctc" and self.img_width and self.img_width // 4 < ctc_min_columns(max_len):
            raise UserError(f"the ctc head needs img_width >= {4 * ctc_min_columns(max_len)} for labels of up to {max_len} characters "
                             f"(it reads one symbol per 4-pixel column, a blank between repeats); got {self.img_width}")

    def per_worker_batch(self, world_size: int) -> int:
        """The one place the global batch is split over workers."""
        return max(1, self.batch_size // world_size)

    def schedule(self) -> dict:
        """Keyword arguments of `schedule.lr_at`."""
        return dict(peak_lr=self.peak_lr, min_lr=self.min_lr, warmup_steps=self.warmup_steps, cosine_period=self.cosine_period,
                    cosine_mult=self.cosine_mult)


# The step-valued settings (searched as fractions of max_steps, stored as steps) and the least each can be.
STEP_SETTINGS = {"warmup_steps": 0, "cosine_period": 1}
HEADS = ("multilabel", "ctc")
BLOCKS = ("plain", "residual")
SEQUENCES = ("conv", "gru", "transformer")
AUTO_WIDTH_MULTIPLE = 8  # an input width taken from the data is rounded to this (two 2x poolings + slack)


def ctc_min_columns(max_len: int) -> int:
    """Output columns a CTC head needs for max_len symbols: one each, plus a blank between any two."""
    return 2 * max_len + 1


def input_shape(cfg: TrainConfig, meta: dict) -> TrainConfig:
    """Fill img_width = 0 from the data's aspect (meta['image_size'] = [width, height]) at cfg.img_height.

    Imported sets come as 200x50, 152x42, ...: squeezing them into a fixed box distorts the glyphs.
    A CTC head also gets at least the width its longest label needs.
    """
    if not cfg.img_width:
        from trainable.data import IMAGE_SIZE  # the generator's size, for sets made before meta held one

        w, h = meta.get("image_size") or IMAGE_SIZE
        width = max(AUTO_WIDTH_MULTIPLE, round(cfg.img_height * w / h / AUTO_WIDTH_MULTIPLE) * AUTO_WIDTH_MULTIPLE)
        if cfg.head == "ctc":
            width = max(width, 4 * ctc_min_columns(meta["max_len"]))
        cfg = cfg.replace(img_width=width)
    cfg.check_fits(meta["max_len"])
    return cfg


# A run that shows learning on 2 CPU cores in a few minutes (smoke mode of every command).
SMOKE = dict(max_steps=600, warmup_steps=60, cosine_period=600, eval_every=100)
# The larger model for GPUs.
GPU_MODEL = dict(channels=48, img_height=64, seq_hidden=384)


def add_arguments(parser, cls=TrainConfig, skip=()) -> None:
    """Generate `--kebab-case` flags from the dataclass (defaults live in the dataclass only): a bool that defaults to
    True becomes `--no-NAME`, one that defaults to False `--NAME`; every flag not given parses to None."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata
        flag = "--" + (meta.get("flag") or f.name.replace("_", "-"))
        if isinstance(f.default, bool):
            parser.add_argument(("--no-" + flag[2:]) if f.default else flag, dest=f.name, default=None,
                                action="store_const", const=not f.default, help=meta.get("help"))
            continue
        kind = meta.get("kind") or type(f.default)
        parser.add_argument(flag, dest=f.name, type=kind, default=None, choices=meta.get("choices") or None, help=meta.get("help"))


def from_arguments(args, base: dict | None = None, cls=TrainConfig):
    """Dataclass from parsed flags: flags given win over `base`, which wins over the defaults."""
    values = dict(base or {})
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return cls.from_dict(values) if hasattr(cls, "from_dict") else cls(**values)
