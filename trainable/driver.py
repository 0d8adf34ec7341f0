"""The driver of one training run: builds the Ray Train TorchTrainer (Train V2).

The same `run_training` is called by `captcha-tune train`, by every sweep trial and by retrain.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import ray.train
from ray.train.torch import TorchTrainer

from trainable import storage
from trainable.config import TrainConfig, setting
from trainable.metric import METRIC, MODE
from trainable.worker import DivergedError, train_fn_per_worker


@dataclass(frozen=True)
class RunSettings:
    """Where and on what a training run executes."""

    workers: int = setting(2, "DDP workers (one process each)")
    gpus_per_worker: float = setting(0.0, "GPUs per worker (0 = CPU training with gloo)")
    cpus_per_worker: float = setting(1.0, "CPUs per worker")
    storage: str = setting("runs", "local folder or URI holding run folders")
    name: str = setting("train", "run folder name; the same name resumes the run")
    keep_checkpoints: int = setting(2, "checkpoints kept: the best N by val_score (trainable/metric.py)")
    max_failures: int = setting(2, "worker-failure restarts from the last checkpoint")


def build_trainer(cfg: TrainConfig, run: RunSettings, callbacks=(), train_fn=train_fn_per_worker) -> TorchTrainer:
    """train_fn: the per-worker loop (tests pass one that wraps it, e.g. to kill a worker)."""
    return TorchTrainer(
        train_fn,
        train_loop_config=cfg.to_dict(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=run.workers, use_gpu=run.gpus_per_worker > 0,
            resources_per_worker={"CPU": run.cpus_per_worker, **({"GPU": run.gpus_per_worker} if run.gpus_per_worker else {})},
        ),
        run_config=ray.train.RunConfig(
            name=run.name,
            storage_path=storage.normalize(run.storage),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=run.keep_checkpoints, checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE),
            # controller_failure_limit: a run whose workers can't be scheduled fails instead of retrying forever
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures, controller_failure_limit=1),
            callbacks=list(callbacks),
            logging_config=ray.train.LoggingConfig(log_level=os.environ.get("CAPTCHA_TUNE_TRAIN_LOG_LEVEL", "WARNING")),
        ),
    )


def run_training(cfg: TrainConfig, run: RunSettings, callbacks=(), train_fn=train_fn_per_worker, keep_diverged: bool = False) -> dict:
    """Train to the end (or early stop) and write `summary.json` in the run folder; returns it.
    Raises DivergedError (with its .step) when the workers ended the run on a NaN/inf loss, unless `keep_diverged`
    and a checkpoint from before it exists (a retrain keeps its best model: summary["ended"] says it diverged)."""
    cfg = cfg.replace(data_dir=storage.normalize(cfg.data_dir))  # workers run in other folders
    result = build_trainer(cfg, run, callbacks, train_fn).fit()
    ended = result.return_value or {}  # why the workers ended: dict(step, kind, reason) (worker.stop_reason)
    if ended.get("kind") == "diverged" and not (keep_diverged and result.best_checkpoints):
        raise DivergedError(ended["reason"], step=ended["step"])
    best_ckpt, best_metrics = max(result.best_checkpoints or [], key=lambda cm: cm[1][METRIC], default=(None, {}))
    run_path = storage.as_uri(result.path, run.storage)  # Ray's paths lack the scheme of an s3:// storage
    summary = dict(
        run_path=run_path, config=cfg.to_dict(), workers=run.workers, gpus_per_worker=run.gpus_per_worker,
        final_metrics=result.metrics, best_metrics=best_metrics, ended=ended,
        best_checkpoint=storage.as_uri(best_ckpt.path, run.storage) if best_ckpt else None,
    )
    storage.write_text(storage.join(run_path, "summary.json"), json.dumps(summary, indent=2, default=str))
    return summary
