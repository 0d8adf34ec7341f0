"""The suite's one local multi-node cluster (`cluster.local`: a 0-CPU head and two 1-CPU worker nodes), in the order
its tests need it. First the cluster as a separate driver sees it through RAY_ADDRESS (3 alive nodes, 2 CPUs, the
head alone pinning trial actors), and `check_storage` from every node, naming the node refused access. A bucket that
does not exist, or an S3 endpoint that answers nothing, makes `captcha-tune sweep` exit 2 with one line within a
minute. Then one sweep on it (two 1-worker trials, one after the other) with all its storage in an S3 bucket (a moto
server on 127.0.0.1), which loses the node its second trial trains on at that trial's first checkpoint: every trial
trains on a worker node, never on the head; the sweep state, every trial's checkpoints and the experiment state land
in the bucket; `results` and `export`, run later from a process with no Ray cluster, read it back from there. Losing
the node costs that trial only a restart from its last checkpoint on the other node: the sweep finishes, the trial
completes with start_step > 0 on the surviving node, and the trial that had finished before is kept (the trial's own
actor and its Train controller were on the head, which the test checks: a trial whose actor is lost is not retried).
Last, a killed worker node is marked dead and `stop()` ends every process the cluster recorded."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch

from cluster import local
from conftest import BUCKET, TINY, cli, main

REPO = Path(__file__).resolve().parents[1]
EXP = f"s3://{BUCKET}/exp"
LOSS_STEPS = 100  # the node-loss sweep's budget: long enough to kill a node after its first checkpoint


def flags(**overrides) -> list[str]:
    return [x for k, v in {**TINY, **overrides}.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def keys(prefix: str) -> list[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def checkpoint_state(key: str) -> dict:
    import boto3

    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)


# A short-lived driver that lists the cluster's live actors: (class name, node id).
ACTORS = r"""
import json, os, ray
from ray.util.state import list_actors
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
print("ACTORS", json.dumps([(a.class_name, a.node_id) for a in list_actors(limit=1000) if a.state == "ALIVE"]))
"""


def actors(cluster) -> set[tuple[str, str]]:
    """(class name, node name) of every live actor of the cluster."""
    out = subprocess.run([sys.executable, "-c", ACTORS], env={**os.environ, **cluster["env"]}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    names = {i: n for n, i in cluster["ids"].items()}
    # Ray may print its own lines (e.g. "raylet has lagging heartbeats") around ours: take the marked one.
    line = next(x for x in out.stdout.splitlines() if x.startswith("ACTORS "))
    return {(c, names.get(n, n)) for c, n in json.loads(line.removeprefix("ACTORS "))}


@pytest.fixture(scope="module")
def data(s3, easy_data):
    """The session's small easy dataset, uploaded to the bucket for every node to read."""
    from trainable import storage

    uri = f"s3://{BUCKET}/data"
    storage.upload(easy_data, uri)
    return uri


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    """A 0-CPU head and two 1-CPU worker nodes that see the S3 server; a lost node is declared dead after ~5
    missed 1-second health checks instead of Ray's default ~15 s."""
    state_dir = str(tmp_path_factory.mktemp("local-cluster"))
    env = {k: v for k, v in s3.items() if k.startswith("AWS_")}
    env |= {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
    state = local.start(workers=2, cpus_per_worker_node=1, head_cpus=0, state_dir=state_dir, env=env, timeout_s=150)
    yield dict(state, state_dir=state_dir, ids={n["name"]: n["node_id"] for n in state["nodes"]})
    local.stop(state_dir)  # a no-op after the last test, which stops it itself


# ---- the cluster as a driver sees it, and the storage check from each of its nodes ----

DRIVER = r"""
import json, sys
import ray
from cluster.connect import HEAD_RESOURCE, init_ray, on_head
from cluster.storage_check import StorageError, check_storage

good, missing, deny = sys.argv[1:4]

def error(path):
    try:
        check_storage(path, timeout_s=30)
    except StorageError as e:
        return str(e)

init_ray()  # RAY_ADDRESS (and RAY_AUTH_MODE) from the environment
alive = [n for n in ray.nodes() if n["Alive"]]
out = dict(alive=len(alive), cpus=ray.cluster_resources().get("CPU", 0),
           names=sorted(k for n in alive for k in n["Resources"] if k in ("node:head", "node:worker1", "node:worker2")),
           checked=check_storage(good), missing=error(missing),
           pinned=[k for n in alive for k in ("node:head", "node:worker1", "node:worker2") if k in n["Resources"] and HEAD_RESOURCE in n["Resources"]],
           on_head=on_head())
ray.shutdown()
# the driver keeps the good endpoint; tasks on the nodes get one that refuses every request
ray.init(logging_level="ERROR", log_to_driver=False, runtime_env={"env_vars": {"AWS_ENDPOINT_URL": deny}})
out["denied"] = error(good)
ray.shutdown()
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
out["plain_on_head"] = on_head()  # a Ray started without the head's resource: no pinning, one warning line
print("REPORT", json.dumps(out))
"""


@pytest.fixture(scope="module")
def driver_report(cluster, s3):
    """What a separate driver process, connected through RAY_ADDRESS, sees of the cluster and the storage."""
    env = {**os.environ, **cluster["env"]}
    args = [sys.executable, "-c", DRIVER, f"s3://{BUCKET}/runs", "s3://no-such-bucket/runs", s3["deny"]]
    out = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("REPORT "))
    return dict(json.loads(line.removeprefix("REPORT ")), stderr=out.stderr)


