"""A local multi-node Ray cluster on one machine, for development and tests.

Each node is its own `ray start` (its own raylet, CPU count and custom resource `node:<name>`; the head also
declares `captcha_tune_head`, as a real cluster's head should), started in a new session so that every process it
creates, and every worker its raylet forks later, carries that session id. The state file records each node's
session id and the processes found in it; `stop()` and `kill_node()` signal exactly those processes. Nothing here
calls `ray stop`, which would kill every Ray process on the machine, other tests' embedded Ray included. The cluster
keeps its own Ray temp dir, so a plain `ray.init()` elsewhere on the machine neither finds nor joins it: only
drivers given RAY_ADDRESS (and RAY_AUTH_MODE=token) do.

    eval "$(python -m cluster.local start --workers 2)"   # exports RAY_ADDRESS and RAY_AUTH_MODE
    python -m cluster.local kill worker1      # lose a node
    python -m cluster.local stop
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import ray  # noqa: F401  (ray[default] ships psutil under ray/thirdparty_files and puts it on sys.path)

from cluster.connect import HEAD_RESOURCE
from trainable.errors import UserError

DEFAULT_STATE_DIR = os.path.join(tempfile.gettempdir(), "captcha-tune-local-cluster")
STATE_FILE = "cluster.json"
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 3.0
OBJECT_STORE_MB = 200

# A short-lived driver that polls ray.nodes() until the wanted nodes are alive (and the unwanted ones are not).
_NODES_SCRIPT = r"""
import json, os, sys, time
import ray
alive, dead, timeout_s = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + timeout_s
while True:
    nodes = [dict(node_id=n["NodeID"], alive=n["Alive"], ip=n["NodeManagerAddress"], resources=n["Resources"],
                  name=next((k[5:] for k in n["Resources"] if k.startswith("node:")
                             and k not in ("node:__internal_head__", "node:" + n["NodeManagerAddress"])), None))
             for n in ray.nodes()]
    up = {n["name"] for n in nodes if n["alive"]}
    done = set(alive) <= up and not set(dead) & up
    if done or time.monotonic() > deadline:
        break
    time.sleep(0.3)
print(json.dumps(dict(done=done, nodes=nodes)))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_processes(sid: int) -> list[psutil.Process]:
    """Every live process in session `sid` (the `ray start` that made a node is that session's leader)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid > 1 and os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (OSError, psutil.Error):
            pass
    return found


def _recorded(node: dict) -> list[psutil.Process]:
    """The node's recorded processes that still exist (same PID and start time), plus any its raylet forked since."""
    procs = {}
    for pid, started in node["pids"]:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - started) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                procs[pid] = p
        except psutil.Error:
            pass
    for p in _session_processes(node["sid"]):
        procs.setdefault(p.pid, p)
    return list(procs.values())


def _signal_all(procs: list[psutil.Process], sig: int, grace_s: float) -> list[int]:
    """Send `sig`, wait up to grace_s, SIGKILL what is left; return the PIDs still alive after that (normally none)."""
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(procs, timeout=grace_s)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(left, timeout=5)
    return [p.pid for p in left]


