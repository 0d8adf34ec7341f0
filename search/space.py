"""The search space: one declarative table. Step-valued ranges are fractions of the trial's max_steps.

Each entry: kind ('log', 'float', 'steps', 'choice') and its range, which may depend on an earlier choice (`per`).
'steps' bounds are fractions of max_steps, so a 1,000-step CPU trial and a 300,000-step GPU trial search the same
*shape* of schedule.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from trainable.config import STEP_SETTINGS, TrainConfig
from trainable.errors import UserError


@dataclass(frozen=True)
class Param:
    kind: str  # 'log' | 'float' | 'steps' (fraction of max_steps) | 'choice'
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()
    when: tuple = ()  # (other parameter, value): searched only in trials where it holds, e.g. ('head', 'multilabel')
    # (other parameter, {value: (low, high)}): the range in trials where the other parameter (listed before this one)
    # has that value, e.g. ('head', {'ctc': (3e-4, 1e-2)}); other values use low..high, which holds every range
    per: tuple = ()

    def bounds(self, chosen: dict) -> tuple[float, float]:
        """(low, high) in a trial whose parameters so far are `chosen`."""
        if self.per and chosen.get(self.per[0]) in self.per[1]:
            return tuple(self.per[1][chosen[self.per[0]]])
        return self.low, self.high


DEFAULT_SPACE = {
    # The head: the original MAX_LEN x CHARSET classifier, or a CRNN read by CTC (no fixed positions,
    # so a glyph's place in the image does not have to match its index in the label). First: peak_lr's range
    # depends on it.
    "head": Param("choice", choices=("multilabel", "ctc")),
    # Log scale: the effect of the LR is multiplicative. One range per head, where a trial can learn before ASHA's
    # first rung (step 300 of the cpu preset's 1200); measured by dev/probe_lr.py (easy set of 3000 images, batch 32,
    # warmup 20, cosine period 600, one seed, one thread), val full match / char accuracy at step 300 (and 600):
    #   ctc         1e-4: 0.00 / 0.06 (0.05)   2e-4: 0.30 / 0.57 (0.62)   4e-4: 0.70 / 0.88 (0.81)
    #               1e-3: 0.76 / 0.91 (0.84)   1e-2: 0.57 / 0.84 (0.84)
    #   multilabel  1e-4: 0.00 / 0.04 (0.00)   1e-3: 0.00 / 0.18 (0.01)   3e-3: 0.02 / 0.35 (0.13)
    #               1e-2: 0.00 / 0.32 (0.10)   3e-2: 0.01 / 0.25 (0.07)
    # Below 4e-4 a CTC head is still at or near its all-blank start at the first rung (2e-4: under half the best
    # there, so ASHA cuts it); a multilabel head at 1e-4 learns nothing, is best from 3e-3 to 1e-2 and worse again at
    # 3e-2. Both ranges keep the reference's 1e-3 (the start points). The multilabel head is far behind CTC at
    # these budgets whatever its LR: its range stops it wasting a trial on an LR, not on the head.
    "peak_lr": Param("log", 4e-4, 1e-2, per=("head", {"ctc": (4e-4, 1e-2), "multilabel": (1e-3, 1e-2)})),
    # Reference: 5000 of 300000 steps (1.7%). From none to a fifth of the run: longer warmups only
    # delay learning, and ASHA's first rung comes after the longest warmup (see scheduler.py).
    "warmup_steps": Param("steps", 0.0, 0.2),
    # Reference: 150000 of 300000 steps = two cosine cycles. From four cycles (0.25) to one (1.0).
    "cosine_period": Param("steps", 0.25, 1.0),
    # Augmentation strength: 0 (off, the reference) to 1 (about 8 degrees of rotation and shear, 10%
    # scale). Above 1 the warps start to cut glyphs off at the borders.
    "augment": Param("float", 0.0, 1.0),
    # Focal exponent: 0 is plain BCE, the reference is 2, the focal-loss paper found > 5 hurts.
    # Only the multilabel head has a focal loss: CTC trials don't spend samples on these two.
    "focal_gamma": Param("float", 0.0, 5.0, when=("head", "multilabel")),
    # Weight of the right-symbol term: 1 (balanced) to 10; the reference is 3. One positive per
    # position against C-1 negatives makes values > 1 plausible.
    "focal_pos_weight": Param("float", 1.0, 10.0, when=("head", "multilabel")),
}

# The original project's run, to be evaluated first: TrainConfig's defaults, its step values as fractions of its
# max_steps (they scale with a trial's budget).
_ORIGINAL = TrainConfig()
REFERENCE = {name: getattr(_ORIGINAL, name) / _ORIGINAL.max_steps if name in STEP_SETTINGS else getattr(_ORIGINAL, name)
             for name in DEFAULT_SPACE}
# captcha-tune's own starting point, evaluated second (--no-recommended leaves it out): the reference's optimiser and
# schedule, read by a CRNN with CTC (the standard text-recognition head: no fixed glyph positions) and trained
# with moderate augmentation. A prior, not a result on the bench sets: it gives the searcher a strong point to
# beat from the second trial, where random start-up draws would take several trials to find one.
RECOMMENDED = dict(REFERENCE, head="ctc", augment=0.3)


class SpaceError(UserError):
    """A search space that can't be searched; raised before Ray starts."""


