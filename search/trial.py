"""One sweep trial: a Tune function trainable that runs the foundation's TorchTrainer driver, and records how
its Train run ended (search/status.py)."""

from __future__ import annotations

import json


def run_trial(config: dict, base: dict, run: dict, exp: str) -> None:
    """config: the searcher's values; base: the fixed TrainConfig values; run: RunSettings fields; exp: the experiment."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from search import status
    from trainable import storage
    from trainable.config import TrainConfig
    from trainable.driver import RunSettings, run_training
    from trainable.worker import DivergedError

    cfg = TrainConfig.from_dict({**base, **config})
    # The Train run is named after the Tune trial, so a restarted trial finds its checkpoints.
    trial_id = tune.get_context().get_trial_id()
    settings = RunSettings(**run, name=trial_id)
    done = storage.join(storage.normalize(settings.storage), settings.name, "summary.json")
    if storage.exists(done):  # the driver died after Train finished this trial but before Tune recorded it: report, don't rerun
        summary = json.loads(storage.read_text(done))
        tune.report(summary["final_metrics"])
    else:
        # record_first: ASHA records its stop before this function returns, and its record stays
        try:
            summary = run_training(cfg, settings, callbacks=[TuneReportCallback()])
        except DivergedError as e:
            status.record_first(exp, trial_id, "diverged", e.step, str(e))
            raise
        except Exception as e:
            status.record_first(exp, trial_id, "errored", reason=f"{type(e).__name__}: {(str(e).strip() or '?').splitlines()[0]}")
            raise
    status.record_first(exp, trial_id, "completed", summary["final_metrics"].get("step"))
