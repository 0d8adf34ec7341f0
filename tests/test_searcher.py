"""The searcher without Ray: tpe, gp and random all search the conditional (define-by-run) space through
OptunaSearch; the study learns each trial's best val_score so far (what ASHA ranks by), a diverged trial is the
worst value and an errored one FAIL with its reason."""

import optuna
import pytest

from search import status
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


def test_the_study_learns_best_so_far_divergence_is_worst_a_fault_is_fail(tmp_path):
    """The study gets what ASHA ranks by: the best val_score so far, as intermediate values at each step and as the
    final value (not the last report); a divergence is the worst value; an error is FAIL with the recorded reason."""
    search = searcher(tmp_path, "tpe")
    for t in ("ok", "diverged", "errored"):
        search.suggest(t)
    for step, score in ((100, 0.2), (200, 0.5), (300, 0.4)):
        search.on_trial_result("ok", dict(val_score=score, best_val_score=max(0.2, score) if step < 300 else 0.5, step=step, diverged=0.0, training_iteration=step // 100))
    search.on_trial_complete("ok", dict(val_score=0.4, best_val_score=0.5, step=300, diverged=0.0, training_iteration=3))
    search.on_trial_result("diverged", dict(val_score=0.3, best_val_score=0.3, step=100, diverged=0.0, training_iteration=1))
    search.on_trial_result("diverged", dict(val_score=0.0, step=200, diverged=1.0, training_iteration=2))
    status.record(str(tmp_path), "diverged", "diverged", 200, "diverged: train loss nan at step 200")
    search.on_trial_complete("diverged", error=True)  # the trial raised DivergedError after its last report
    status.record(str(tmp_path), "errored", "errored", reason="the worker group did not start (WorkerGroupStartupTimeoutError), 3 times")
    search.on_trial_complete("errored", error=True)  # no report at all
    study = optuna.load_study(study_name="captcha-tune-t", storage=f"sqlite:///{tmp_path}/study.db")
    assert [(t.state.name, t.value) for t in study.trials] == [("COMPLETE", 0.5), ("COMPLETE", 0.0), ("FAIL", None)]
    assert study.trials[0].intermediate_values == {100: 0.2, 200: 0.5, 300: 0.5}
    assert [t.user_attrs["trial_id"] for t in study.trials] == ["ok", "diverged", "errored"]
    assert study.trials[2].user_attrs["fail_reason"] == "the worker group did not start (WorkerGroupStartupTimeoutError), 3 times"
    assert "fail_reason" not in study.trials[1].user_attrs


def test_bound_sequence_conv_transformer_is_searched_and_checked_before_ray(tmp_path):
    """--bound sequence=conv,transformer: the searcher draws both; a transformer width that its heads don't divide
    is one line before Ray starts."""
    from search.space import SpaceError, check_values, load_overrides

    overrides = load_overrides(None, ["sequence=conv,transformer"])
    space = materialize(parse_space(overrides), 1200)
    base = TrainConfig(max_steps=1200)
    check_values(space, base)
    s = SweepSettings(name="t", searcher="random", optuna_storage=f"sqlite:///{tmp_path}/study.db")
    search = build_searcher(s, space, start_points(space, 1200, base), str(tmp_path))
    drawn = {search.suggest(f"t{i}")["sequence"] for i in range(12)}
    assert drawn == {"conv", "transformer"}
    with pytest.raises(SpaceError, match="sequence='transformer' can't be trained: seq_hidden 100 must be a multiple of seq_heads 8"):
        check_values(space, base.replace(seq_hidden=100, seq_heads=8))


def test_startup_trials_counts_the_start_points_and_a_sixth_of_the_budget():
    """TPE's start-up draws: the start points, then at least one random draw, about a sixth of the budget, at most 10."""
    from search.searcher import startup_trials

    assert [startup_trials(n, 2) for n in (1, 8, 12, 16, 24, 50, 100)] == [3, 3, 4, 5, 6, 10, 12]
    assert startup_trials(8, 1) == 2  # --no-recommended: one start point
    assert startup_trials(8, 0) == 1


def test_tpe_uses_the_startup_count_of_the_budget(tmp_path):
    space = materialize(parse_space(), 1200)
    s = SweepSettings(name="t", searcher="tpe", num_samples=50, optuna_storage=f"sqlite:///{tmp_path}/study.db")
    search = build_searcher(s, space, start_points(space, 1200, TrainConfig()), str(tmp_path))
    assert search._sampler._n_startup_trials == 10


@pytest.mark.parametrize("winner", ["multilabel", "ctc"])
def test_startup_draws_take_the_head_of_the_best_start_point_and_draw_the_ranges(tmp_path, winner):
    """After the start points (the reference's multilabel head, the recommended CTC head) the start-up draw keeps the
    head that scored better and draws the ranges at random; after start-up, the head that ended below half the best
    is not drawn again."""
    space = materialize(parse_space(), 1200)
    s = SweepSettings(name="t", searcher="tpe", num_samples=8, optuna_storage=f"sqlite:///{tmp_path}/study.db")
    search = build_searcher(s, space, start_points(space, 1200, TrainConfig()), str(tmp_path))
    for i in range(2):
        config = search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", dict(val_score=0.9 if config["head"] == winner else 0.05, step=1200))
    drawn = search.suggest("t2")  # startup_trials(8, 2) == 3: the one random draw
    assert drawn["head"] == winner and drawn["peak_lr"] != 1e-3 and drawn["augment"] not in (0.0, 0.3), drawn
    assert ("focal_gamma" in drawn) == (winner == "multilabel")
    search.on_trial_complete("t2", dict(val_score=0.5, step=1200))
    search.save(str(tmp_path / "searcher.pkl"))  # Tune checkpoints the searcher, sampler included
    search.restore(str(tmp_path / "searcher.pkl"))
    later = [search.suggest(f"t{i}") for i in range(3, 8)]  # TPE's draws
    assert [c["head"] for c in later] == [winner] * 5, later


def test_the_gp_models_peak_lr_over_both_heads(tmp_path):
    """Per-head ranges would drop peak_lr from the GP's model (Optuna's intersection search space); the GP searches
    its envelope instead, so after trials of both heads peak_lr is still in its relative search space."""
    import optuna

    from search.space import DEFAULT_SPACE

    search = searcher(tmp_path, "gp")
    for i in range(6):
        search.on_trial_complete(f"t{i}", dict(val_score=search.suggest(f"t{i}")["peak_lr"] * 10, step=1200))
    study = search._ot_study
    trial = study.ask()
    assert "peak_lr" in study.sampler.infer_relative_search_space(study, trial)
    p = DEFAULT_SPACE["peak_lr"]
    assert {t.distributions["peak_lr"] for t in study.trials if "peak_lr" in t.distributions} == {optuna.distributions.FloatDistribution(p.low, p.high, log=True)}


def test_local_draws_perturb_the_best_trial_between_tpes_draws(tmp_path):
    """After start-up, every second draw (trials 3, 5, 7 of 8) is the best finished trial moved a little: its
    choices kept, each range within a few LOCAL_SCALE steps of it (peak_lr on a log scale)."""
    import math

    from search import searcher as mod

    space = materialize(parse_space(), 1200)
    s = SweepSettings(name="t", searcher="tpe", num_samples=8, optuna_storage=f"sqlite:///{tmp_path}/study.db")
    search = build_searcher(s, space, start_points(space, 1200, TrainConfig()), str(tmp_path))
    configs = []
    for i in range(8):
        configs.append(search.suggest(f"t{i}"))
        # the recommended config (trial 1) stays the best: every local draw perturbs it
        search.on_trial_complete(f"t{i}", dict(val_score=0.9 if i == 1 else 0.5, step=1200))
    best = configs[1]
    lr = space["peak_lr"].bounds(dict(head="ctc"))
    for i in (3, 5, 7):
        c = configs[i]
        assert c["head"] == "ctc" and "focal_gamma" not in c, c
        assert c != best
        assert abs(math.log(c["peak_lr"] / best["peak_lr"])) <= 4 * mod.LOCAL_SCALE * math.log(lr[1] / lr[0]), c
        assert abs(c["augment"] - best["augment"]) <= 4 * mod.LOCAL_SCALE, c
        for name in ("warmup_steps", "cosine_period"):
            p = space[name]
            assert isinstance(c[name], int) and p.low <= c[name] <= p.high
            assert abs(c[name] - best[name]) <= 4 * mod.LOCAL_SCALE * (p.high - p.low), (name, c)


def test_perturb_stays_in_range_and_keeps_choices():
    import numpy as np
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from search.searcher import perturb

    rng = np.random.RandomState(0)
    lr = FloatDistribution(4e-4, 1e-2, log=True)
    moved = [perturb(1e-2, lr, rng) for _ in range(200)]  # at the top of the range: never above it
    assert all(4e-4 <= v <= 1e-2 for v in moved) and len(set(moved)) > 100
    steps = [perturb(0, IntDistribution(0, 240), rng) for _ in range(200)]
    assert all(isinstance(v, int) and 0 <= v <= 240 for v in steps) and max(steps) > 0
    assert perturb("ctc", CategoricalDistribution(["multilabel", "ctc"]), rng) == "ctc"
    assert perturb(5, IntDistribution(5, 5), rng) == 5