def _read_state(state_dir: str) -> dict | None:
    path = os.path.join(state_dir, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_state(state_dir: str, state: dict) -> None:
    tmp = os.path.join(state_dir, STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, os.path.join(state_dir, STATE_FILE))


def _start_node(state: dict, state_dir: str, name: str, cpus: int, args: list[str], env: dict,
                deadline: float) -> None:
    """Run `ray start ARGS` as the leader of a new session (its PID then is the session id of every process it
    starts), record the node in the state file at once, and wait for `ray start` to return."""
    log_path = os.path.join(state_dir, f"{name}.log")
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", *args]
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    state["nodes"].append(dict(name=name, cpus=cpus, sid=proc.pid, pids=[]))
    _write_state(state_dir, state)
    try:
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = "timed out"
    if rc != 0:
        with open(log_path) as f:
            last = [line.strip() for line in f if line.strip()][-1]
        raise RuntimeError(f"`ray start` for node {name} failed ({rc}): {last[:300]}; see {log_path}")


def nodes(driver_env: dict, alive: list[str] = (), dead: list[str] = (), timeout_s: float = 60.0) -> list[dict]:
    """Ask the cluster for its nodes from a short-lived driver run with `driver_env` (start()'s "env": RAY_ADDRESS
    and RAY_AUTH_MODE), once every name in `alive` is an alive node and none in `dead` is; raise TimeoutError after
    timeout_s. Each node: node_id, alive, ip, resources, name (from its `node:<name>` resource)."""
    address = driver_env["RAY_ADDRESS"]
    env = {**os.environ, **driver_env}
    args = [sys.executable, "-c", _NODES_SCRIPT, json.dumps(list(alive)), json.dumps(list(dead)), str(timeout_s)]
    try:
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout_s + 60)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"no answer from the Ray cluster at {address} within {timeout_s + 60:g} s") from None
    if out.returncode != 0:
        raise RuntimeError(f"could not list the nodes of {address}: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    if not answer["done"]:
        seen = {n["name"]: n["alive"] for n in answer["nodes"] if n["name"]}
        raise TimeoutError(f"after {timeout_s:g} s the cluster at {address} has nodes {seen}; "
                           f"wanted alive {list(alive)}, dead {list(dead)}")
    return answer["nodes"]


def _ensure_auth_token(env: dict) -> None:
    """Make Ray's auth token where `ray start` reads it, if there is none (`ray get-auth-token --generate`).

    `ray.init()` makes one for a local cluster, but `ray start --head` refuses to start without one: on a fresh
    machine the head failed with "Token authentication is enabled but no authentication token was found"."""
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)  # stdout is the token: not shown
    if out.returncode != 0:
        raise RuntimeError(f"`ray get-auth-token --generate` failed ({out.returncode}): {(out.stderr.strip().splitlines() or ['?'])[-1]}")


def start(workers: int = 2, cpus_per_worker_node: int = 1, head_cpus: int = 0, state_dir: str = DEFAULT_STATE_DIR,
          gpus_per_worker_node: int = 0, env: dict | None = None, timeout_s: float = START_TIMEOUT_S) -> dict:
    """Start a head node and `workers` worker nodes on this machine; return the state: dict(address, env (the
    RAY_ADDRESS and RAY_AUTH_MODE a driver needs), dashboard, temp_dir, nodes: [dict(name, cpus, sid, node_id, pids)]).

    `env` adds environment variables for every node's processes (e.g. AWS_ENDPOINT_URL for a local S3 server).
    Returns only once all nodes are registered and alive; on any failure, stops what it started and raises.
    """
    os.makedirs(state_dir, exist_ok=True)
    old = _read_state(state_dir)
    if old and any(_recorded(n) for n in old["nodes"]):
        raise RuntimeError(f"a local cluster from {state_dir} is still running at {old['address']}; "
                           f"stop it first: python -m cluster.local stop --state-dir {state_dir}")
    stop(state_dir)  # the leftovers of one that died: its temp dir and state file
    deadline = time.monotonic() + timeout_s
    gcs_port, dashboard_port = _free_port(), _free_port()
    address = f"127.0.0.1:{gcs_port}"
    # RAY_ADDRESS in every node's processes: Ray code that looks the cluster up by itself (the state API in
    # Ray Train's placement-group cleaner) would otherwise find several Ray instances on this machine and fail.
    node_env = os.environ | dict(env or {}) | {"RAY_ADDRESS": address}
    # Ray token auth: nodes and drivers read the token (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN).
    # Ray only uses it with an explicit address when RAY_AUTH_MODE=token, so drivers need that variable too.
    node_env.setdefault("RAY_AUTH_MODE", "token")
    driver_env = {"RAY_ADDRESS": address, "RAY_AUTH_MODE": node_env["RAY_AUTH_MODE"]}
    if node_env["RAY_AUTH_MODE"] == "token":
        _ensure_auth_token(node_env)
    # A private, short Ray temp dir: Unix socket paths stay under their length limit, and the
    # "current cluster" file that a plain ray.init() reads goes there instead of /tmp/ray.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    state = dict(address=address, env=driver_env, dashboard=f"http://127.0.0.1:{dashboard_port}",
                 temp_dir=temp_dir, nodes=[])
    _write_state(state_dir, state)

    def node_args(name: str, cpus: int, gpus: int, resources: dict | None = None) -> list[str]:
        return [f"--num-cpus={cpus}", f"--num-gpus={gpus}", f"--resources={json.dumps({f'node:{name}': 1, **(resources or {})})}",
                f"--temp-dir={temp_dir}", f"--object-store-memory={OBJECT_STORE_MB * 1024 * 1024}",
                # every port its own: two raylets on one machine must not both want the defaults
                "--min-worker-port=0", "--max-worker-port=0", f"--dashboard-agent-listen-port={_free_port()}",
                "--disable-usage-stats"]

    try:
        # 1) the head: GCS, dashboard on loopback, `head_cpus` CPUs (0: trials land on the worker nodes), and the
        #    resource that keeps each sweep trial's own actor on it (cluster/connect.py HEAD_RESOURCE)
        _start_node(state, state_dir, "head", head_cpus,
                    ["--head", f"--port={gcs_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={_free_port()}",
                     *node_args("head", head_cpus, 0, {HEAD_RESOURCE: 1})], node_env, deadline)
        # 2) the worker nodes, one after another: each picks its socket names in the shared session
        #    folder by looking for unused ones, so two starting at once can collide
        for i in range(1, workers + 1):
            _start_node(state, state_dir, f"worker{i}", cpus_per_worker_node,
                        [f"--address={address}", "--include-log-monitor=false",
                         *node_args(f"worker{i}", cpus_per_worker_node, gpus_per_worker_node)], node_env, deadline)
        # 3) wait until the GCS lists every node alive, then record what each `ray start` left running
        names = [n["name"] for n in state["nodes"]]
        listed = {n["name"]: n for n in nodes(driver_env, alive=names, timeout_s=max(5.0, deadline - time.monotonic()))}
        for n in state["nodes"]:
            n["node_id"] = listed[n["name"]]["node_id"]
            n["pids"] = [[p.pid, p.create_time()] for p in _session_processes(n["sid"])]
        _write_state(state_dir, state)
    except BaseException:
        stop(state_dir)
        raise
    return state