def test_local_cluster_has_a_cpu_less_head_and_two_worker_nodes(cluster, driver_report):
    assert cluster["address"].startswith("127.0.0.1:") and cluster["env"]["RAY_ADDRESS"] == cluster["address"]
    assert [n["name"] for n in cluster["nodes"]] == ["head", "worker1", "worker2"]
    assert driver_report["alive"] == 3 and driver_report["cpus"] == 2
    assert driver_report["names"] == ["node:head", "node:worker1", "node:worker2"]
    # the head alone declares the resource that pins a trial's actor to it; elsewhere the sweep warns and runs unpinned
    assert driver_report["pinned"] == ["node:head"] and driver_report["on_head"] == {"captcha_tune_head": 0.001}
    assert driver_report["plain_on_head"] == {} and driver_report["stderr"].count("no node declares the captcha_tune_head") == 1


def test_storage_check_runs_on_every_node_and_names_the_one_that_fails(driver_report):
    checked = driver_report["checked"]
    assert checked[0] == "the driver" and len(checked) == 4 and all(c.startswith("node ") for c in checked[1:])
    assert driver_report["missing"].startswith("storage s3://no-such-bucket/runs is not writable from the driver: ")
    denied = driver_report["denied"]
    assert denied.startswith(f"storage s3://{BUCKET}/runs is not writable from node ") and "\n" not in denied
    assert "ACCESS_DENIED" in denied.upper().replace(" ", "_") and denied.endswith("credentials in the environment")


# ---- sweeps on it, with their storage in the bucket ----

