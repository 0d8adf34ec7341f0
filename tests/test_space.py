"""The search space without Ray: bounds scale with max_steps, the reference point is the original config,
bad bounds are rejected, and the Optuna study goes where asked."""

import pytest

from search.space import SpaceError, load_overrides, materialize, parse_bound, parse_space, reference_point, start_points
from search.searcher import build_searcher
from search.sweep import SweepSettings
from trainable.config import TrainConfig


def test_step_ranges_scale_with_the_budget():
    small, big = materialize(parse_space(), 1000), materialize(parse_space(), 300000)
    assert (small["warmup_steps"].low, small["warmup_steps"].high) == (0, 200)
    assert (big["cosine_period"].low, big["cosine_period"].high) == (75000, 300000)


def test_reference_point_is_the_original_run_scaled():
    space = materialize(parse_space(), 300000)
    assert reference_point(space, 300000, TrainConfig()) == dict(
        peak_lr=1e-3, warmup_steps=5000, cosine_period=150000, head="multilabel", augment=0.0, focal_gamma=2.0, focal_pos_weight=3.0)
    assert reference_point(materialize(parse_space(), 600), 600, TrainConfig())["warmup_steps"] == 10


def test_start_points_reference_then_recommended_where_the_space_allows():
    space = materialize(parse_space(), 600)
    ref, rec = start_points(space, 600, TrainConfig())
    assert ref == reference_point(space, 600, TrainConfig())
    assert rec == dict(peak_lr=1e-3, warmup_steps=10, cosine_period=300, head="ctc", augment=0.3)  # no focal settings in a ctc trial
    assert start_points(space, 600, TrainConfig(), recommended=False) == [ref]
    multilabel_only = materialize(parse_space({"head": {"choices": ["multilabel"]}}), 600)
    assert len(start_points(multilabel_only, 600, TrainConfig())) == 1  # a CTC recommendation is none here
    no_augment = materialize(parse_space({"augment": None}), 600)  # clipped to what is searched
    assert start_points(no_augment, 600, TrainConfig())[1] == dict(peak_lr=1e-3, warmup_steps=10, cosine_period=300, head="ctc")


@pytest.mark.parametrize("bound, message", [("peak_lr=1e-2:1e-4", "min"), ("peak_lr=0:1e-2", "> 0"),
                                            ("warmup_steps=0:2", "fractions"), ("typo=1:2", "unknown")])
def test_bad_bounds_are_rejected(bound, message):
    with pytest.raises(SpaceError, match=message):
        parse_space(dict([parse_bound(bound)]))


