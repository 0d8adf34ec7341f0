"""Shared fixtures: a small generated dataset (made once per session) and tiny training settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["RAY_ADDRESS"] = ""  # tests never join a stray cluster, even from a shell that exported one
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# A model and budget that learn something on 2 CPU cores within seconds.
TINY = dict(channels=8, max_steps=40, eval_every=10, warmup_steps=4, cosine_period=40, batch_size=32)


@pytest.fixture(scope="session")
def easy_data(tmp_path_factory):
    from trainable.data import generate

    return str(generate("easy", 2000, tmp_path_factory.mktemp("data") / "easy", seed=0, processes=2))


def cli(*args, timeout=600, env=None, check=True):
    """Run `captcha-tune ARGS` in a subprocess; returns CompletedProcess with text output."""
    proc = subprocess.run([sys.executable, "-m", "captcha_tune", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"captcha-tune {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# The prefix Ray puts on the output of its worker processes, which it echoes into the driver's stderr.
RAY_WORKER_LINE = re.compile(r"^\s*(\x1b\[[0-9;]*m)?\((\S+ )?pid=\d+")


def own_output(text: str) -> str:
    """`text` without the lines Ray echoes from worker processes: in a test that runs commands in-process on one
    Ray, an actor of an earlier command that is shut down can print its own traceback in a later command's output."""
    return "\n".join(line for line in text.splitlines() if not RAY_WORKER_LINE.match(line))


def png_files(items, folder) -> list:
    """Write (label, PNG bytes) items as folder/c0.png, c1.png, ...; returns the paths."""
    paths = []
    for i, (_, png) in enumerate(items):
        paths.append(folder / f"c{i}.png")
        paths[-1].write_bytes(png)
    return paths
