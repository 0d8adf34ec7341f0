"""What a sweep tells its searcher about a diverged trial, on real Ray through the CLI (the driver a subprocess with its
own embedded Ray): a diverged trial (peak_lr 1e29: 5-10 still trains the tiny model) reaches the Optuna study as the
worst value, not FAIL, with no traceback in the console, and its status records the step. (Extending a sweep is
tested in test_tracking.py, on its tracked sweep.)"""

import optuna

from conftest import TINY, cli
from results.experiment import load
from search import status

FLAGS = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def study(exp, name):
    return optuna.load_study(study_name=f"captcha-tune-{name}", storage=f"sqlite:///{exp}/optuna.db")


def test_diverged_trials_are_the_worst_value_without_traceback(easy_data, tmp_path):
    proc = cli("sweep", "--storage", tmp_path, "--name", "nan", "--data", easy_data, "--num-samples", 2, "--workers-per-trial", 1, "--scheduler", "none",
               "--bound", "peak_lr=1e29:1e30", *FLAGS, check=False)
    assert "2 of 2 trials errored" in proc.stderr and "diverged" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-5000:]
    trials = study(tmp_path / "nan", "nan").trials
    assert [(t.state.name, t.value) for t in trials] == [("COMPLETE", 0.0)] * 2
    table, _ = load(tmp_path / "nan")
    assert len(table) == 2 and (table["status"] == "diverged").all(), table["status"].tolist()
    for tid in table["trial_id"]:  # the step travels as data, not parsed back from the sentence
        end = status.read(tmp_path / "nan", tid)
        assert end["kind"] == "diverged" and end["step"] % TINY["eval_every"] == 0 and end["step"] > 0, end
        assert end["reason"].startswith("diverged: train loss") and f"at step {end['step']} " in end["reason"], end
