"""Cluster configs and tools: the AWS launcher config and both KubeRay manifests parse and carry the keys their
tools need, and the job's entrypoint uses only real `captcha-tune sweep` flags; `cluster.local` starts a 0-CPU
head and two 1-CPU worker nodes that a separate driver reaches through RAY_ADDRESS (3 alive nodes, 2 CPUs), a
killed worker node is marked dead, and `stop()` ends every process it recorded; `check_storage` passes on a
writable bucket of an S3 server on 127.0.0.1 from the driver and from every node, and fails in one line, naming
the place, for a missing bucket, for nodes that are refused access, and for a local file or unwritable path."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from cluster import local
from cluster.connect import HEAD_RESOURCE
from cluster.storage_check import StorageError, _error, _probe, check_storage

import psutil  # after `cluster.local`, which imports ray, whose vendored psutil this is

REPO = Path(__file__).resolve().parents[1]
BUCKET = "captcha-tune-test"


# ---- (a) configs ----

def sweep_flags() -> set[str]:
    """The flags the real `captcha-tune sweep` parser accepts."""
    import argparse

    from captcha_tune.commands import sweep

    sub = argparse.ArgumentParser().add_subparsers()
    sweep.register(sub)
    return {o for a in sub.choices["sweep"]._actions for o in a.option_strings}


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "cluster" / name).read_text())


def test_aws_launcher_config_has_the_required_keys():
    cfg = load("aws.yaml")
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers"):
        assert key in cfg, key
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and head["resources"].get("GPU", 0) == 0, "trials must not land on the head"
    assert head["resources"].get(HEAD_RESOURCE) == 1, "trial actors are pinned to the head"
    gpu_types = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert gpu_types and all(4 <= t["resources"]["GPU"] <= 8 and t["min_workers"] == 0 for t in gpu_types)
    setup = " ".join(cfg["setup_commands"])
    assert setup.index("torch") < setup.index("pip install ."), "torch is installed before the project"
    text = (REPO / "cluster" / "aws.yaml").read_text()
    assert "0.0.0.0/0" not in text and "aws_secret_access_key" not in text.lower()


def test_kuberay_manifests_have_the_required_keys():
    cluster = load("k8s/raycluster.yaml")
    job = load("k8s/rayjob.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
        assert json.loads(json.loads(spec["headGroupSpec"]["rayStartParams"]["resources"])) == {HEAD_RESOURCE: 1}
        worker = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["captcha-tune", "sweep"]
    flags = {a for a in argv if a.startswith("--")}
    assert flags <= sweep_flags(), flags - sweep_flags()
    assert argv[argv.index("--storage") + 1].startswith("s3://") and "--name" in flags
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        pods = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
        for container in (c for pod in pods for c in pod["template"]["spec"]["containers"]):
            assert container["envFrom"][0]["secretRef"]["name"], "credentials come from a Secret"
            assert not [e for e in container.get("env", []) if e["name"].startswith("AWS_SECRET")]


@pytest.mark.parametrize("name", ["aws.yaml", "k8s/raycluster.yaml", "k8s/rayjob.yaml"])
def test_every_key_has_a_comment_above_it(name):
    lines = (REPO / "cluster" / name).read_text().splitlines()
    keys = [i for i, line in enumerate(lines) if re.match(r"^\s*(- )?[\w~./-]+:( |$)", line)]
    bare = [lines[i].strip() for i in keys if not lines[i - 1].strip().startswith("#")]
    assert keys and not bare, bare


# ---- an S3 server on 127.0.0.1, and one that refuses everything ----

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
    """Environment for an S3-compatible (moto) server on 127.0.0.1 with one bucket; also set in os.environ."""
    import boto3
    from moto.server import ThreadedMotoServer

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


# ---- (c) storage from the driver alone ----

def test_storage_check_passes_on_a_writable_bucket_and_leaves_nothing(s3):
    import boto3

    assert check_storage(f"s3://{BUCKET}/runs") == ["the driver"]
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert not [k for k in keys if ".probe-" in k], keys


def test_storage_check_fails_fast_in_one_line_on_a_missing_bucket(s3):
    with pytest.raises(StorageError) as e:
        check_storage("s3://no-such-bucket/runs", timeout_s=10)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("storage s3://no-such-bucket/runs is not writable from the driver: ")
    assert "no-such-bucket" in msg.split(": ", 1)[1] and "credentials" in msg


def test_storage_check_fails_clearly_on_a_local_file_or_unwritable_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match=r"^storage .*/file is not writable from the driver: it is a file"):
        check_storage(tmp_path / "file")
    with pytest.raises(StorageError, match=r"^storage .*/file/runs is not writable from the driver: .*Not a directory"):
        check_storage(tmp_path / "file" / "runs")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    target = locked / "runs"
    if os.access(locked, os.W_OK):  # root writes anywhere; a folder under /proc it cannot create
        target = Path("/proc/captcha-tune-storage-check")
        if not Path("/proc").is_dir():
            pytest.skip("running as root without /proc: no unwritable local folder to try")
    with pytest.raises(StorageError) as e:
        check_storage(target)
    assert str(e.value).startswith(f"storage {target} is not writable from the driver: ") and "\n" not in str(e.value)


def test_a_folder_that_nodes_do_not_share_is_named_as_such(tmp_path):
    # what a node's probe returns when the driver's probe file is not there: a local folder on another machine
    failed = _probe(str(tmp_path / "runs"), "node-b", expect=".probe-written-by-the-driver")
    assert failed == ("shared", "the probe file the driver wrote is not visible there")
    assert not (tmp_path / "runs").exists(), "a failed probe leaves nothing behind"
    msg = str(_error(str(tmp_path / "runs"), "node 10.0.0.3 (1a2b3c4d)", *failed))
    assert msg.startswith(f"storage {tmp_path / 'runs'} is not shared with node 10.0.0.3 (1a2b3c4d): ") and "NFS" in msg


# ---- (b) a local multi-node cluster, and (c) storage seen from each of its nodes ----

@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    """A 0-CPU head and two 1-CPU worker nodes that see the S3 server; the GCS declares a lost node dead
    after ~5 missed 1-second health checks instead of Ray's default ~15 s."""
    state_dir = str(tmp_path_factory.mktemp("local-cluster"))
    env = {k: v for k, v in s3.items() if k.startswith("AWS_")}
    env |= {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
    state = local.start(workers=2, cpus_per_worker_node=1, head_cpus=0, state_dir=state_dir, env=env, timeout_s=150)
    yield dict(state, state_dir=state_dir)
    local.stop(state_dir)


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
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def driver_report(cluster, s3):
    """What a separate driver process, connected through RAY_ADDRESS, sees of the cluster and the storage."""
    env = {**os.environ, **cluster["env"]}
    args = [sys.executable, "-c", DRIVER, f"s3://{BUCKET}/runs", "s3://no-such-bucket/runs", s3["deny"]]
    out = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]), stderr=out.stderr)


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


def test_killed_node_is_marked_dead_and_stop_ends_every_recorded_process(cluster):
    state_dir = cluster["state_dir"]
    # 1) lose worker2: its processes are gone at once, and the GCS marks the node dead
    killed = local.kill_node(state_dir, "worker2")
    assert killed and not [p for p in killed if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    worker2 = next(n["node_id"] for n in cluster["nodes"] if n["name"] == "worker2")
    listed = local.nodes(cluster["env"], alive=["head", "worker1"], dead=["worker2"], timeout_s=60)
    assert [n["alive"] for n in listed if n["node_id"] == worker2] == [False]
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