def kill_node(state_dir: str, name: str) -> list[int]:
    """SIGKILL one node's raylet and every process of its session, as if the machine had gone; return their PIDs."""
    state = _read_state(state_dir)
    if state is None:
        raise RuntimeError(f"no local cluster recorded in {state_dir}")
    node = next((n for n in state["nodes"] if n["name"] == name), None)
    if node is None:
        raise UserError(f"no node {name!r} in {state_dir}; nodes: {[n['name'] for n in state['nodes']]}")
    procs = _recorded(node)
    left = _signal_all(procs, signal.SIGKILL, grace_s=5)
    if left:
        raise RuntimeError(f"node {name}: processes {left} survived SIGKILL")
    node["killed"] = True
    _write_state(state_dir, state)
    return [p.pid for p in procs]


def stop(state_dir: str = DEFAULT_STATE_DIR) -> list[int]:
    """Stop the recorded nodes (SIGTERM, then SIGKILL after a grace period) and remove the Ray temp dir; return
    the PIDs that were signalled. Touches no process outside the recorded sessions."""
    state = _read_state(state_dir)
    if state is None:
        return []
    procs = [p for n in reversed(state["nodes"]) for p in _recorded(n)]
    left = _signal_all(procs, signal.SIGTERM, grace_s=STOP_GRACE_S)
    if left:
        raise RuntimeError(f"processes {left} of the local cluster in {state_dir} survived SIGKILL")
    shutil.rmtree(state["temp_dir"], ignore_errors=True)
    os.remove(os.path.join(state_dir, STATE_FILE))
    return [p.pid for p in procs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.local", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="where the cluster's state file and logs go")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start a head and worker nodes; print the address for RAY_ADDRESS")
    p.add_argument("--workers", type=int, default=2, help="number of worker nodes")
    p.add_argument("--cpus-per-worker-node", type=int, default=1, help="CPUs each worker node offers")
    p.add_argument("--gpus-per-worker-node", type=int, default=0, help="GPUs each worker node offers")
    p.add_argument("--head-cpus", type=int, default=0, help="CPUs the head offers (0: no trials on the head)")
    sub.add_parser("stop", help="stop every process the cluster started")
    p = sub.add_parser("kill", help="kill one worker node to simulate losing it")
    p.add_argument("name", help="node name, e.g. worker1")
    args = parser.parse_args(argv)
    if args.command == "start":
        state = start(args.workers, args.cpus_per_worker_node, args.head_cpus, args.state_dir, args.gpus_per_worker_node)
        print(f"{len(state['nodes'])} nodes ({', '.join(n['name'] for n in state['nodes'])}), "
              f"dashboard {state['dashboard']}, state {args.state_dir}", file=sys.stderr)
        print("\n".join(f"export {k}={v}" for k, v in state["env"].items()))
    elif args.command == "stop":
        print(f"stopped {len(stop(args.state_dir))} processes", file=sys.stderr)
    else:
        print(f"killed node {args.name}: {len(kill_node(args.state_dir, args.name))} processes", file=sys.stderr)


if __name__ == "__main__":
    main()
