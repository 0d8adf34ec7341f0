"""Ctrl-C, or a killed driver (SIGKILL, as a reboot would), leaves a resumable sweep: signal the driver after its
first finished trial, re-run the same command, and no finished trial is lost or rerun while the total is what was asked.

Drivers run as subprocesses (each with its own embedded Ray), one at a time."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import TINY
from results.experiment import load


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupt_then_resume(easy_data, tmp_path, sig):
    flags = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    cmd = [sys.executable, "-m", "captcha_tune", "sweep", "--storage", str(tmp_path), "--name", "r", "--data", easy_data,
           "--num-samples", "3", "--scheduler", "none", *flags]
    exp = tmp_path / "r"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not glob.glob(str(exp / "train" / "*" / "summary.json")):
        assert proc.poll() is None and time.time() < deadline, "first trial never finished"
        time.sleep(1)
    finished = {p: os.path.getmtime(p) for p in glob.glob(str(exp / "train" / "*" / "summary.json"))}
    proc.send_signal(sig)
    proc.wait(timeout=120)
    before, _ = load(exp)
    assert (before["status"] != "completed").any() or len(before) < 3, "interrupted before the sweep ended"

    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    after, history = load(exp)
    assert len(after) == 3 and (after["status"] == "completed").all()
    for path, mtime in finished.items():  # finished trials were kept, not rerun
        assert os.path.getmtime(path) == mtime
    done_before = before[before["status"] == "completed"]["trial_id"]
    assert set(done_before) <= set(after["trial_id"])
    assert history.groupby("trial_id")["step"].max().eq(TINY["max_steps"]).all()
