"""Shared fixtures: a small generated dataset (made once per session) and tiny training settings."""

from __future__ import annotations

import http.server
import logging
import os
import re
import subprocess
import sys
import threading
import time

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["RAY_ADDRESS"] = ""  # tests never join a stray cluster, even from a shell that exported one
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# TINY runs report every ~0.3 s of training: the Train controller collects reports at its poll (cluster/connect.py
# TRAIN_ENV, 0.5 s for real runs), so tests poll faster rather than wait on it
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")

# A model and budget that learn something on 2 CPU cores within seconds.
TINY = dict(channels=8, max_steps=40, eval_every=10, warmup_steps=4, cosine_period=40, batch_size=32)
FLAGS = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]  # TINY as command-line flags


@pytest.fixture(scope="session")
def easy_data(tmp_path_factory):
    from trainable.data import generate

    return str(generate("easy", 2000, tmp_path_factory.mktemp("data") / "easy", seed=0, processes=2))


@pytest.fixture(scope="session")
def exp(easy_data, tmp_path_factory):
    """One real 6-trial TPE + ASHA sweep (subprocess driver, TINY trials) that the results, export, retrain and
    convergence tests read; tests that write into it (retrain, export) use names of their own. 1-worker trials, two
    at a time: DDP in a trial is tested where it is the subject (test_train, test_sweep, test_sweep_resume)."""
    storage = tmp_path_factory.mktemp("exp")
    cli("sweep", "--storage", storage, "--name", "s", "--data", easy_data, "--num-samples", 6, "--workers-per-trial", 1, *FLAGS)
    return storage / "s"


def cli(*args, timeout=600, env=None, check=True):
    """Run `captcha-tune ARGS` in a subprocess; returns CompletedProcess with text output."""
    proc = subprocess.run([sys.executable, "-m", "captcha_tune", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"captcha-tune {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def module_ray():
    """One embedded Ray for a module whose commands run in this process (`main`): it saves each command its
    interpreter start and its own Ray (~10 s on 2 cores)."""
    import ray

    from cluster.connect import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def main(*args) -> None:
    """`captcha-tune ARGS` in this process (on `module_ray`'s Ray for a command that needs one)."""
    from captcha_tune.cli import main

    main(list(map(str, args)))


def printed(capsys, last: str, wait_s: float = 20) -> str:
    """What this process printed, up to `last`: the lines of Train's controller and workers reach it through Ray's log
    forwarding, which may deliver them after the command returned."""
    out, deadline = "", time.time() + wait_s
    while True:
        o = capsys.readouterr()
        out += o.out + o.err
        if last in out or time.time() > deadline:
            return out
        time.sleep(0.2)


def cli_error(capsys, *args) -> tuple[int, str]:
    """Run `captcha-tune ARGS` in this process for a command that must stop with a user error before it runs
    anything: before Ray starts, or on `module_ray`'s Ray before training (the same `main` as the command line,
    without ~4 s of interpreter start-up): (exit code, stderr). A command that runs instead of stopping fails the test."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(*args)
    return e.value.code, capsys.readouterr().err


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


# ---- an S3 server on 127.0.0.1, and one that refuses everything (the cluster and multinode tests) ----

BUCKET = "captcha-tune-test"


class _Deny(http.server.BaseHTTPRequestHandler):
    """Answers every S3 request with 403 AccessDenied, like a bucket the node's credentials may not touch."""

    def _deny(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _deny

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def s3():
    """Environment for an S3-compatible (moto) server on 127.0.0.1 with one bucket (BUCKET); also set in os.environ.
    `deny`: the URL of a server that refuses every request."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    deny = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Deny)
    threading.Thread(target=deny.serve_forever, daemon=True).start()
    host, port = server.get_host_and_port()
    env = dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL=f"http://{host}:{port}")
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        yield dict(env, deny=f"http://127.0.0.1:{deny.server_address[1]}")
    deny.shutdown()
    server.stop()