def parse_space(overrides: dict | None = None) -> dict[str, Param]:
    """DEFAULT_SPACE with overrides {'name': {'low':..,'high':..} | {'choices': [...]} | {'kind':..}} applied, validated."""
    space = dict(DEFAULT_SPACE)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name, spec in (overrides or {}).items():
        if name not in fields:
            raise SpaceError(f"unknown search parameter {name!r}; searchable settings: {sorted(fields)}")
        if spec is None:  # null removes a parameter from the search (it keeps its fixed value)
            space.pop(name, None)
            continue
        base = space.get(name, Param("choice" if "choices" in spec else "float"))
        if ("low" in spec or "high" in spec) and "per" not in spec:
            base = dataclasses.replace(base, per=())  # a range the user sets holds for every trial
        if "choices" in spec and "kind" not in spec:  # `--bound augment=0,0.5` on a range: those values, not the range
            base = dataclasses.replace(base, kind="choice", per=())
        try:
            space[name] = dataclasses.replace(base, **{k: tuple(v) if k in ("choices", "when", "per") else v for k, v in spec.items()})
        except TypeError:
            raise SpaceError(f"bad range for {name}: {spec}; use {{'low': L, 'high': H}} or {{'choices': [...]}}") from None
        if space[name].kind == "choice":  # --bound channels=16,32 gives strings: a trial needs the setting's own type
            space[name] = dataclasses.replace(space[name], choices=tuple(typed(name, v, fields[name]) for v in space[name].choices))
    for name, p in space.items():
        check_param(name, p)
    return space


def typed(name: str, value, f: dataclasses.Field):
    """A choice value as its TrainConfig setting's type ('32' -> 32 for channels); one line when it is not one."""
    kind = f.metadata.get("kind") or type(f.default)
    if kind is type(None) or isinstance(value, kind):
        return value
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise SpaceError(f"{name}: choice {value!r} is not of type {kind.__name__}; write {name}=A,B with {kind.__name__} values") from None


def check_values(space: dict[str, Param], base: TrainConfig) -> None:
    """Build the training settings at every choice and both ends of every range: a value no trial could run
    with is one line naming the parameter, before Ray starts (not an error inside every trial that draws it)."""
    for name, p in space.items():
        cases = [(dict([p.when] if p.when else []), v) for v in (p.choices if p.kind == "choice" else (p.low, p.high))]
        cases += [({p.per[0]: other}, v) for other, ends in (p.per[1].items() if p.per else ()) for v in ends]
        for fixed, value in cases:
            if p.kind in ("steps", "int"):
                value = max(1, round(value * base.max_steps)) if p.kind == "steps" else int(value)
            try:
                TrainConfig.from_dict({**base.to_dict(), **fixed, name: type(getattr(base, name))(value)})
            except (ValueError, TypeError) as e:
                allowed = f"; allowed: {', '.join(map(str, p.choices))}" if p.kind == "choice" else ""
                raise SpaceError(f"{name}={value!r} can't be trained: {e}{allowed}") from None


