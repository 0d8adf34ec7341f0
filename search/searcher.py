"""The searcher: an Optuna study (TPE, GP or random) behind Ray Tune's OptunaSearch, with a trial total that a
later command can grow (extend a finished sweep)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray.air.constants import TRAINING_ITERATION
from ray.tune.search import SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from search import status, warm_start
from search.scheduler import TIME_ATTR
from search.space import DefineByRun
from trainable import storage
from trainable.metric import METRIC, MODE, WORST
from trainable.ray_internals import already_completed, optuna_study, optuna_trial, set_total_samples

if TYPE_CHECKING:
    from search.sweep import SweepSettings

SEARCHERS = ("tpe", "gp", "random")
# The choice rules of the TPE sampler (ChoiceTPE); dev/sim_searcher.py turns them off to compare.
FOLLOW_BEST_CHOICE = True  # start-up draws take each choice from the best finished trial
RETIRE_LOSING_CHOICES = True  # a choice whose every finished trial ended below half the best is not drawn again
LOCAL_EVERY = 2  # after start-up, every LOCAL_EVERY-th draw (the first included) perturbs the best trial (0: never)
LOCAL_SCALE = 0.15  # a local draw's standard deviation, as a share of each range (of its log for log ranges)


class LearningOptunaSearch(OptunaSearch):
    """OptunaSearch whose study learns what ASHA ranks by (search/scheduler.py): a trial's best val_score so far,
    as its intermediate values (at the workers' step, where the rungs are) and as its final value, so the study and
    the leaderboard agree trial for trial. The trial's fate (search/status.py, in the experiment `exp`) decides how
    it ends in the study:
    - diverged (a non-finite loss: the config's doing): COMPLETE with the worst value. TPE and GP leave FAIL
      trials out of their model, so they would keep proposing the region that diverged;
    - any other error (an infrastructure fault that outlived the trial's retries, search/trial.py, or a bug): FAIL,
      its reason in the user attr `fail_reason`: a fault is not a config's score;
    - otherwise (completed, stopped by ASHA or the time budget): COMPLETE with its best val_score.
    Each study trial carries its Tune trial id in the user attr `trial_id`."""

    def __init__(self, *args, exp: str | None = None, **kwargs):
        # set first: OptunaSearch.__init__ calls methods
        self._best: dict[str, tuple[float, int]] = {}  # each running trial's best val_score so far, and the last step told
        self._diverged: set[str] = set()  # running trials whose workers reported a divergence
        self._exp = exp
        super().__init__(*args, **kwargs)

    def finished_in_study(self, trial_id: str) -> bool:
        """Told already: a sweep whose driver was killed after the study recorded a trial's end, but before Tune
        checkpointed the searcher, replays that trial's last result on resume (search/trial.py reports it again)."""
        number = optuna_trial(self, trial_id).number
        return optuna_study(self).get_trials(deepcopy=False)[number].state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict):
        if result.get(METRIC) is None:
            return
        if already_completed(self, trial_id):
            return super().on_trial_result(trial_id, result)  # warns
        if self.finished_in_study(trial_id):
            return
        if result.get("diverged"):  # its val_score is WORST by decree, not an evaluation
            self._diverged.add(trial_id)
            return
        best, told = self._best.get(trial_id, (-math.inf, -1))
        best = max(best, result[METRIC], result.get("best_val_score", -math.inf))
        step = int(result[TIME_ATTR] if TIME_ATTR in result else result[TRAINING_ITERATION])
        if step > told:  # a step is told once (a run resumed from a checkpoint, or the final result, repeats one)
            optuna_trial(self, trial_id).report(best, step)
        self._best[trial_id] = best, max(step, told)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if already_completed(self, trial_id):
            return super().on_trial_complete(trial_id, result, error)  # warns
        if self.finished_in_study(trial_id):
            return
        if result and not error:  # the last result, which on_trial_result may not have seen
            self.on_trial_result(trial_id, result)
        best, diverged = self._best.pop(trial_id, (None, -1))[0], trial_id in self._diverged
        self._diverged.discard(trial_id)
        fate = status.read(self._exp, trial_id) if self._exp else dict(kind="running", reason="")
        ot_trial = optuna_trial(self, trial_id)
        ot_trial.set_user_attr("trial_id", trial_id)
        if diverged or fate["kind"] == "diverged":
            super().on_trial_complete(trial_id, {METRIC: WORST})
        elif error:
            ot_trial.set_user_attr("fail_reason", fate["reason"] or "the trial errored without a recorded reason (its process died?)")
            super().on_trial_complete(trial_id, None, error=True)  # FAIL
        else:  # no evaluation at all (stopped before its first): PRUNED
            super().on_trial_complete(trial_id, None if best is None else {METRIC: best})


class ExtendableSearch(SearchGenerator):
    """Tune's search generator, whose trial total is read from sweep.json when Tune restores it: re-running a
    finished sweep with a larger --num-samples (written to sweep.json first) continues it in the same experiment."""

    def __init__(self, searcher, state_file: str):
        super().__init__(searcher)
        self.state_file = state_file

    def set_state(self, state: dict):
        super().set_state(state)
        set_total_samples(self, json.loads(storage.read_text(self.state_file))["settings"]["num_samples"])


def startup_trials(num_samples: int, n_points: int) -> int:
    """TPE's n_startup_trials: the study's finished trials before TPE models them, the start points included.

    A random draw lands anywhere in the space, so it is the draw most likely to be wasted; it pays only with enough
    later trials to use what it showed. The start points (the reference and the recommended config) already count
    as finished trials, but they share the reference's schedule and peak_lr, so on their own they tell TPE nothing
    about those: at least one random draw follows them. Beyond that about a sixth of the budget is drawn at random
    (8 trials: 1, 16: 3, 50: 8), never more than 10, Optuna's default for a study without start points. With C
    trials at a time the first C are drawn before any finishes, so at least those are random anyway."""
    return n_points + min(10, max(1, round(num_samples / 6)))


def _finished(study, name: str | None) -> tuple[list, list, int]:
    """(trials that ended, COMPLETE ones with a value (and `name`, unless None), best first; the sign that makes larger better)."""
    ended = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
    done = sorted((t for t in ended if t.state == TrialState.COMPLETE and t.value is not None and (name is None or name in t.params)),
                  key=lambda t: -sign * t.value)
    return ended, done, sign


def _retired(done: list, name: str, sign: int) -> set:
    """The values of `name` whose every finished trial ended below half the best trial's value."""
    if not done or sign * done[0].value <= 0:
        return set()
    tried: dict = {}
    for t in done:
        tried.setdefault(t.params[name], []).append(sign * t.value)
    return {v for v, values in tried.items() if max(values) < sign * done[0].value / 2}


def perturb(value, dist, rng: np.random.RandomState, scale: float = LOCAL_SCALE):
    """`value` moved by a normal step of `scale` x the range (on a log range, of its log), redrawn while it falls
    outside (then clipped), rounded for an integer range; a choice is kept."""
    if not isinstance(dist, (FloatDistribution, IntDistribution)) or dist.low >= dist.high:
        return value
    f, inv = (math.log, math.exp) if dist.log else (float, float)
    low, high = f(dist.low), f(dist.high)
    x = f(min(max(value, dist.low), dist.high))
    for _ in range(20):
        y = x + rng.normal(0.0, scale * (high - low))
        if low <= y <= high:
            break
    y = inv(min(max(y, low), high))
    return int(min(max(round(y), dist.low), dist.high)) if isinstance(dist, IntDistribution) else min(max(y, dist.low), dist.high)


class ChoiceTPE(optuna.samplers.TPESampler):
    """TPE (multivariate, grouped) with a local draw between its own, and two rules for choice settings (head,
    img_height, sequence, ...):

    - Local draws: after the start-up draws, every LOCAL_EVERY-th trial (the 4th, 6th and 8th of a default 8-trial sweep)
      is the best finished trial with each range moved by a normal step of LOCAL_SCALE x the range (a factor of ~1.6
      on the CTC peak_lr, +-0.15 augment) and its choices kept. In a sweep of a few trials TPE's "good" group is the
      single best trial, blurred by a prior as heavy as a trial and kernels about as wide as the range, so its draws
      land about anywhere: in the four bench sweeps at 3a965c1 (before local draws) the recommended config won or
      came within 0.3 points twice, and 6 draws found nothing near it. A local draw refines what already works and
      rarely ends below half the best; TPE's draws in between keep exploring. Measured on the four bench sweeps
      again with local draws (69c7283, Intel box; README, "Trials a sweep wastes"): the 12 local draws ended 2.8-10.3 points below the
      recommended config on average per sweep, TPE's 8 draws 11.5-26.7; 3 local draws and 1 TPE draw beat it by >= 1
      point; no sweep had more than 1 trial below half its best.

    - Start-up random draws take each choice from the best finished trial so far and draw only the ranges. The start
      points already compare the choices that matter most (the reference's multilabel head against the recommended
      CTC head, at the tallest searched height), and a draw of the losing choice is the draw most likely to be
      wasted: in the hard bench sweep a random multilabel draw ran all 1800 steps to 1.7% (ASHA cannot cut a trial at
      a rung only two others reached). Before any trial finishes (C trials at a time) the draw is plain random.
    - Later, a choice whose every finished trial ended below half the best trial's value is not drawn again: the
      draw takes the best trial's choice instead (its ranges are kept). TPE's prior is as heavy as a whole trial, and
      its "good" group in a study of a few trials is the single best one, so it keeps proposing a choice the trials
      showed is far worse (the multilabel head) at about a third of its draws. A choice retired here is one the
      sweep's own goal counts as wasted; `--bound head=multilabel` (one choice) still searches it.

    Simulated 8-trial sweeps (dev/sim_searcher.py, 40 each, a caricature of the measured sweeps): multilabel draws a
    sweep after the start points / sweeps with more than one trial below half the best: plain TPE 1.00 / 31 of 40;
    start-up rule 0.45 / 13; both rules 0.00 / 0 (by construction there: every multilabel trial is below half)."""

    def __init__(self, n_startup_trials: int, **kwargs):
        super().__init__(n_startup_trials=n_startup_trials, multivariate=True, group=True, **kwargs)
        self.startup = n_startup_trials

    def incumbent(self, study, trial):
        """The best finished trial when `trial` is a local draw (see the class), else None."""
        after = trial.number - self.startup
        if not LOCAL_EVERY or after < 0 or after % LOCAL_EVERY:
            return None
        _, done, _ = _finished(study, None)
        return done[0] if done else None

    def sample_relative(self, study, trial, search_space):
        best = self.incumbent(study, trial)
        if best is not None:
            return {name: perturb(best.params[name], dist, self._rng.rng) for name, dist in search_space.items() if name in best.params}
        params = super().sample_relative(study, trial, search_space)
        for name, value in params.items():
            if RETIRE_LOSING_CHOICES and isinstance(search_space[name], CategoricalDistribution):
                _, done, sign = _finished(study, name)
                if value in _retired(done, name, sign):
                    params[name] = done[0].params[name]
        return params

    def sample_independent(self, study, trial, param_name, param_distribution):
        best = self.incumbent(study, trial)
        if best is not None and param_name in best.params:
            return perturb(best.params[param_name], param_distribution, self._rng.rng)
        if not isinstance(param_distribution, CategoricalDistribution):
            return super().sample_independent(study, trial, param_name, param_distribution)
        ended, done, sign = _finished(study, param_name)
        if done and FOLLOW_BEST_CHOICE and len(ended) < self.startup:
            return done[0].params[param_name]
        value = super().sample_independent(study, trial, param_name, param_distribution)
        return done[0].params[param_name] if RETIRE_LOSING_CHOICES and value in _retired(done, param_name, sign) else value


def build_searcher(s: SweepSettings, space: dict, points: list[dict], exp: str):
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep's console shows Tune's table, not a line per study event

    if s.searcher == "random":
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    elif s.searcher == "gp":
        # The GP models the parameters every trial has with the same range; the focal settings (multilabel trials
        # only) are drawn at random. A range that differs per head (peak_lr) would leave the GP's model too (Optuna's
        # intersection search space drops it), so the GP searches its envelope for both heads and learns the rest.
        sampler = optuna.samplers.GPSampler(seed=s.seed)
        space = {name: dataclasses.replace(p, per=()) for name, p in space.items()}
    else:
        # group=True: the focal settings exist only in multilabel trials, and grouped TPE models each subspace apart
        sampler = ChoiceTPE(startup_trials(s.num_samples, len(points)), seed=s.seed)
    # The live study goes next to the experiment (optuna-dashboard sqlite:///EXP/optuna.db) when it is local.
    url = warm_start.study_url(exp, s.optuna_storage)
    db = optuna.storages.RDBStorage(url) if url else None  # None: in memory (an s3:// experiment without --optuna-storage)
    return LearningOptunaSearch(DefineByRun(space), metric=METRIC, mode=MODE, points_to_evaluate=points,
                                sampler=sampler, study_name=warm_start.study_name(s.name), storage=db, exp=exp)
