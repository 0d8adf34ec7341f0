"""ASHA without a Ray cluster: rungs start at a quarter of the run and after the longest warmup, at least 3 of
them on the CPU preset; a trial is judged by its best evaluation so far and only against trials of its own head;
each stop before max_steps is recorded as the trial's status (search/status.py)."""

from types import SimpleNamespace

from search import status
from search.scheduler import FairASHA, rung_plan, rungs

CONTINUE, STOP = "CONTINUE", "STOP"


def test_rungs_start_at_a_quarter_after_the_longest_warmup():
    assert rungs(1200, 100, 240) == [300, 600, 900]  # the cpu preset: warmups up to 20% of 1200
    assert rungs(300000, 5000, 60000) == [75000, 150000, 225000]
    assert rungs(500, 50, 100) == [150, 300, 400]  # max(warmup 100, 500 / 4 = 125), up to an evaluation
    assert rungs(500, 50, 200) == [200, 300, 400]  # a long warmup pushes the first rung back
    assert rungs(40, 10, 8) == [10, 20, 30]
    assert rungs(1200, 500, 0) == [500, 1000]  # rungs that round to the same evaluation are one
    assert all(r >= 80000 for r in rungs(300000, 5000, 80000))


def test_the_rung_plan_says_how_many_trials_reach_each_rung():
    """All trials reach the first rung, then half as many each rung and the end (reduction factor 2)."""
    assert rung_plan(1200, 100, 240, 8).endswith(
        "rung 1 at step 300: all 8 trials; rung 2 at step 600: ~4; rung 3 at step 900: ~2; to the end (1200): ~1")
    assert rung_plan(1200, 100, 240, 20).endswith("rung 2 at step 600: ~10; rung 3 at step 900: ~5; to the end (1200): ~2")
    assert rung_plan(1200, 100, 240, 3).endswith("rung 2 at step 600: ~2; rung 3 at step 900: ~1; to the end (1200): ~1")  # never ~0
    assert rung_plan(1200, 500, 0, 8).endswith("rung 1 at step 500: all 8 trials; rung 2 at step 1000: ~4; to the end (1200): ~2")
    assert rung_plan(100, 100, 0, 8) == "ASHA: no rung before max_steps=100; every trial runs to the end"


def feed(asha, trial, step, value):
    return asha.on_trial_result(None, trial, dict(step=step, val_score=value))


def test_a_noisy_dip_at_a_rung_does_not_cut_and_heads_are_judged_apart(tmp_path):
    asha = FairASHA([300, 600, 900], 1200, str(tmp_path))
    good, dip, weak, ctc = (SimpleNamespace(trial_id=t, config=dict(head=h)) for t, h in
                            [("good", "multilabel"), ("dip", "multilabel"), ("weak", "multilabel"), ("ctc", "ctc")])
    for t in (good, dip, weak, ctc):
        asha.on_trial_add(None, t)
    assert feed(asha, good, 300, 0.30) == CONTINUE
    assert feed(asha, dip, 200, 0.40) == CONTINUE
    assert feed(asha, dip, 300, 0.05) == CONTINUE  # its best so far (0.40) beats the rung's median
    assert feed(asha, weak, 300, 0.10) == STOP
    assert feed(asha, ctc, 300, 0.0) == CONTINUE  # a CTC head at 0% is not compared with multilabel trials
    assert feed(asha, ctc, 1200, 0.9) == CONTINUE  # at max_steps a trial ends by itself (and records `completed`)
    kinds = {t.trial_id: status.read(str(tmp_path), t.trial_id) for t in (good, dip, weak, ctc)}
    assert kinds == dict(weak=dict(kind="asha", step=300, reason=""), **{t: dict(kind="running", step=None, reason="") for t in ("good", "dip", "ctc")})
