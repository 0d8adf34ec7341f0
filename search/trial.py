"""One sweep trial: a Tune function trainable that runs the foundation's TorchTrainer driver, and records how
its Train run ended (search/status.py).

Faults are not configs: an infrastructure fault that Train's own retries did not absorb (the worker group did not
start, a worker, its actor or its node died, out of memory) starts the Train run again, which resumes from the
trial's latest checkpoint (the run is named after the trial), up to RETRIES times; if it persists, the trial is
`errored` with the fault as its reason, and the searcher tells the study FAIL (search/searcher.py). Only a
divergence is the config's doing (`diverged`, the worst value)."""

from __future__ import annotations

import json

RETRIES = 2  # fresh starts of a trial's Train run after an infrastructure fault


def infrastructure_fault(e: BaseException) -> str | None:
    """One line naming the infrastructure fault behind `e` (what Train's fit() raised), None when it is not one."""
    import ray.exceptions
    import torch
    from ray.train import ControllerError, WorkerGroupError
    from ray.train.v2.api.exceptions import PreemptionError
    from trainable.ray_internals import train_start_and_health_errors

    start_errors, HealthCheckFailed, HealthCheckTimeout = train_start_and_health_errors()
    machinery = (ray.exceptions.RayActorError, ray.exceptions.NodeDiedError, ray.exceptions.WorkerCrashedError,
                 ray.exceptions.OutOfMemoryError, ray.exceptions.ObjectLostError, torch.OutOfMemoryError, HealthCheckTimeout)
    if isinstance(e, ControllerError) and isinstance(e.controller_failure, start_errors):
        return f"the worker group did not start ({type(e.controller_failure).__name__})"
    if isinstance(e, PreemptionError):
        return "a node was preempted (PreemptionError)"
    if isinstance(e, WorkerGroupError):
        for rank, failure in sorted(e.worker_failures.items()):
            if isinstance(failure, HealthCheckFailed):
                failure = failure.health_check_failure
            if isinstance(failure, machinery):
                return f"worker {rank} was lost ({type(failure).__name__})"
    return None


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip() or '?').splitlines()[0]}"


def run_trial(config: dict, base: dict, run: dict, exp: str, train=None) -> None:
    """config: the searcher's values; base: the fixed TrainConfig values; run: RunSettings fields; exp: the experiment;
    train: trainable.driver.run_training or one with its signature (tests pass one that injects faults)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from search import status
    from trainable import storage
    from trainable.config import TrainConfig
    from trainable.driver import RunSettings, run_training
    from trainable.worker import DivergedError

    train = train or run_training
    cfg = TrainConfig.from_dict({**base, **config})
    # The Train run is named after the Tune trial, so a restarted trial (or a retried run) finds its checkpoints.
    trial_id = tune.get_context().get_trial_id()
    status.reopen(exp, trial_id)
    settings = RunSettings(**run, name=trial_id)
    done = storage.join(storage.normalize(settings.storage), settings.name, "summary.json")
    if storage.exists(done):  # the driver died after Train finished this trial but before Tune recorded it: report, don't rerun
        summary = json.loads(storage.read_text(done))
        tune.report(summary["final_metrics"])
    else:
        # record_first: ASHA records its stop before this function returns, and its record stays
        for attempt in range(RETRIES + 1):
            try:
                summary = train(cfg, settings, callbacks=[TuneReportCallback()])
                break
            except DivergedError as e:
                status.record_first(exp, trial_id, "diverged", e.step, str(e))
                raise
            except Exception as e:
                fault = infrastructure_fault(e)
                if fault and attempt < RETRIES:
                    print(f"trial {trial_id}: {fault}; starting its Train run again from its checkpoint ({attempt + 1} of {RETRIES})", flush=True)
                    continue
                reason = f"{fault}, {attempt + 1} times: {one_line(e)}" if fault else one_line(e)
                status.record_first(exp, trial_id, "errored", reason=reason)
                raise
    status.record_first(exp, trial_id, "completed", summary["final_metrics"].get("step"))
