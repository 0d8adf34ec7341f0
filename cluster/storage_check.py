"""Check, before any trial starts, that the run's storage works from the driver and from every alive Ray node.

A probe file is written, read back and deleted under the storage path, first by the driver and then by a tiny
task pinned to each node; each node also looks for the driver's probe, which catches a local folder that is not
shared between machines. The first failure becomes one line naming the path, the place and the reason.

S3 endpoints: pyarrow's `FileSystem.from_uri` reads AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (and the usual
AWS_* credentials and region) from the environment of the process that opens the path, so an S3-compatible
server needs no code here; the nodes see the environment their `ray start` or the job's runtime_env gave them.
"""

from __future__ import annotations

import threading
import uuid

import pyarrow.fs as pafs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from trainable import storage
from trainable.errors import UserError

PROBE_TIMEOUT_S = 30.0
_FILE = "it is a file, not a folder"

# What a failed step means, as the middle of "storage PATH <...> PLACE: REASON".
_FAILED = {
    "write": "is not writable from",
    "read": "does not read back what was written from",
    "shared": "is not shared with",
    "delete": "does not let files be deleted from",
    "answer": "did not answer in time from",
}


class StorageError(UserError):
    """Storage that the driver or a node cannot write, read back or delete."""


def _one_line(e) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _probe(path: str, name: str, keep: bool = False, expect: str | None = None) -> tuple[str, str] | None:
    """With `expect`, first look for that file (the driver's probe); then write, read back and (unless keep)
    delete `path`/.probe-NAME. Return None, or (step, reason) for the first step that failed."""
    step = "write"
    try:
        fs, root = pafs.FileSystem.from_uri(path)
        if fs.get_file_info(root).type == pafs.FileType.File:
            return step, _FILE
        if expect is not None and fs.get_file_info(f"{root}/{expect}").type != pafs.FileType.File:
            return "shared", "the probe file the driver wrote is not visible there"
        fs.create_dir(root, recursive=True)
        probe, data = f"{root}/.probe-{name}", f"captcha-tune storage probe {name}\n".encode()
        with fs.open_output_stream(probe) as f:
            f.write(data)
        step = "read"
        with fs.open_input_stream(probe) as f:
            got = f.read()
        if got != data:
            return step, f"wrote {len(data)} bytes, read back {len(got)} different ones"
        if not keep:
            step = "delete"
            fs.delete_file(probe)
    except Exception as e:  # every storage failure, whatever its type, becomes the one-line reason
        return step, _one_line(e)
    return None


def _delete(path: str, name: str) -> tuple[str, str] | None:
    try:
        fs, root = pafs.FileSystem.from_uri(path)
        fs.delete_file(f"{root}/.probe-{name}")
    except Exception as e:  # as in _probe
        return "delete", _one_line(e)
    return None


def _within(timeout_s: float, fn, *args) -> tuple[str, str] | None:
    """fn(*args) in a daemon thread, so that a storage call that hangs cannot hold the driver past timeout_s."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=fn(*args)), daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return "answer", f"no answer within {timeout_s:g} s"
    return box["result"]


def _error(path: str, place: str, step: str, reason: str) -> StorageError:
    if reason == _FILE:
        hint = "give a folder or a URI"
    elif step == "shared":
        hint = "multi-node runs need shared storage: s3://, gs:// or an NFS path mounted alike on every node"
    elif storage.is_uri(path):
        hint = "check the bucket and the credentials in the environment"
    else:
        hint = "check that this user can create and write the folder"
    return StorageError(f"storage {path} {_FAILED[step]} {place}: {reason.rstrip('.')}; {hint}")


def _check_nodes(path: str, token: str, timeout_s: float) -> list[str]:
    """Run the probe on every alive node at once (0 CPUs: it runs even on a full node or a 0-CPU head)."""
    task = ray.remote(num_cpus=0, max_retries=0)(_probe)
    places, refs = {}, []
    for node in (n for n in ray.nodes() if n["Alive"]):
        strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
        ref = task.options(scheduling_strategy=strategy).remote(
            path, f"{token}-{node['NodeID'][:12]}", expect=f".probe-{token}-driver")
        places[ref] = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
        refs.append(ref)
    _, late = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for ref in late:
        ray.cancel(ref, force=True)
    if late:
        raise _error(path, places[late[0]], "answer", f"the probe task did not finish within {timeout_s:g} s")
    for ref in refs:
        try:
            failed = ray.get(ref)
        except ray.exceptions.RayError as e:
            failed = "answer", f"the probe task failed: {_one_line(str(e).strip().splitlines()[-1])}"
        if failed:
            raise _error(path, places[ref], *failed)
    return [places[ref] for ref in refs]


def check_storage(path_or_uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> list[str]:
    """Probe the storage from the driver and, when Ray is initialized, from every alive node; return the places
    checked ("the driver", "node IP (ID)", ...) or raise StorageError with one line saying what failed where."""
    path = storage.normalize(path_or_uri)
    token = uuid.uuid4().hex[:12]
    failed = _within(timeout_s, _probe, path, f"{token}-driver", True)
    if failed:
        raise _error(path, "the driver", *failed)
    try:
        nodes = _check_nodes(path, token, timeout_s) if ray.is_initialized() else []
    finally:
        failed = _within(timeout_s, _delete, path, f"{token}-driver")
    if failed:
        raise _error(path, "the driver", *failed)
    return ["the driver", *nodes]
