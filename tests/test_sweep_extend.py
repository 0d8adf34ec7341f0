"""What a sweep tells its searcher, on real Ray through the CLI (each driver a subprocess with its own embedded Ray):
a diverged trial (peak_lr 1e29: 5-10 still trains the tiny model) reaches the Optuna study as the worst value, not FAIL, with no traceback in the console; a finished
sweep re-run with a larger --num-samples continues with its history, and other changed settings are refused in one line."""

import glob
import os

import optuna

from conftest import TINY, cli
from results.experiment import load

FLAGS = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def study(exp, name):
    return optuna.load_study(study_name=f"captcha-tune-{name}", storage=f"sqlite:///{exp}/optuna.db")


def test_diverged_trials_are_the_worst_value_without_traceback(easy_data, tmp_path):
    proc = cli("sweep", "--storage", tmp_path, "--name", "nan", "--data", easy_data, "--num-samples", 2, "--scheduler", "none",
               "--bound", "peak_lr=1e29:1e30", *FLAGS, check=False)
    assert "2 of 2 trials errored" in proc.stderr and "diverged" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-5000:]
    trials = study(tmp_path / "nan", "nan").trials
    assert [(t.state.name, t.value) for t in trials] == [("COMPLETE", 0.0)] * 2


def test_extend_a_finished_sweep(easy_data, tmp_path):
    base = ["sweep", "--storage", tmp_path, "--name", "x", "--data", easy_data, "--scheduler", "none", *FLAGS]
    cli(*base, "--num-samples", 2)
    exp = tmp_path / "x"
    finished = {p: os.path.getmtime(p) for p in glob.glob(str(exp / "train" / "*" / "summary.json"))}
    assert len(finished) == 2

    for flags, msg in [(["--num-samples", 1], "can only grow"), (["--num-samples", 3, "--seed", 1], "--seed 0, not 1"),
                       (["--num-samples", 3, "--bound", "peak_lr=1e-4:1e-3"], "another search space (peak_lr")]:
        proc = cli(*base, *flags, check=False, timeout=120)
        assert proc.returncode != 0 and msg in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]

    proc = cli(*base, "--num-samples", 3)
    assert "extending" in proc.stdout, proc.stdout[-3000:]
    trials, _ = load(exp)
    assert len(trials) == 3 and (trials["status"] == "completed").all()
    for path, mtime in finished.items():  # the first two were kept, not rerun
        assert os.path.getmtime(path) == mtime
    assert len(study(exp, "x").trials) == 3