def test_choice_and_file_overrides(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("focal_gamma: {low: 0.5, high: 1.5}\nfocal_pos_weight: null\n")
    space = parse_space(load_overrides(str(f), ["loss=focal,ce"]))
    assert space["loss"].choices == ("focal", "ce") and space["focal_gamma"].high == 1.5 and "focal_pos_weight" not in space


def test_choices_from_the_command_line_take_the_settings_type():
    """`--bound channels=16,32` gives the strings '16' and '32': a trial drawing one must get an int, or every trial
    that draws it errors inside Ray (TrainConfig compares it with 0); a value of the wrong type is one line before Ray."""
    space = parse_space(dict([parse_bound("channels=16,32"), parse_bound("depth=3,4"), parse_bound("head=ctc")]))
    assert space["channels"].choices == (16, 32) and space["depth"].choices == (3, 4) and space["head"].choices == ("ctc",)
    assert TrainConfig.from_dict(dict(channels=space["channels"].choices[1])).channels == 32
    assert parse_space(dict([parse_bound("augment=0,0.5")]))["augment"].choices == (0.0, 0.5)
    with pytest.raises(SpaceError, match="depth: choice 'x' is not of type int; write depth=A,B with int values"):
        parse_space(dict([parse_bound("depth=3,x")]))


def test_optuna_study_storage(tmp_path):
    space = materialize(parse_space(), 500)
    ref = start_points(space, 500, TrainConfig())
    url = f"sqlite:///{tmp_path}/study.db"
    assert type(build_searcher(SweepSettings(optuna_storage=url), space, ref, "s3://b/e")._storage).__name__ == "RDBStorage"
    assert (tmp_path / "study.db").exists()
    assert build_searcher(SweepSettings(), space, ref, "s3://b/e")._storage is None  # remote experiment, no URL: in memory


def test_focal_settings_are_searched_only_for_the_multilabel_head():
    import optuna

    from search.space import DefineByRun

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = materialize(parse_space(), 1000)
    for _ in range(12):
        trial = study.ask()
        DefineByRun(space)(trial)
        assert ("focal_gamma" in trial.params) == (trial.params["head"] == "multilabel"), trial.params
        study.tell(trial, 0.5)
    assert {t.params["head"] for t in study.trials} == {"multilabel", "ctc"}


def test_choice_values_that_cannot_train_fail_before_launch():
    from search.space import SpaceError, check_values

    with pytest.raises(SpaceError, match="loss='xx' can't be trained: loss must be 'focal' or 'ce'.*allowed: focal, xx"):
        check_values(materialize(parse_space({"loss": {"choices": ["focal", "xx"]}}), 1000), TrainConfig(max_steps=1000))
    with pytest.raises(SpaceError, match="head='rnn'"):
        check_values(materialize(parse_space({"head": {"choices": ["ctc", "rnn"]}}), 1000), TrainConfig(max_steps=1000))
    check_values(materialize(parse_space(), 1000), TrainConfig(max_steps=1000))  # the default space is fine


@pytest.mark.parametrize("spec", ["easy", "mixed", "hard"])
def test_data_derived_budget_heights_and_columns_fit_the_longest_label(spec):
    """For every bench spec: the trial budget grows with the label length, the heights the sweep may choose fit the
    images, and at each of them the CTC head gets enough columns for the longest label (checked on the model)."""
    import torch

    from search.space import DEFAULT_SPACE, fit_to_data
    from trainable.config import TrainConfig, ctc_min_columns, input_shape
    from trainable.data import IMAGE_SIZE, SPECS
    from trainable.model import build_model

    meta = {"image_size": list(IMAGE_SIZE), **SPECS[spec]}
    base = TrainConfig(max_steps=1200, eval_every=100, warmup_steps=20, cosine_period=600)
    space, fitted = fit_to_data(DEFAULT_SPACE, base, meta, auto_steps=True)
    assert fitted.max_steps == {"easy": 1200, "mixed": 2100, "hard": 1800}[spec]
    assert fit_to_data(DEFAULT_SPACE, base, meta, auto_steps=False)[1].max_steps == 1200  # an explicit --max-steps stays
    heights = space["img_height"].choices if "img_height" in space else (base.img_height,)
    assert heights == {"easy": (32,), "mixed": (32,), "hard": (32, 48, 64)}[spec]
    for h in heights:
        cfg = input_shape(base.replace(head="ctc", img_height=h), meta)
        model = build_model(cfg, len(meta["charset"]), meta["max_len"]).eval()
        with torch.no_grad():
            logits = model(torch.zeros(1, 1, cfg.img_height, cfg.img_width))
        columns = logits.shape[1] if logits.shape[0] == 1 else logits.shape[0]
        assert columns >= ctc_min_columns(meta["max_len"]), (h, cfg.img_width, logits.shape)


def test_peak_lr_range_depends_on_the_head_in_a_tpe_study():
    """A float's bounds may differ between trials of one Optuna study (define-by-run): over 40 multivariate, grouped
    TPE trials (the sweep's sampler) every CTC trial draws peak_lr from CTC's range and every multilabel one from its
    own, both heads draw both ends' neighbourhoods, and the reference's 1e-3 is inside both ranges."""
    import math

    import optuna

    from search.space import DEFAULT_SPACE, DefineByRun

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    p = DEFAULT_SPACE["peak_lr"]
    ranges = {head: p.bounds(dict(head=head)) for head in ("ctc", "multilabel")}
    assert ranges["ctc"] != ranges["multilabel"] and all(low <= 1e-3 <= high for low, high in ranges.values())
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, n_startup_trials=5))
    space = materialize(parse_space(), 1200)
    for ref in start_points(space, 1200, TrainConfig()):
        study.enqueue_trial(ref)
    for _ in range(40):
        trial = study.ask()
        DefineByRun(space)(trial)
        low, high = ranges[trial.params["head"]]
        assert low <= trial.params["peak_lr"] <= high, trial.params
        study.tell(trial, -abs(math.log10(trial.params["peak_lr"] / 3e-3)))  # best at 3e-3
    lrs = {h: [t.params["peak_lr"] for t in study.trials if t.params["head"] == h] for h in ranges}
    assert all(lrs.values()), lrs  # both heads drawn (the start points at least)


def test_per_head_ranges_are_checked_and_a_user_range_replaces_them():
    from search.space import DEFAULT_SPACE, REFERENCE, check_values

    check_values(materialize(parse_space(), 1000), TrainConfig(max_steps=1000))  # each head's ends of peak_lr train
    with pytest.raises(SpaceError, match="the range for head=ctc must be \\[low, high\\] inside"):
        parse_space({"peak_lr": {"per": ["head", {"ctc": [1e-5, 1e-2]}]}})  # outside low..high
    user = parse_space(dict([parse_bound("peak_lr=1e-4:1e-2")]))["peak_lr"]
    assert user.per == () and user.bounds(dict(head="ctc")) == (1e-4, 1e-2)
    space = materialize(parse_space(), 1000)
    ref, rec = start_points(space, 1000, TrainConfig())
    assert (ref["head"], ref["peak_lr"], rec["head"], rec["peak_lr"]) == ("multilabel", 1e-3, "ctc", 1e-3)
    for head in ("ctc", "multilabel"):  # a point below a head's range is clipped to that head's low end
        low = DEFAULT_SPACE["peak_lr"].bounds(dict(head=head))[0]
        assert reference_point(space, 1000, TrainConfig(), dict(REFERENCE, head=head, peak_lr=1e-5))["peak_lr"] == low


def test_on_tall_images_the_recommended_config_reads_at_the_tallest_searched_height():
    from search.space import DEFAULT_SPACE, fit_to_data, start_points
    from trainable.config import TrainConfig
    from trainable.data import SPECS

    base = TrainConfig(max_steps=1200, eval_every=100, warmup_steps=20, cosine_period=600)
    space, fitted = fit_to_data(DEFAULT_SPACE, base, dict(SPECS["hard"]), auto_steps=True)
    reference, recommended = start_points(space, fitted.max_steps, fitted)
    assert (reference["head"], reference["img_height"]) == ("multilabel", 32)  # the original config, as it was
    assert (recommended["head"], recommended["img_height"]) == ("ctc", 64)
    easy = fit_to_data(DEFAULT_SPACE, base, dict(SPECS["easy"], image_size=[160, 60]), auto_steps=True)[0]
    assert "img_height" not in start_points(easy, 1200, base)[1]  # nothing to choose on 60-pixel images
