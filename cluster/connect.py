"""Connect to Ray once per process: an embedded local Ray, or the cluster in RAY_ADDRESS."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from trainable.errors import UserError

# Ray Train settings every process of a run needs (the Train controller reads them):
# a worker group that cannot start within this time fails the run instead of waiting forever.
TRAIN_ENV = {
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60"),
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # no preemption watcher actor per run: its creation logs a core_worker error line ("has constructor arguments in
    # the object store and max_restarts > 0", ray-project/ray#53727) into every trial's console; a run on a drained
    # node restarts from its checkpoint through FailureConfig(max_failures) all the same
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # how often the Train controller polls its workers, and so collects their reports: a worker's report waits until
    # its previous one is collected (a queue of one), so at Ray's 2 s a run reports at most once every 2 s. A
    # retrain that evaluates once an epoch of a small set, or a fast GPU trial, was held to that pace: a 64-image
    # retrain spent 190 of its 220 s waiting on 96 reports. 0.5 s costs a poll RPC per worker twice a second.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"),
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
}

# A custom resource only the head declares (`ray start --head --resources='{"captcha_tune_head": 1}'`; the embedded
# Ray and cluster/local.py declare it themselves): a sliver of it places a sweep's trial actors on the head.
HEAD_RESOURCE = "captcha_tune_head"


class ResourceError(UserError):
    """A request that no node or the whole cluster can satisfy."""


def init_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    quiet()
    os.environ.update(TRAIN_ENV)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": TRAIN_ENV, "worker_process_setup_hook": SETUP_HOOK}
    kwargs = dict(runtime_env=runtime_env, log_to_driver=True, configure_logging=True, logging_level="WARNING")
    if address:
        ray.init(address=address, **kwargs)
    else:
        # address="local": always a fresh embedded Ray, never a stray `ray start` cluster on this machine.
        # Its GCS port is chosen here, so every process of this Ray can be told which Ray is its own: Ray Train's
        # placement-group cleaner finds "its" cluster through the State API, which, with two Rays on one machine
        # (a sweep and a `train` side by side), fails with "Found multiple active Ray instances" unless RAY_ADDRESS
        # names one. Raylet and workers inherit this process's environment.
        own = f"{ray.util.get_node_ip_address()}:{free_port()}"
        saved = {k: os.environ.get(k) for k in ("RAY_GCS_SERVER_PORT", "RAY_ADDRESS")}
        os.environ.update(RAY_GCS_SERVER_PORT=own.rsplit(":", 1)[1], RAY_ADDRESS=own)
        kwargs["runtime_env"] = {**runtime_env, "env_vars": {**TRAIN_ENV, "RAY_ADDRESS": own}}
        try:
            ray.init(address="local", num_cpus=num_cpus, resources={HEAD_RESOURCE: 1}, include_dashboard=True, **kwargs)
        finally:  # this process may start another Ray later (tests do): it must not take this one's address for it
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.update({k: v})


# Train's placement-group cleaner logs a warning each time a run's controller dies, which is how every trial that ASHA
# stops ends: "Detected that the Ray Train controller actor (...) is dead. Cleaning up placement group ...". The
# cleanup is the expected one and the sweep's table already says the trial stopped, so every Ray worker process drops
# that one message (its other warnings, a cleanup that failed, still show).
SETUP_HOOK = "cluster.connect.worker_setup"  # runtime_env worker_process_setup_hook: run in each worker process
CLEANER_NOTICE = "Detected that the Ray Train controller actor"


def worker_setup() -> None:
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").addFilter(
        lambda record: not record.getMessage().startswith(CLEANER_NOTICE))


def quiet() -> None:
    """The console shows captcha-tune's lines and Ray's progress table, not library notices that need no action:
    Tune's TensorBoard hint, Ray's token-auth notice (every local Ray has token auth; ray.init says so each time) and Optuna's
    ExperimentalWarning for the sampler options the search space uses (matched by its text: importing optuna here
    for the class would slow every command)."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # Tune's own loggers without TensorBoard's (nothing reads its event files): the CSV and JSON ones that
    # results/ reads, named here, and no automatic ones, so no "To visualize your results with TensorBoard" hint
    os.environ.setdefault("RAY_TUNE_CALLBACKS", "ray.tune.logger.CSVLoggerCallback,ray.tune.logger.JsonLoggerCallback")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    warnings.filterwarnings("ignore", message=r".*(is experimental \(supported from v|is an experimental feature)")


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_resources() -> list[dict]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n["Alive"]]


def on_head() -> dict:
    """Resources that place an actor on the head node: a sliver of HEAD_RESOURCE, or none when no node declares it.

    No node has it on a cluster started without the flag. Pinning only protects a trial against losing the node its
    actor runs on (a restart from its checkpoint instead of an errored trial), so the sweep runs unpinned after a
    one-line warning rather than refusing to start on a cluster its user may not be able to restart."""
    if any(HEAD_RESOURCE in n for n in node_resources()):
        return {HEAD_RESOURCE: 0.001}
    print(f"warning: no node declares the {HEAD_RESOURCE} resource, so trial actors may run on worker nodes and a lost "
          f"node errors its trial; start the head with: ray start --head --resources='{{\"{HEAD_RESOURCE}\": 1}}'",
          file=sys.stderr, flush=True)
    return {}


def check_fits(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    """Raise ResourceError when a run of `workers` workers can never be placed."""
    nodes = node_resources()
    total_cpu = sum(n.get("CPU", 0) for n in nodes)
    total_gpu = sum(n.get("GPU", 0) for n in nodes)
    asked = f"{workers} worker(s) x ({cpus_per_worker:g} CPU, {gpus_per_worker:g} GPU)"
    have = f"the cluster has {total_cpu:g} CPU and {total_gpu:g} GPU over {len(nodes)} node(s)"
    if workers < 1:
        raise ResourceError(f"asked for {workers} workers; use at least 1")
    if workers * cpus_per_worker > total_cpu or workers * gpus_per_worker > total_gpu:
        raise ResourceError(f"asked for {asked} but {have}; use fewer workers or a bigger cluster")
    fits_one = [n for n in nodes if n.get("CPU", 0) >= cpus_per_worker and n.get("GPU", 0) >= gpus_per_worker]
    if not fits_one:
        raise ResourceError(f"asked for {asked} but no node has {cpus_per_worker:g} CPU and {gpus_per_worker:g} GPU free; {have}")
    per_node = sum(int(min(n.get("CPU", 0) // cpus_per_worker if cpus_per_worker else 1e9,
                           n.get("GPU", 0) // gpus_per_worker if gpus_per_worker else 1e9)) for n in nodes)
    if per_node < workers:
        raise ResourceError(f"asked for {asked} but only {per_node} such workers fit on the nodes; {have}")


def max_concurrent_trials(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> int:
    """How many trials of this size run side by side: floor(cluster / trial) on the scarce resource."""
    nodes = node_resources()
    fits = [sum(n.get("CPU", 0) for n in nodes) // (workers * cpus_per_worker)]
    if gpus_per_worker:
        fits.append(sum(n.get("GPU", 0) for n in nodes) // (workers * gpus_per_worker))
    return max(1, int(min(fits)))
