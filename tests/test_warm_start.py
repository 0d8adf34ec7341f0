"""--warm-start: an earlier sweep's finished trials seed a new sweep's Optuna study, mapped into the new space
(step settings scaled by the max_steps ratio, parameters the new space lacks dropped and named, out-of-range
trials dropped); a missing or unreadable experiment is one line before Ray starts. No Ray here."""

from __future__ import annotations

import json

import optuna
import pytest

import cluster.connect
from captcha_tune.cli import main
from search import warm_start
from search.space import materialize, parse_space, to_optuna

OLD_MAX, NEW_MAX = 1200, 300


def earlier_sweep(root, name="old", trials=()):
    """A finished sweep's files as warm start reads them: sweep.json and its study in EXP/optuna.db. The earlier
    space did not search augment (fixed at 0.25 in its base)."""
    exp = root / name
    exp.mkdir(parents=True)
    base = dict(max_steps=OLD_MAX, warmup_steps=20, cosine_period=600, augment=0.25, head="multilabel", focal_gamma=2.0)
    (exp / "sweep.json").write_text(json.dumps(dict(settings=dict(name=name, optuna_storage=None), base=base)))
    dists = to_optuna(materialize(parse_space({"augment": None}), OLD_MAX))
    study = optuna.create_study(storage=f"sqlite:///{exp}/optuna.db", study_name=f"captcha-tune-{name}", direction="maximize")
    for params, value in trials:
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params}, value=value))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))  # not finished: never seeded
    return exp


TRIALS = [
    (dict(peak_lr=1e-3, warmup_steps=20, cosine_period=600, head="multilabel", focal_gamma=2.0, focal_pos_weight=3.0), 0.5),
    (dict(peak_lr=3e-3, warmup_steps=240, cosine_period=1200, head="ctc"), 0.8),
    (dict(peak_lr=9e-3, warmup_steps=0, cosine_period=300, head="multilabel", focal_gamma=4.0, focal_pos_weight=1.0), 0.1),
]


def test_seeds_scaled_and_mapped_into_the_new_space(tmp_path):
    old = earlier_sweep(tmp_path, trials=TRIALS)
    # The new space drops focal_gamma, searches augment, and caps peak_lr below the third trial's 9e-3.
    space = parse_space({"focal_gamma": None, "peak_lr": {"low": 1e-4, "high": 5e-3}})
    seeds = warm_start.map_trials(warm_start.read_earlier(str(old)), space, NEW_MAX)
    assert seeds.dropped_params == {"focal_gamma": "not in this space"}
    assert seeds.dropped_trials == {"peak_lr": 1}

    url = f"sqlite:///{tmp_path}/new/optuna.db"
    assert warm_start.seed_study(url, "captcha-tune-new", seeds, space, NEW_MAX)
    got = [(t.params, t.value, t.user_attrs) for t in optuna.load_study(study_name="captcha-tune-new", storage=url).trials]
    assert got == [
        # 20 and 600 of 1200 steps -> 5 and 150 of 300; augment: the value the earlier sweep trained with
        (dict(peak_lr=1e-3, warmup_steps=5, cosine_period=150, head="multilabel", augment=0.25, focal_pos_weight=3.0), 0.5,
         {"warm_start_from": str(old)}),
        # a ctc trial has no focal settings
        (dict(peak_lr=3e-3, warmup_steps=60, cosine_period=300, head="ctc", augment=0.25), 0.8, {"warm_start_from": str(old)}),
    ]
    message = seeds.message()
    assert message.startswith(f"warm start: 2 trials from {old} (dropped: focal_gamma: not in this space; ")
    assert "1 trial out of the new range: peak_lr x1" in message and "scaled by 300/1200" in message

    # seeding again (a re-run of a sweep that never started) adds nothing
    assert not warm_start.seed_study(url, "captcha-tune-new", seeds, space, NEW_MAX)
    assert len(optuna.load_study(study_name="captcha-tune-new", storage=url).trials) == 2

    # the new study is one the sweep's own searcher can continue: TPE samples from it, seeds included
    study = optuna.load_study(study_name="captcha-tune-new", storage=url, sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=1))
    trial = study.ask()
    assert 1e-4 <= trial.suggest_float("peak_lr", 1e-4, 5e-3, log=True) <= 5e-3


@pytest.mark.parametrize("setup, msg", [
    (lambda root: None, "no sweep there (no sweep.json)"),
    (lambda root: (root / "old").mkdir() or (root / "old" / "sweep.json").write_text("{not json"), "unreadable sweep.json"),
    (lambda root: (root / "old").mkdir() or (root / "old" / "sweep.json").write_text(
        json.dumps(dict(settings=dict(name="old"), base=dict(max_steps=100)))), "no Optuna study at"),
])
def test_missing_or_unreadable_experiment_is_one_line_before_ray(tmp_path, monkeypatch, capsys, setup, msg):
    setup(tmp_path)
    monkeypatch.setattr(cluster.connect, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--storage", str(tmp_path), "--name", "new", "--warm-start", str(tmp_path / "old"), "--data", str(tmp_path / "none")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --warm-start {tmp_path / 'old'}: ") and msg in err and err.count("\n") == 1, err


def test_the_sweeps_searcher_continues_the_seeded_study(tmp_path):
    """What run_sweep does on a fresh --warm-start sweep, short of Ray: seed EXP/optuna.db, then build the searcher."""
    from search.space import reference_point
    from search.searcher import build_searcher
    from search.sweep import SweepSettings
    from trainable.config import TrainConfig

    old = earlier_sweep(tmp_path, trials=TRIALS)
    fractions = parse_space()
    new = tmp_path / "new"
    s = SweepSettings(storage=str(tmp_path), name="new", warm_start=str(old))
    seeds = warm_start.map_trials(warm_start.read_earlier(str(old)), fractions, NEW_MAX)
    assert warm_start.seed_study(warm_start.study_url(str(new), None), "captcha-tune-new", seeds, fractions, NEW_MAX)
    space = materialize(fractions, NEW_MAX)
    search = build_searcher(s, space, [reference_point(space, NEW_MAX, TrainConfig(max_steps=NEW_MAX))], str(new))
    config = search.suggest("t0")  # the reference point, the first new trial
    search.on_trial_complete("t0", dict(val_score=0.3, step=NEW_MAX))
    study = optuna.load_study(study_name="captcha-tune-new", storage=f"sqlite:///{new}/optuna.db")
    assert [t.value for t in study.trials] == [0.5, 0.8, 0.1, 0.3]
    assert study.trials[-1].params == config
