"""Cluster configs and the storage check from the driver: the AWS launcher config and both KubeRay manifests parse
and carry the keys their tools need, and the job's entrypoint uses only real `captcha-tune sweep` flags;
`check_storage` passes on a writable bucket of an S3 server on 127.0.0.1 and fails in one line, naming the place,
for a missing bucket and for a local file or unwritable path. The local multi-node cluster (`cluster.local`) and
the check from each of its nodes are tested in test_multinode.py, on the one cluster the suite starts."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from cluster.connect import HEAD_RESOURCE
from cluster.storage_check import StorageError, _error, _probe, check_storage
from conftest import BUCKET

REPO = Path(__file__).resolve().parents[1]


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
