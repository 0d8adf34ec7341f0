"""The searcher: an Optuna study (TPE, GP or random) behind Ray Tune's OptunaSearch, with a trial total that a
later command can grow (extend a finished sweep)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ray.tune.search import SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from search import warm_start
from search.space import DefineByRun
from trainable import storage
from trainable.metric import METRIC, MODE, WORST

if TYPE_CHECKING:
    from search.sweep import SweepSettings

SEARCHERS = ("tpe", "gp", "random")


class LearningOptunaSearch(OptunaSearch):
    """OptunaSearch that tells a diverged or errored trial to the study as the worst value (COMPLETE, not FAIL):
    TPE and GP leave failed trials out of their model, so they would keep proposing the region that diverged."""

    def __init__(self, *args, **kwargs):
        self._last: dict[str, dict] = {}  # each running trial's latest result; set first: OptunaSearch.__init__ calls methods
        super().__init__(*args, **kwargs)

    def on_trial_result(self, trial_id: str, result: dict):
        super().on_trial_result(trial_id, result)
        self._last[trial_id] = result

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        last = {**self._last.pop(trial_id, {}), **(result or {})}
        if error or last.get("diverged"):
            result, error = {**last, METRIC: WORST}, False
        super().on_trial_complete(trial_id, result, error)


class ExtendableSearch(SearchGenerator):
    """Tune's search generator, whose trial total is read from sweep.json when Tune restores it: re-running a
    finished sweep with a larger --num-samples (written to sweep.json first) continues it in the same experiment."""

    def __init__(self, searcher, state_file: str):
        super().__init__(searcher)
        self.state_file = state_file

    def set_state(self, state: dict):
        super().set_state(state)
        self._total_samples = json.loads(storage.read_text(self.state_file))["settings"]["num_samples"]


def build_searcher(s: SweepSettings, space: dict, points: list[dict], exp: str):
    import optuna

    if s.searcher == "random":
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    elif s.searcher == "gp":
        # The GP models the parameters every trial has; the focal settings (multilabel trials only) are drawn at random.
        sampler = optuna.samplers.GPSampler(seed=s.seed)
    else:
        # group=True: the focal settings exist only in multilabel trials, and grouped TPE models each subspace apart
        sampler = optuna.samplers.TPESampler(seed=s.seed, multivariate=True, group=True, n_startup_trials=max(3, s.num_samples // 4))
    # The live study goes next to the experiment (optuna-dashboard sqlite:///EXP/optuna.db) when it is local.
    url = warm_start.study_url(exp, s.optuna_storage)
    db = optuna.storages.RDBStorage(url) if url else None  # None: in memory (an s3:// experiment without --optuna-storage)
    return LearningOptunaSearch(DefineByRun(space), metric=METRIC, mode=MODE, points_to_evaluate=points,
                                sampler=sampler, study_name=warm_start.study_name(s.name), storage=db)
