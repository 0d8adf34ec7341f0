"""The searcher without Ray: tpe, gp and random all search the conditional (define-by-run) space through
OptunaSearch, and a diverged or errored trial reaches the Optuna study as the worst value, never as FAIL."""

import optuna
import pytest

from search.space import materialize, parse_space, start_points
from search.searcher import build_searcher
from search.sweep import SweepSettings
from trainable.config import TrainConfig


def searcher(tmp_path, name):
    space = materialize(parse_space(), 1200)
    s = SweepSettings(name="t", searcher=name, optuna_storage=f"sqlite:///{tmp_path}/study.db")
    return build_searcher(s, space, start_points(space, 1200, TrainConfig()), str(tmp_path))


@pytest.mark.parametrize("name", ["tpe", "gp", "random"])
def test_every_searcher_searches_the_conditional_space(tmp_path, name):
    search = searcher(tmp_path, name)
    for i in range(12):
        config = search.suggest(f"t{i}")
        if i < 2:  # the start points come first, whatever the searcher: the reference, then the recommended config
            assert (config["head"], config["augment"], config["peak_lr"]) == (("multilabel", 0.0, 1e-3), ("ctc", 0.3, 1e-3))[i]
        assert ("focal_gamma" in config) == (config["head"] == "multilabel"), config
        search.on_trial_complete(f"t{i}", dict(val_score=config["peak_lr"] * 10, step=1200))
    assert len(search._ot_study.trials) == 12


def test_diverged_and_errored_trials_are_the_worst_value(tmp_path):
    search = searcher(tmp_path, "tpe")
    for t in ("ok", "diverged", "errored"):
        search.suggest(t)
    search.on_trial_result("ok", dict(val_score=0.4, step=100, diverged=0.0, training_iteration=1))
    search.on_trial_complete("ok", dict(val_score=0.4, step=100, diverged=0.0, training_iteration=1))
    search.on_trial_result("diverged", dict(val_score=0.0, step=100, diverged=1.0, training_iteration=1))
    search.on_trial_complete("diverged", error=True)  # the trial raised DivergedError after its last report
    search.on_trial_complete("errored", error=True)  # no report at all
    study = optuna.load_study(study_name="captcha-tune-t", storage=f"sqlite:///{tmp_path}/study.db")
    assert [(t.state.name, t.value) for t in study.trials] == [("COMPLETE", 0.4), ("COMPLETE", 0.0), ("COMPLETE", 0.0)]