def check_param(name: str, p: Param) -> None:
    if p.kind not in ("log", "float", "steps", "choice"):
        raise SpaceError(f"{name}: kind must be log, float, steps or choice, not {p.kind!r}")
    if p.when and len(p.when) != 2:
        raise SpaceError(f"{name}: 'when' must be [other parameter, value], got {list(p.when)}")
    if p.kind == "choice":
        if not p.choices:
            raise SpaceError(f"{name}: a choice needs at least one value")
        return
    if p.low > p.high:
        raise SpaceError(f"{name}: min {p.low:g} > max {p.high:g}; swap them")
    if p.low < 0 or (p.kind == "log" and p.low <= 0):
        raise SpaceError(f"{name}: bounds must be {'> 0 (log scale)' if p.kind == 'log' else '>= 0'}, got {p.low:g}")
    if p.kind == "steps" and p.high > 1:
        raise SpaceError(f"{name}: step ranges are fractions of --max-steps in [0, 1], got {p.high:g}")
    if p.per:
        if p.kind not in ("log", "float") or len(p.per) != 2 or not isinstance(p.per[1], dict):
            raise SpaceError(f"{name}: 'per' must be [other parameter, {{value: [low, high]}}] on a log or float range, got {list(p.per)}")
        for value, ends in p.per[1].items():
            if len(ends) != 2 or not p.low <= ends[0] <= ends[1] <= p.high:
                raise SpaceError(f"{name}: the range for {p.per[0]}={value} must be [low, high] inside {p.low:g}..{p.high:g}, got {list(ends)}")


def parse_bound(text: str) -> tuple[str, dict]:
    """'peak_lr=1e-4:1e-2' or 'loss=focal,ce' -> (name, override)."""
    name, _, value = text.partition("=")
    if not value:
        raise SpaceError(f"--bound {text!r}: write NAME=LOW:HIGH or NAME=A,B,C")
    if ":" in value:
        low, high = value.split(":", 1)
        try:
            return name.strip(), dict(low=float(low), high=float(high))
        except ValueError:
            raise SpaceError(f"--bound {text!r}: LOW and HIGH must be numbers") from None
    return name.strip(), dict(choices=[v.strip() for v in value.split(",")])


def load_overrides(path: str | None, bounds=()) -> dict:
    """Overrides from a JSON/YAML file, then --bound flags on top."""
    overrides = {}
    if path:
        import yaml

        with open(path) as f:
            overrides = yaml.safe_load(f) or {}
        if not isinstance(overrides, dict):
            raise SpaceError(f"{path}: expected a mapping of parameter -> range")
    overrides.update(parse_bound(b) for b in bounds)
    return overrides


def materialize(space: dict[str, Param], max_steps: int) -> dict[str, Param]:
    """Turn 'steps' fractions into absolute step bounds (>= 1 for periods) for this budget."""
    out = {}
    for name, p in space.items():
        if p.kind == "steps":
            low = max(STEP_SETTINGS.get(name, 0), round(p.low * max_steps))
            p = Param("int", low, max(low, round(p.high * max_steps)))
        out[name] = p
    return out


class DefineByRun:
    """The space as an Optuna define-by-run function: a parameter with `when` is suggested only in trials
    where its condition holds, one with `per` from the range of the value drawn before it (conditions refer to
    parameters listed before it). Picklable, so Tune can checkpoint the searcher."""

    def __init__(self, space: dict[str, Param]):
        self.space = space

    def __call__(self, trial) -> dict:
        dists, chosen = to_optuna(self.space), {}
        for name, p in self.space.items():
            if p.when and p.when[0] in chosen and chosen[p.when[0]] != p.when[1]:
                continue
            if p.per:  # Optuna lets a float's bounds differ between trials of a define-by-run space
                low, high = p.bounds(chosen)
                dists[name] = to_optuna({name: dataclasses.replace(p, low=low, high=high, per=())})[name]
            chosen[name] = suggest(trial, name, dists[name])
        return None


