"""One sweep trial: a Tune function trainable that runs the foundation's TorchTrainer driver."""

from __future__ import annotations

import json


def run_trial(config: dict, base: dict, run: dict) -> None:
    """config: the searcher's values; base: the fixed TrainConfig values; run: RunSettings fields."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from trainable import storage
    from trainable.config import TrainConfig
    from trainable.driver import RunSettings, run_training

    cfg = TrainConfig.from_dict({**base, **config})
    # The Train run is named after the Tune trial, so a restarted trial finds its checkpoints.
    settings = RunSettings(**run, name=tune.get_context().get_trial_id())
    done = storage.join(storage.normalize(settings.storage), settings.name, "summary.json")
    if storage.exists(done):  # the driver died after Train finished this trial but before Tune recorded it: report, don't rerun
        tune.report(json.loads(storage.read_text(done))["final_metrics"])
        return
    run_training(cfg, settings, callbacks=[TuneReportCallback()])
