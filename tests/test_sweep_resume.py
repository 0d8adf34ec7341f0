"""A killed driver (SIGKILL, as a reboot would) and Ctrl-C both leave a resumable sweep: kill the driver after its
first finished trial, re-run the same command, interrupt that one after its second, re-run again; no finished trial
is lost or rerun and the total is what was asked. One sweep takes both signals, so the suite pays for one sweep.

Drivers run as subprocesses (each with its own embedded Ray), one at a time."""

import glob
import os
import signal
import subprocess
import sys
import time

from conftest import TINY
from results.experiment import load


def test_killed_then_interrupted_driver_resumes(easy_data, tmp_path):
    flags = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    cmd = [sys.executable, "-m", "captcha_tune", "sweep", "--storage", str(tmp_path), "--name", "r", "--data", easy_data,
           "--num-samples", "3", "--scheduler", "none", *flags]
    exp = tmp_path / "r"
    summaries = lambda: glob.glob(str(exp / "train" / "*" / "summary.json"))  # noqa: E731
    kept = {}
    for sig, finished in ((signal.SIGKILL, 1), (signal.SIGINT, 2)):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 300
        while len(summaries()) < finished:
            assert proc.poll() is None and time.time() < deadline, f"trial {finished} never finished"
            time.sleep(1)
        proc.send_signal(sig)
        proc.wait(timeout=120)
        for path, mtime in kept.items():  # what finished before the last signal was kept, not rerun
            assert os.path.getmtime(path) == mtime, f"{path} was rewritten after {sig.name}"
        kept = {p: os.path.getmtime(p) for p in summaries()}
        before, _ = load(exp)
        assert (before["status"] != "completed").any() or len(before) < 3, f"the sweep ended before {sig.name}"
        done_before = set(before.loc[before["status"] == "completed", "trial_id"])

    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    after, history = load(exp)
    assert len(after) == 3 and (after["status"] == "completed").all(), after[["trial_id", "status"]]
    for path, mtime in kept.items():
        assert os.path.getmtime(path) == mtime
    assert done_before <= set(after["trial_id"])
    assert history.groupby("trial_id")["step"].max().eq(TINY["max_steps"]).all()