def suggest(trial, name: str, dist):
    """trial.suggest_* for an Optuna distribution."""
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, d.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def to_optuna(space: dict[str, Param]) -> dict:
    """Optuna distributions (absolute values) for OptunaSearch."""
    import optuna.distributions as d

    dist = {}
    for name, p in space.items():
        if p.kind == "log":
            dist[name] = d.FloatDistribution(p.low, p.high, log=True)
        elif p.kind == "float":
            dist[name] = d.FloatDistribution(p.low, p.high)
        elif p.kind == "int":
            dist[name] = d.IntDistribution(int(p.low), int(p.high))
        else:
            dist[name] = d.CategoricalDistribution(list(p.choices))
    return dist


def reference_point(space: dict[str, Param], max_steps: int, base: TrainConfig, source: dict = REFERENCE) -> dict | None:
    """A config (the original project's by default) restricted to the searched names, scaled to max_steps,
    clipped to range. A choice the space doesn't offer: the reference takes the first choice; any other
    source gives None (a recommended CTC point is no recommendation in a multilabel-only space)."""
    point = {}
    for name, p in materialize(space, max_steps).items():
        value = source.get(name, getattr(base, name))
        if p.when and point.get(p.when[0], p.when[1]) != p.when[1]:
            continue
        if name in STEP_SETTINGS:
            value = round(value * max_steps)
        if p.kind != "choice":
            low, high = p.bounds(point)
            value = min(max(value, low), high)
        elif value not in p.choices:
            if source is not REFERENCE:
                return None
            value = p.choices[0]
        point[name] = type(getattr(base, name))(value)
    return point


REFERENCE_LABEL_LEN = 4  # the label length the presets' trial budgets were sized on (the easy spec)
HEIGHT_STEP = 16  # searched input heights are multiples of this (the backbone halves the height up to 4 times)


def fit_to_data(space: dict[str, Param], base: TrainConfig, meta: dict, auto_steps: bool) -> tuple[dict[str, Param], TrainConfig]:
    """The trial budget and searched input heights for this dataset (meta: its meta.json).

    - Budget: the presets' max_steps were sized on 4-character labels; a CTC or multilabel head needs about
      proportionally more steps to align longer ones (6-character sets learned nothing in 1200 steps), so an
      automatic budget grows with max_len / 4 (rounded up to whole evaluations). An explicit --max-steps is kept.
    - Height: where the images are at least twice the base img_height (200x80 at 32 shrinks strokes 2.5x),
      `img_height` joins the space as a choice of base, 1.5x and 2x base (capped at the images' own height),
      unless --bound/--space already set it. The width follows each height (trainable.config.input_shape), so
      CTC keeps its columns for the longest label."""
    if auto_steps:
        scale = max(1.0, meta["max_len"] / REFERENCE_LABEL_LEN)
        steps = math.ceil(base.max_steps * scale / base.eval_every) * base.eval_every
        base = base.replace(max_steps=steps)
    height = (meta.get("image_size") or [0, 0])[1]
    if "img_height" not in space and base.img_height and height >= 2 * base.img_height:
        tallest = height // HEIGHT_STEP * HEIGHT_STEP
        choices = sorted({min(tallest, round(base.img_height * f / HEIGHT_STEP) * HEIGHT_STEP) for f in (1.0, 1.5, 2.0)})
        space = {**space, "img_height": Param("choice", choices=tuple(choices))}
    return space, base


def start_points(space: dict[str, Param], max_steps: int, base: TrainConfig, recommended: bool = True) -> list[dict]:
    """The trials every sweep starts with: the reference, then (unless left out, or the same) RECOMMENDED."""
    points = [reference_point(space, max_steps, base)]
    rec = reference_point(space, max_steps, base, recommended_for(space)) if recommended else None
    return points + ([rec] if rec and rec != points[0] else [])


def recommended_for(space: dict[str, Param]) -> dict:
    """RECOMMENDED, at the tallest input height the space offers where it searches one (fit_to_data: images at
    least twice the base height). On the hard spec's 200x80 images a CTC trial at 64 reached 87% validation full match
    by step 800 where the same head at 32 was at 58% (bench/results/sweep-hard): strokes shrunk 2.5x are lost."""
    heights = space.get("img_height")
    return dict(RECOMMENDED, img_height=max(heights.choices)) if heights is not None and heights.kind == "choice" else RECOMMENDED
