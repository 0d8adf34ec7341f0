"""`--warm-start EXP`: seed a new sweep's Optuna study with another experiment's finished trials.

Where the earlier trials come from: EXP's own Optuna study (EXP/optuna.db, or the --optuna-storage it ran with,
both recorded in EXP/sweep.json), not its Tune trials table. The study holds exactly what the earlier searcher
learned from, already in absolute units and with the value it was told: a diverged or errored trial as the worst
value (the table shows it errored, with no score), an ASHA-stopped trial at its last report. The table would
have to be rebuilt from Tune's experiment state and result files and its values re-derived. EXP/sweep.json
supplies the rest: the earlier max_steps and base config, and the study's name.

Mapping a trial into the new space (`map_trials`):
- step settings (warmup_steps, cosine_period, and any 'steps' parameter) scale by new max_steps / old max_steps;
- a parameter the new space lacks is dropped from every trial, and named;
- a parameter the new space searches but the earlier sweep held fixed takes the value the earlier trials
  trained with (EXP's base config, scaled when step-valued); a conditional parameter (focal_* when head ==
  multilabel) is left out of a trial whose condition does not hold, as DefineByRun would;
- a value outside the new range *drops the trial* (beyond rounding, which is clipped): clipping would tell the
  searcher that a point on the border scored what a point outside it did. Same for a choice the space lacks.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from search.space import Param, materialize, to_optuna
from trainable import storage
from trainable.config import STEP_SETTINGS
from trainable.errors import UserError
from trainable.metric import MODE

ATTR = "warm_start_from"  # user attribute on each seeded trial: where it came from (and: the study was seeded)


def study_name(name: str) -> str:
    return f"captcha-tune-{name}"


def study_url(exp: str, optuna_storage: str | None) -> str | None:
    """The Optuna storage of an experiment's study; None: in memory (an s3:// experiment without --optuna-storage)."""
    return optuna_storage or (None if storage.is_uri(exp) else f"sqlite:///{exp}/optuna.db")


@dataclass
class Earlier:
    source: str  # the experiment path
    max_steps: int
    base: dict  # the earlier sweep's base TrainConfig (values of settings it did not search)
    trials: list  # [(params, value)] of its COMPLETE trials


@dataclass
class Seeds:
    source: str
    trials: list  # [(params, value)] in the new space's absolute units
    dropped_params: dict = field(default_factory=dict)  # name -> reason
    dropped_trials: dict = field(default_factory=dict)  # name -> trials dropped for a value out of the new range
    scale: tuple = (1, 1)  # (new max_steps, old max_steps)

    def message(self, already: bool = False) -> str:
        notes = [f"{k}: {v}" for k, v in sorted(self.dropped_params.items())]
        if self.dropped_trials:
            n = sum(self.dropped_trials.values())
            notes.append(f"{n} trial{'s' * (n != 1)} out of the new range: "
                         + ", ".join(f"{k} x{v}" for k, v in sorted(self.dropped_trials.items())))
        if self.scale[0] != self.scale[1]:
            notes.append(f"step settings scaled by {self.scale[0]}/{self.scale[1]} max_steps")
        head = "already seeded" if already else f"{len(self.trials)} trial{'s' * (len(self.trials) != 1)}"
        return f"warm start: {head} from {self.source}" + (f" (dropped: {'; '.join(notes)})" if notes else "")


def read_earlier(source: str) -> Earlier:
    """EXP's finished trials from its Optuna study; one-line UserError when EXP is missing or unreadable."""
    import optuna

    exp = storage.normalize(source)
    state = storage.join(exp, "sweep.json")
    try:
        if not storage.exists(state):
            raise UserError(f"--warm-start {source}: no sweep there (no sweep.json); give STORAGE/NAME of an earlier `captcha-tune sweep`")
        saved = json.loads(storage.read_text(state))
        settings, base = saved["settings"], saved["base"]
        max_steps = int(base["max_steps"])
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"--warm-start {source}: unreadable sweep.json ({type(e).__name__}: {e})") from None
    url = study_url(exp, settings.get("optuna_storage"))
    if url is None:
        raise UserError(f"--warm-start {source}: that sweep kept its Optuna study in memory (s3:// without --optuna-storage); nothing to start from")
    if url.startswith("sqlite:///") and not os.path.isfile(url[len("sqlite:///"):]):
        raise UserError(f"--warm-start {source}: no Optuna study at {url[len('sqlite:///'):]}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name(settings["name"]), storage=url)
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    except Exception as e:  # a missing study (KeyError), a corrupt or unreachable database: all one line
        raise UserError(f"--warm-start {source}: can't read its Optuna study {study_name(settings['name'])!r} at {url} "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    trials = [(dict(t.params), float(t.value)) for t in done if t.value is not None and math.isfinite(t.value)]
    return Earlier(source=source, max_steps=max_steps, base=base, trials=trials)


def map_trials(earlier: Earlier, space: dict[str, Param], max_steps: int) -> Seeds:
    """The earlier trials as points of `space` (unmaterialized: 'steps' ranges as fractions) at `max_steps`."""
    ranges = materialize(space, max_steps)
    steps = {n for n, p in space.items() if p.kind == "steps"} | set(STEP_SETTINGS)
    seeds = Seeds(source=earlier.source, trials=[], scale=(max_steps, earlier.max_steps))
    for params, value in earlier.trials:
        for name in params:
            if name not in space:
                seeds.dropped_params[name] = "not in this space"
        point, out = {}, None
        for name, p in ranges.items():
            if p.when and point.get(p.when[0], p.when[1]) != p.when[1]:
                continue  # its condition does not hold in this trial: DefineByRun would not suggest it
            if name in params:
                v = params[name]
            elif name in earlier.base:
                v = earlier.base[name]  # searched now, fixed then: the value those trials trained with
            else:
                continue
            if name in steps and p.kind != "choice":
                v = v * max_steps / earlier.max_steps
            v = _fit(v, p)
            if v is None:
                out = name
                break
            point[name] = v
        if out:
            seeds.dropped_trials[out] = seeds.dropped_trials.get(out, 0) + 1
        else:
            seeds.trials.append((point, value))
    return seeds


def _fit(v, p: Param):
    """v as a value of p, clipped when only rounding put it outside; None when it is outside the range."""
    if p.kind == "choice":
        return v if v in p.choices else next((c for c in p.choices if str(c) == str(v)), None)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    slack = 1.0 if p.kind == "int" else 1e-9 * max(abs(p.low), abs(p.high), 1e-12)
    if v < p.low - slack or v > p.high + slack:
        return None
    v = min(max(v, p.low), p.high)
    return int(min(max(round(v), p.low), p.high)) if p.kind == "int" else v


def seed_study(url: str, name: str, seeds: Seeds, space: dict[str, Param], max_steps: int) -> bool:
    """Add the seeds to the study `name` at `url` (created if new) with the distributions the sweep suggests
    from; False (nothing added) when the study was seeded before, so a re-run does not add them twice."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(url[len("sqlite:///"):]) or ".", exist_ok=True)
    study = optuna.create_study(storage=url, study_name=name, load_if_exists=True,
                                direction="maximize" if MODE == "max" else "minimize")
    if any(ATTR in t.user_attrs for t in study.get_trials(deepcopy=False)):
        return False
    dists = to_optuna(materialize(space, max_steps))
    study.add_trials([optuna.trial.create_trial(params=p, distributions={k: dists[k] for k in p}, value=v,
                                                user_attrs={ATTR: seeds.source}) for p, v in seeds.trials])
    return True
