"""A captcha-tune sweep and a `train` started together on one 2-core machine both finish: each embedded Ray tells
its own processes which Ray is theirs (cluster/connect.py), so Train's placement-group cleaner of one never meets the
other ("Found multiple active Ray instances") and no trial waits past the worker-group start timeout. The sweep's
ASHA stops (a stopped trial's cleaner at work) happen while the other Ray runs."""

import json
import subprocess
import sys

from conftest import FLAGS
from results.experiment import load


def test_a_sweep_and_a_train_side_by_side_both_finish(easy_data, tmp_path):
    commands = {"sweep": ["sweep", "--storage", tmp_path, "--name", "a", "--data", easy_data, "--num-samples", 4, "--workers-per-trial", 1,
                          "--bound", "head=multilabel"],
                "train": ["train", "--storage", tmp_path, "--name", "b", "--data-dir", easy_data, "--workers", 2]}
    procs = {name: subprocess.Popen([sys.executable, "-m", "captcha_tune", *map(str, args), *FLAGS], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for name, args in commands.items()}
    outputs = {name: p.communicate(timeout=900)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outputs[name][-3000:]
        assert "multiple active Ray instances" not in outputs[name]
    trials, _ = load(tmp_path / "a")
    assert len(trials) == 4, trials
    assert not trials["status"].isin(("errored", "diverged")).any(), trials[["trial_id", "status"]]  # none timed out
    assert (trials["status"] == "asha").sum() >= 1, "ASHA stopped no trial"
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["final_metrics"]["step"] == 40 and summary["final_metrics"]["world_size"] == 2
