"""Results of a sweep without Ray, on synthetic tables: every plot writes a PNG that PIL opens (learning
curves with completed, ASHA-stopped, errored and running trials; parameters vs metric with a log-scale
parameter; LR schedules; importances); Optuna importances cover exactly the searched parameters and sum
to 1 for three or more finished trials, and are empty with a "not enough" PNG otherwise (fANOVA, no
fallback); edge_warnings flags a best point on the boundary of a log range and not an interior one, nor one
at a hard limit (a floor of 0, a period of all of max_steps); the terminal leaderboard's statuses are short
with the reasons under it, the report keeps them whole; a trial's status is its record (search/status.py); a sweep whose trials all errored or diverged is one counted line; write_report and `captcha-tune results [--quiet]` write report.md embedding the plots, also for a
sweep still running."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from PIL import Image

from results import experiment, plots
from results.report import markdown_table, write_report
from search import status
from trainable.errors import UserError

SPACE = {
    "peak_lr": dict(kind="log", low=1e-4, high=1e-2, choices=[]),
    "warmup_steps": dict(kind="int", low=0, high=100, choices=[]),
    "cosine_period": dict(kind="int", low=125, high=500, choices=[]),
    "focal_gamma": dict(kind="float", low=0.0, high=5.0, choices=[]),
}
BASE = dict(peak_lr=1e-3, min_lr=1e-5, warmup_steps=10, cosine_period=250, max_steps=500)
REFERENCE = dict(peak_lr=1e-3, warmup_steps=8, cosine_period=250, focal_gamma=2.0)
RUNGS = [100, 300]
DIVERGED = "train loss nan at step {} with peak_lr={}; lower peak_lr"
# trial_id, params, (status kind, its step, reason) as search/status.py records them, last step reported, final val_full_match
TRIALS = [
    ("t0", REFERENCE, ("completed", 500, ""), 500, 0.60),
    ("t1", dict(peak_lr=3e-3, warmup_steps=40, cosine_period=400, focal_gamma=1.0), ("completed", 500, ""), 500, 0.85),
    ("t2", dict(peak_lr=2e-4, warmup_steps=90, cosine_period=130, focal_gamma=4.5), ("asha", 100, "below the top 1/2 at rung 1"), 100, 0.05),
    ("t3", dict(peak_lr=6e-3, warmup_steps=20, cosine_period=300, focal_gamma=3.0), ("asha", 300, ""), 300, 0.40),
    ("t4", dict(peak_lr=9e-3, warmup_steps=5, cosine_period=200, focal_gamma=0.5), ("diverged", 150, DIVERGED.format(150, 0.009)), 150, 0.10),
    ("t5", dict(peak_lr=1e-3, warmup_steps=50, cosine_period=250, focal_gamma=2.5), ("running", None, ""), 0, math.nan),
]


def tables(rows=TRIALS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, history) shaped like results.experiment.load's, with curves rising to each final value."""
    trials, history = [], []
    for tid, params, (kind, step, reason), last, final in rows:
        steps = list(range(50, last + 1, 50))
        vals = [final * s / last for s in steps]
        history += [dict(trial_id=tid, step=s, lr=1e-3, train_loss=1 - v, val_full_match=v, val_char_acc=min(1, v + 0.1), val_loss=1 - v,
                         diverged=float(kind == "diverged" and s == last)) for s, v in zip(steps, vals)]
        best = max(vals) if vals else math.nan
        trials.append(dict(trial_id=tid, **params, best_val_full_match=best, best_val_score=best + 0.999 * min(1, best + 0.1), best_step=steps[-1] if steps else 0,
                           steps_run=last, status=kind, status_step=step, reason=reason, wall_seconds=10.0, worker_seconds=20.0, gpu_seconds=0.0))
    trials = pd.DataFrame(trials).astype(dict(status_step="Int64"))
    return trials, pd.DataFrame(history, columns=["trial_id", "step", "lr", "train_loss", "val_full_match", "val_char_acc", "val_loss", "diverged"])


