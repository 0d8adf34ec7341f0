"""Two captcha-tune sweeps started together on one 2-core machine both finish: each embedded Ray tells its own
processes which Ray is theirs (cluster/connect.py), so Train's placement-group cleaner of one never meets the
other ("Found multiple active Ray instances") and no trial waits past the worker-group start timeout."""

import subprocess
import sys

from conftest import TINY
from results.experiment import load


def test_two_sweeps_side_by_side_both_finish(easy_data, tmp_path):
    flags = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    procs = {name: subprocess.Popen([sys.executable, "-m", "captcha_tune", "sweep", "--storage", str(tmp_path), "--name", name,
                                     "--data", easy_data, "--num-samples", "4", "--bound", "head=multilabel", "--seed", str(seed), *flags],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for seed, name in enumerate(("a", "b"))}
    outputs = {name: p.communicate(timeout=900)[0] for name, p in procs.items()}
    stops = 0
    for name, p in procs.items():
        assert p.returncode == 0, outputs[name][-3000:]
        assert "multiple active Ray instances" not in outputs[name]
        trials, _ = load(tmp_path / name)
        assert len(trials) == 4, trials
        assert not trials["status"].isin(("errored", "diverged")).any(), trials[["trial_id", "status"]]  # none timed out
        stops += (trials["status"] == "asha").sum()
    assert stops >= 1, "ASHA stopped no trial in either sweep"
