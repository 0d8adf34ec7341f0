"""A killed driver (SIGKILL, as a reboot would) and Ctrl-C both leave a resumable sweep: kill the driver after its
first finished trial, re-run the same command, interrupt that one at its trial's first checkpoint, re-run again; no
finished trial is lost or rerun, the interrupted trial resumes from its checkpoint, and the total is what was asked.
One 2-trial sweep takes both signals, so the suite pays for one sweep.

Drivers run as subprocesses (each with its own embedded Ray), one at a time."""

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import TINY
from results.experiment import load


def test_killed_then_interrupted_driver_resumes(easy_data, tmp_path):
    flags = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    cmd = [sys.executable, "-m", "captcha_tune", "sweep", "--storage", str(tmp_path), "--name", "r", "--data", easy_data,
           "--num-samples", "2", "--scheduler", "none", *flags]
    exp = tmp_path / "r"
    summaries = lambda: glob.glob(str(exp / "train" / "*" / "summary.json"))  # noqa: E731

    def checkpointed_since(t0):
        """A trial without a summary whose checkpoint Train registered after t0 (in this driver, not an earlier one)."""
        done = {os.path.dirname(p) for p in summaries()}
        return [p for p in glob.glob(str(exp / "train" / "*" / "checkpoint_manager_snapshot.json"))
                if os.path.dirname(p) not in done and os.path.getmtime(p) > t0 and "checkpoint_" in Path(p).read_text()]

    kept = {}
    for sig, ready in ((signal.SIGKILL, lambda t0: len(summaries()) >= 1), (signal.SIGINT, checkpointed_since)):
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while not ready(t0):
            assert proc.poll() is None and time.time() < t0 + 300, f"never ready for {sig.name}"
            time.sleep(0.5)
        proc.send_signal(sig)
        proc.wait(timeout=120)
        for path, mtime in kept.items():  # what finished before the last signal was kept, not rerun
            assert os.path.getmtime(path) == mtime, f"{path} was rewritten after {sig.name}"
        kept = {p: os.path.getmtime(p) for p in summaries()}
        before, _ = load(exp)
        assert (before["status"] != "completed").any() or len(before) < 2, f"the sweep ended before {sig.name}"
        done_before = set(before.loc[before["status"] == "completed", "trial_id"])
    assert len(kept) == 1, "the interrupted trial had not finished"

    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    after, history = load(exp)
    assert len(after) == 2 and (after["status"] == "completed").all(), after[["trial_id", "status"]]
    for path, mtime in kept.items():
        assert os.path.getmtime(path) == mtime
    assert done_before <= set(after["trial_id"])
    assert history.groupby("trial_id")["step"].max().eq(TINY["max_steps"]).all()
    (interrupted,) = set(after["trial_id"]) - done_before
    assert history.loc[history["trial_id"] == interrupted, "start_step"].max() > 0, "resumed from its checkpoint, not from 0"