def assert_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_each_plot_writes_a_png(tmp_path):
    trials, history = tables()
    assert_png(plots.learning_curves(history, trials, tmp_path / "curves.png", rungs=RUNGS))
    assert_png(plots.params_vs_metric(trials, SPACE, tmp_path / "params.png", reference=REFERENCE))
    assert_png(plots.lr_schedules(trials, BASE, tmp_path / "lr.png", top=3))
    path, _ = plots.importance(trials, SPACE, tmp_path / "importance.png")
    assert_png(path)


def test_importance_sums_to_one_over_the_searched_parameters(tmp_path):
    trials, _ = tables()  # 4 finished (2 completed, 2 stopped) with different values; errored and running left out
    _, imp = plots.importance(trials, SPACE, tmp_path / "importance.png")
    assert set(imp) == set(SPACE)
    assert sum(imp.values()) == pytest.approx(1.0, abs=1e-6)
    assert all(v >= 0 for v in imp.values())


def test_importance_with_heads_leaves_out_the_focal_setting_ctc_trials_lack(tmp_path):
    """CTC trials have no focal_gamma (NaN in the table): fANOVA ranks head, LR and schedule over every finished trial."""
    space = {**SPACE, "head": dict(kind="choice", low=0, high=0, choices=["multilabel", "ctc"])}
    rows = [(tid, dict(params, head="multilabel"), *rest) for tid, params, *rest in TRIALS]
    rows += [("c1", dict(peak_lr=2e-3, warmup_steps=10, cosine_period=300, head="ctc"), TRIALS[0][2], 500, 0.95),
             ("c2", dict(peak_lr=5e-4, warmup_steps=60, cosine_period=200, head="ctc"), TRIALS[0][2], 500, 0.90)]
    trials, _ = tables(rows)
    assert trials["focal_gamma"].isna().sum() == 2
    _, imp = plots.importance(trials, space, tmp_path / "importance.png")
    assert set(imp) == {"peak_lr", "warmup_steps", "cosine_period", "head"}
    assert sum(imp.values()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("rows", [TRIALS[:1] + TRIALS[4:], [TRIALS[0], (*TRIALS[1][:4], TRIALS[0][4])],
                                  [TRIALS[0], ("t1", REFERENCE, *TRIALS[1][2:])]],
                         ids=["one finished", "two finished, same value", "two finished, same parameters"])
def test_importance_needs_two_distinct_finished_trials(tmp_path, rows):
    trials, _ = tables(rows)
    path, imp = plots.importance(trials, SPACE, tmp_path / "importance.png")
    assert imp == {}
    assert_png(path)


def test_plots_before_any_report(tmp_path):
    trials, history = tables(TRIALS[5:])
    assert_png(plots.learning_curves(history, trials, tmp_path / "curves.png", rungs=RUNGS))
    assert_png(plots.params_vs_metric(trials, SPACE, tmp_path / "params.png"))
    assert_png(plots.lr_schedules(trials, BASE, tmp_path / "lr.png"))
    assert plots.importance(trials, SPACE, tmp_path / "importance.png")[1] == {}


def test_edge_warnings_flag_a_best_point_on_a_log_boundary():
    trials, _ = tables()
    best = trials["best_val_full_match"].idxmax()
    trials.loc[best, "peak_lr"] = 1.05e-4  # log position 0.01 of [1e-4, 1e-2]; linearly it would be far more interior
    warnings = experiment.edge_warnings(trials, SPACE)
    assert len(warnings) == 1 and "peak_lr" in warnings[0] and "lower edge" in warnings[0]
    trials.loc[best, "peak_lr"] = 1e-3  # the log midpoint
    assert experiment.edge_warnings(trials, SPACE) == []


def test_edge_warnings_only_where_the_range_can_widen():
    trials, _ = tables()
    best = trials["best_val_full_match"].idxmax()
    # a warmup of 0, a gamma of 0 and a period of all of max_steps are hard limits, not ranges to widen
    space = dict(SPACE, cosine_period=dict(kind="int", low=125, high=500, choices=[]))
    trials.loc[best, ["warmup_steps", "focal_gamma", "cosine_period"]] = [0, 0.0, 500]
    assert experiment.edge_warnings(trials, space, max_steps=BASE["max_steps"]) == []
    assert len(experiment.edge_warnings(trials, space)) == 1  # without max_steps the period's ceiling is unknown
    trials.loc[best, ["focal_gamma", "cosine_period"]] = [5.0, 130]  # gamma's range can grow up, the period's down
    warnings = experiment.edge_warnings(trials, space, max_steps=BASE["max_steps"])
    assert [w.split("=")[0] + (" upper" if "upper edge" in w else " lower") for w in warnings] == \
        ["warning: best cosine_period lower", "warning: best focal_gamma upper"]
    space = dict(SPACE, warmup_steps=dict(kind="steps", low=0.0, high=1.0, choices=[]))
    assert experiment.hard_limits("warmup_steps", space["warmup_steps"]) == (0, 1.0)
    assert experiment.hard_limits("peak_lr", SPACE["peak_lr"], 500) == (None, None)


def test_short_statuses_and_counted_errors():
    assert experiment.short_statuses(tables()[0]).tolist() == ["completed", "completed", "ASHA@100", "ASHA@300", "diverged@150", "running"]
    trials = pd.DataFrame(dict(status=["errored"] * 5 + ["diverged"] * 2 + ["running"],
                               reason=["loss must be 'focal' or 'ce', not 'x'"] * 4 + ["boom", DIVERGED.format(10, "1e+29"), DIVERGED.format(20, "3.5e+29"), ""]))
    with pytest.raises(UserError) as e:
        experiment.check_errored(trials)
    assert str(e.value) == ("7 of 8 trials errored: 4 x loss must be 'focal' or 'ce', not 'x' | 2 x train loss nan at step 10 "
                            "with peak_lr=1e+29; lower peak_lr (numbers vary) | 1 x boom")
    experiment.check_errored(tables()[0])  # some finished: the sweep found something
    experiment.check_errored(pd.DataFrame())


def test_status_counts_and_labels_cover_every_recorded_kind():
    kinds = pd.Series(["completed", "asha", "budget", "diverged", "errored", "running", "asha"])
    assert experiment.status_counts(kinds) == ("7 trials: 1 completed, 2 stopped by ASHA, 1 stopped by the time budget, "
                                               "1 diverged, 1 errored, 1 running/pending")
    assert experiment.status_counts(pd.Series(["running"])) == "1 trial: 0 completed, 1 running/pending"
    assert set(experiment.LABELS) == {*status.KINDS, "running"}


def test_a_rerun_trial_drops_its_earlier_lifes_errored_record_and_keeps_others(tmp_path):
    """A Ctrl-C tears down a running trial's Train run: its function records `errored`, Tune sees no error and the
    resumed sweep runs the trial again. The rerun's start (search/trial.py) drops that record, so the trial's real end
    is recorded; an ASHA or completed record is never dropped."""
    exp = str(tmp_path)
    status.record(exp, "a", "errored", reason="ControllerError: torn down")
    status.reopen(exp, "a")
    assert status.read(exp, "a")["kind"] == "running"
    status.record_first(exp, "a", "completed", 100)
    assert status.read(exp, "a") == dict(kind="completed", step=100, reason="")
    for kind in ("asha", "completed", "budget", "diverged"):
        status.record(exp, kind, kind, 50)
        status.reopen(exp, kind)
        assert status.read(exp, kind)["kind"] == kind
    status.reopen(exp, "never-recorded")  # nothing to drop
    assert status.read(exp, "never-recorded")["kind"] == "running"


def fake_experiment(tmp_path, monkeypatch, rows=TRIALS):
    """An experiment folder with sweep.json and optuna.db, its tables served without Ray."""
    exp = tmp_path / "exp"
    exp.mkdir()
    sweep = dict(settings=dict(num_samples=len(rows), workers_per_trial=2, searcher="tpe", scheduler="asha"), base=BASE,
                 space=SPACE, reference=REFERENCE, rungs=RUNGS, command="captcha-tune sweep --storage x --name exp")
    (exp / "sweep.json").write_text(json.dumps(sweep))
    (exp / "optuna.db").write_bytes(b"")
    monkeypatch.setattr(experiment, "load", lambda _: tables(rows) if rows else (pd.DataFrame(), pd.DataFrame()))
    return exp


@pytest.mark.parametrize("rows", [TRIALS, TRIALS[5:], []], ids=["finished", "running, no reports", "no trials"])
def test_write_report(tmp_path, monkeypatch, rows):
    exp = fake_experiment(tmp_path, monkeypatch, rows)
    report = write_report(exp)
    text = open(report).read()
    assert report == str(exp / "results" / "report.md")
    assert "captcha-tune sweep --storage x --name exp" in text
    assert f"optuna-dashboard sqlite:///{exp}/optuna.db" in text
    for name in ["learning_curves.png", "params_vs_metric.png", "importance.png", "lr_schedules.png"] if rows else []:
        assert f"]({name})" in text
        assert_png(exp / "results" / name)
    if rows == TRIALS:
        assert "| t1 | 0.85 |" in text and "6 trials: 2 completed, 2 stopped by ASHA, 1 diverged, 1 running/pending" in text
        assert "peak_lr = 0.003" in text and "has no checkpoint yet" in text


def test_results_command(tmp_path, monkeypatch, capsys):
    from captcha_tune.cli import main

    exp = fake_experiment(tmp_path, monkeypatch)
    main(["results", str(exp), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "best trial t1" in printed
    assert "  vs the reference config: 60.0% (trial t0, completed at step 500)\n" in printed  # no recommended config in this sweep.json
    assert "recommended config" not in printed
    board = printed.split("leaderboard")[1].split("\n\n")[0]
    assert "ASHA@100" in board and "diverged@150" in board and "train loss" not in board and "rung 1" not in board
    assert f"  t4 diverged@150: {DIVERGED.format(150, 0.009)}\n" in printed  # the long reasons, under the table
    assert "  t2 ASHA@100: below the top 1/2 at rung 1\n" in printed and "t3 ASHA@300:" not in printed  # t3 has no reason
    for name in ["report.md", "trials.parquet", "history.parquet"]:
        assert str(tmp_path / "out" / name) in printed and (tmp_path / "out" / name).stat().st_size > 0


def test_results_quiet_writes_the_report_without_the_leaderboard(tmp_path, monkeypatch, capsys):
    from captcha_tune.cli import main

    exp = fake_experiment(tmp_path, monkeypatch)
    main(["results", str(exp), "--quiet"])
    printed = capsys.readouterr().out
    assert "leaderboard" not in printed and "best trial" not in printed
    assert printed.splitlines()[0] == f"report: {exp / 'results' / 'report.md'}"
    report = (exp / "results" / "report.md").read_text()
    assert f"- `t4` diverged@150: {DIVERGED.format(150, 0.009)}" in report  # the report keeps whole reasons
    assert "| t2 | 0.05 | 100 | 100 | ASHA@100 | 20 |" in report


def test_markdown_table():
    df = pd.DataFrame(dict(a=["x|y", "z"], b=[0.123456, math.nan]))
    assert markdown_table(df).splitlines() == ["| a | b |", "| --- | --- |", "| x\\|y | 0.1235 |", "| z |  |"]


def test_cost_curve_is_best_so_far_against_cumulative_worker_hours(tmp_path, monkeypatch):
    """Trials in start order (trial id without timestamps, else first report's timestamp - time_total_s), each
    costing its worker_seconds; the report plots it and tables worker_seconds per trial."""
    trials, history = tables()
    t = plots.cost_table(trials, history)
    assert list(t["trial_id"]) == ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert t["cum_worker_hours"].tolist() == pytest.approx([20 * i / 3600 for i in range(1, 7)])
    assert t["best_so_far"].tolist() == [0.6, 0.85, 0.85, 0.85, 0.85, 0.85]

    trials.loc[trials["trial_id"].eq("t2"), "worker_seconds"] = 3600.0
    history["time_total_s"] = history["step"] / 10.0
    history["timestamp"] = history["time_total_s"] + history["trial_id"].map({"t0": 300, "t1": 400, "t2": 100, "t3": 200, "t4": 500})
    t = plots.cost_table(trials, history)
    assert list(t["trial_id"]) == ["t2", "t3", "t0", "t1", "t4", "t5"]  # t5 has no report: last
    assert t["cum_worker_hours"].tolist() == pytest.approx([1 + 20 * i / 3600 for i in range(6)])
    assert t["best_so_far"].tolist() == [0.05, 0.4, 0.6, 0.85, 0.85, 0.85]
    assert_png(plots.cost_curve(trials, history, tmp_path / "cost.png"))
    assert_png(plots.cost_curve(*tables(TRIALS[5:]), tmp_path / "cost_none.png"))

    exp = fake_experiment(tmp_path, monkeypatch)
    text = open(write_report(exp)).read()
    assert "](cost.png)" in text and "reached after 0.01 of 0.03 worker-hours (33%)" in text
    assert_png(exp / "results" / "cost.png")
    header = next(line for line in text.splitlines() if line.startswith("| trial_id | best_val_full_match"))
    assert "| status | worker_seconds |" in header and "| t1 | 0.85 | 500 | 500 | completed | 20 |" in text


def test_edge_warnings_skip_settings_the_best_trial_did_not_search():
    """A ctc-only sweep: the focal settings are None in every trial (the define-by-run space skipped them)."""
    trials, _ = tables()
    trials["focal_gamma"] = None
    assert [w for w in experiment.edge_warnings(trials, SPACE) if "focal_gamma" in w] == []


def test_the_best_trial_is_the_leaderboards_first_when_two_tie_on_full_match():
    """Ranked by val_score like the leaderboard and the best checkpoint: a tie on full match goes to the better
    character accuracy, not to whichever trial comes first in the table (the summary once named one trial as best
    and printed the other's checkpoint)."""
    trials, _ = tables()
    top = trials["best_val_full_match"].max()
    first, second = trials.index[:2]
    trials.loc[[first, second], "best_val_full_match"] = top
    trials.loc[first, "best_val_score"] = top + 0.999 * 0.90
    trials.loc[second, "best_val_score"] = top + 0.999 * 0.95
    best = experiment.best_trial(trials)
    assert best["trial_id"] == trials.loc[second, "trial_id"] == experiment.leaderboard(trials)["trial_id"].iloc[0]
    assert experiment.best_trial(trials.iloc[0:0]) is None


def test_noise_line_names_the_trials_within_two_standard_errors_of_the_best():
    """t1 is best at 85%; on 100 validation images one evaluation's standard error there is 3.6 points, so a trial
    at 80% is within two of them (named) and t0 at 60% is not; on 10,000 images 80% is far behind (no line)."""
    trials, _ = tables()
    trials.loc[trials["trial_id"] == "t3", "best_val_full_match"] = 0.80
    line = experiment.noise_line(trials, 100)
    assert line.startswith("1 other trial(s) within 2 standard errors (7.1 points, 100 validation images) of the best: t3;"), line
    assert "t0" not in line and "captcha-tune retrain EXP --trial ID" in line
    assert experiment.noise_line(trials, 10_000) is None
    assert experiment.noise_line(trials, None) is None and experiment.noise_line(trials.iloc[0:0], 100) is None
    trials.loc[trials["trial_id"] == "t3", "best_val_full_match"] = 0.85  # a tie is within noise at any size
    assert "t3" in experiment.noise_line(trials, 10_000)