def test_unreachable_storage_fails_the_sweep_fast_in_one_line(s3, data):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        for storage_uri, env in [("s3://no-such-bucket/x", {}),
                                 (f"{EXP}-unreachable", {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed.getsockname()[1]}"})]:
            t0 = time.monotonic()
            out = cli("sweep", "--storage", storage_uri, "--name", "f", "--data", data, "--num-samples", 1,
                      "--workers-per-trial", 1, *flags(), env=env, check=False, timeout=120)
            took = time.monotonic() - t0
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 2 and len(lines) == 1, (out.returncode, out.stderr[-2000:])
            assert lines[0].startswith(f"error: storage {storage_uri}/f ") and " the driver: " in lines[0], lines[0]
            assert took < 60, f"{storage_uri}: failed after {took:.0f} s"
    finally:
        closed.close()


@pytest.fixture(scope="module")
def sweep(cluster, data):
    """A sweep of two 1-worker trials, one after the other, driven from a separate process that joins the cluster,
    with all its storage in the bucket; at the second trial's first registered checkpoint, the node it trains on goes.
    The trial's own actor and its Train controller (no CPU each) must outlive the node: the sweep does not retry a
    trial whose actor is lost (tune.FailureConfig(max_failures=0)). The trial asks for a sliver of the head's own
    resource, and Train places the controller beside it."""
    name = "mn"
    args = [sys.executable, "-m", "captcha_tune", "sweep", "--storage", EXP, "--name", name, "--data", data,
            "--num-samples", 2, "--max-concurrent", 1, "--workers-per-trial", 1, "--scheduler", "none",
            *flags(max_steps=LOSS_STEPS, cosine_period=LOSS_STEPS)]
    log = open(os.path.join(cluster["state_dir"], "mn-sweep.log"), "w")
    proc = subprocess.Popen(list(map(str, args)), stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **cluster["env"]})
    try:
        # 1) wait for the second trial's first checkpoint that Train has registered (its checkpoint manager's
        #    snapshot names it; one only uploaded would not be resumed from); its metrics say where it trains
        t0, seen, killed = time.monotonic(), {}, None  # seen: trial id -> its snapshot key, in order of appearance
        while killed is None:
            assert proc.poll() is None, f"the sweep ended before a node was lost; see {log.name}"
            assert time.monotonic() - t0 < 240, "the second trial never checkpointed"
            for k in keys(f"exp/{name}/train/"):
                if k.endswith("/checkpoint_manager_snapshot.json"):
                    seen.setdefault(k.split("/")[3], k)
            if len(seen) == 2:
                first_trial, victim = seen
                ckpts = [k for k in keys(f"exp/{name}/train/{victim}/") if k.endswith("/checkpoint.pt")]
                state = checkpoint_state(ckpts[0])
                killed = next(n for n, i in cluster["ids"].items() if i == state["metrics"]["node_id"])
                assert killed != "head"
                local.kill_node(cluster["state_dir"], killed)
                print(f"killed {killed} at step {state['step']} of trial {victim}, {time.monotonic() - t0:.0f} s in")
            time.sleep(0.3)
        live = actors(cluster)
        # 2) the sweep goes on and finishes
        assert proc.wait(timeout=300) == 0, f"the sweep failed after losing {killed}; see {log.name}"
        print(f"sweep {name}: {time.monotonic() - t0:.0f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    return dict(exp=f"{EXP}/{name}", killed=killed, victim=victim, first_trial=first_trial, live_after_kill=live)


def test_trials_run_on_worker_nodes_and_everything_lands_in_the_bucket(sweep, cluster):
    from results.experiment import load

    trials, history = load(sweep["exp"])
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials["status"].tolist()
    workers = {cluster["ids"]["worker1"], cluster["ids"]["worker2"]}
    assert history["node_id"].notna().all() and set(history["node_id"]) <= workers, set(history["node_id"])
    assert history["checkpoint_path"].str.startswith(f"s3://{BUCKET}/exp/mn/train/").all()

    found = keys("exp/mn/")
    assert "exp/mn/sweep.json" in found
    assert [k for k in found if re.fullmatch(r"exp/mn/experiment_state-.*\.json", k)], "Tune's experiment state"
    for tid in trials["trial_id"]:
        ckpts = [k for k in found if re.fullmatch(rf"exp/mn/train/{tid}/checkpoint_[^/]+/checkpoint\.pt", k)]
        assert ckpts, f"trial {tid} has no checkpoint in the bucket"


def test_results_and_export_read_the_bucket_without_a_cluster(sweep, easy_data, tmp_path, capsys):
    sweep = sweep["exp"]
    # in this process, whose environment has no RAY_ADDRESS (conftest) and no Ray started: it sees the bucket
    # (the s3 fixture's environment) and nothing of the cluster
    capsys.readouterr()
    main("results", sweep, "--out", tmp_path / "report")
    out = capsys.readouterr().out
    assert "leaderboard" in out and f"best checkpoint: s3://{BUCKET}/exp/mn/train/" in out
    assert (tmp_path / "report" / "report.md").exists() and len(pd.read_parquet(tmp_path / "report" / "history.parquet"))
    assert "exp/mn/results/trials.parquet" in keys("exp/mn/results/")

    model = tmp_path / "model.pt2"
    main("export", sweep, "--out", model)
    said = capsys.readouterr().out
    assert model.exists() and f"chose s3://{BUCKET}/exp/mn/train/" in said
    from results.checkpoints import best
    from results.predict import load_predictor, read_images

    ckpt, origin = best(sweep)
    exported = load_predictor(model)
    assert exported.origin["origin"]["trial_id"] == origin["trial_id"] and exported.origin["checkpoint"] == ckpt
    images = [r[1] for r in read_images([os.path.join(easy_data, "val-00000.parquet")])[:16]]
    assert exported.predict(images) == load_predictor(ckpt).predict(images)


def test_losing_a_node_costs_a_trial_only_a_restart_from_its_checkpoint(sweep, cluster):
    from results.experiment import load
    from trainable import storage

    exp, killed, victim, first_trial = sweep["exp"], sweep["killed"], sweep["victim"], sweep["first_trial"]
    live = sweep["live_after_kill"]  # the trials' own actors and Train controllers were on the head
    assert {n for c, n in live if c in ("ImplicitFunc", "TrainController")} == {"head"}, live
    trials, history = load(exp)
    assert trials["status"].tolist() == ["completed", "completed"] and (trials["steps_run"] == LOSS_STEPS).all()
    survivor = cluster["ids"]["worker2" if killed == "worker1" else "worker1"]
    hv = history[history["trial_id"] == victim]
    assert cluster["ids"][killed] in set(hv["node_id"]), "the victim trained on the lost node first"
    last = hv.iloc[-1]
    assert last["start_step"] > 0 and last["node_id"] == survivor, last.to_dict()
    hf = history[history["trial_id"] == first_trial]
    assert len(hf) == LOSS_STEPS // TINY["eval_every"] and hf["step"].max() == LOSS_STEPS, "the finished trial is kept"
    # no scheduler stops them at max_steps, so each Train run wrote its summary, with URIs, to the bucket
    for tid in (first_trial, victim):
        summary = json.loads(storage.read_text(f"{exp}/train/{tid}/summary.json"))
        assert summary["run_path"] == f"{exp}/train/{tid}" and summary["best_checkpoint"].startswith(f"{exp}/train/{tid}/checkpoint_")


def test_killed_node_is_marked_dead_and_stop_ends_every_recorded_process(cluster):
    """Last in the module: it ends the cluster."""
    state_dir = cluster["state_dir"]
    # 1) lose a worker node that is still alive (the node-loss test took the other): its processes are gone at once,
    #    and the GCS marks the node dead
    alive = [n["name"] for n in local.nodes(cluster["env"]) if n["alive"] and n["name"] != "head"]
    assert alive, "no worker node left alive"
    victim, others = alive[-1], ["head", *alive[:-1]]
    killed = local.kill_node(state_dir, victim)
    assert killed and not [p for p in killed if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    listed = local.nodes(cluster["env"], alive=others, dead=[victim], timeout_s=60)
    assert [n["alive"] for n in listed if n["node_id"] == cluster["ids"][victim]] == [False]
    # 2) stop: every recorded process (same PID and start time) is gone, and so is every process of the sessions
    state = json.loads((Path(state_dir) / local.STATE_FILE).read_text())
    recorded = [(pid, started) for n in state["nodes"] for pid, started in n["pids"]]
    assert len(recorded) >= 3 * 3
    local.stop(state_dir)

    def running(pid, started):
        try:
            p = psutil.Process(pid)
            return abs(p.create_time() - started) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    assert not [pid for pid, started in recorded if running(pid, started)]
    assert not [p for n in state["nodes"] for p in local._session_processes(n["sid"])]
    assert not (Path(state_dir) / local.STATE_FILE).exists() and not os.path.exists(state["temp_dir"])
