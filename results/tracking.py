"""MLflow tracking (`--mlflow URI`): one MLflow run per sweep trial, and one per `train` or `retrain` run.

A sweep logs through Ray Tune's MLflowLoggerCallback (on the driver); `train` and `retrain` are plain Ray Train runs,
which take Train callbacks, not Tune's: `TrainRunLogger` logs the same things from the Train controller. Either way a
run holds its config as params and every report's metrics at its optimizer step; a retrain adds its exported model.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager

from ray.air.integrations.mlflow import MLflowLoggerCallback  # imports mlflow only if installed
from ray.train import UserCallback

from trainable import storage
from trainable.errors import UserError

INSTALL = "pip install 'captcha-tune[tracking]' (or: pip install mlflow-skinny)"


def check(uri: str) -> str:
    """The tracking URI made absolute (a relative sqlite path would move with each Ray process's folder), once it
    answers: a bad URI, a file store MLflow refuses, or an unreachable server is one line, before Ray starts."""
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise UserError(f"--mlflow needs MLflow: {INSTALL}") from None
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")  # one try, not minutes of them
    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as e:
        if "MLFLOW_ALLOW_FILE_STORE" in str(e):
            raise UserError(f"--mlflow {uri}: MLflow {mlflow.__version__} no longer writes file stores; "
                            f"use sqlite:///PATH/mlflow.db or a server http://HOST:PORT (or set MLFLOW_ALLOW_FILE_STORE=true)") from None
        reason = str(e).strip().splitlines()[0][:200]
        if reason.startswith("API request to"):  # not a whole urllib3 error
            reason = "no MLflow server answers there"
        elif "unsupported URI" in reason:
            reason = f"MLflow does not know the scheme {uri.split(':')[0]}://"
        raise UserError(f"--mlflow {uri}: {reason}; pass sqlite:///PATH/mlflow.db or a running server http://HOST:PORT") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    return uri


def sweep_callbacks(uri: str, experiment: str) -> list:
    """Tune callbacks that log each trial as an MLflow run in `experiment`: the trial's config, its metrics per report."""
    return [TrialLogger(tracking_uri=uri, experiment_name=experiment)]


class TrialLogger(MLflowLoggerCallback):
    """Ray's MLflowLoggerCallback, with two changes: metrics are logged at the trial's optimizer step (as a train
    run's are) rather than at Tune's report count, and a restored sweep continues a trial's run (found by the
    trial_name tag Ray sets) instead of starting a second one for it."""

    def log_trial_start(self, trial):
        if trial not in self._trial_runs:
            found = self.mlflow_util._get_client().search_runs(
                [self.mlflow_util.experiment_id], f"tags.trial_name = '{trial}'", max_results=1)
            if found:
                self._trial_runs[trial] = found[0].info.run_id
        super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial, result: dict):
        step = int(result.get("step") or iteration)
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=result, step=step)


class TrainRunLogger(UserCallback):
    """A Train callback that logs one Train run as one MLflow run: the run's config as params at its first report
    and rank 0's metrics at every report. The MLflow run is made (or found, for a resumed run) on the driver."""

    def __init__(self, uri: str, experiment: str, run_name: str, run_path: str):
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        found = client.search_runs([exp_id], f"tags.run_path = '{run_path}'", max_results=1)
        self.uri, self.new = uri, not found
        self.run_id = found[0].info.run_id if found else client.create_run(exp_id, run_name=run_name, tags=dict(run_path=run_path)).info.run_id

    def after_report(self, run_context, metrics, checkpoint):
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param
        from ray.tune.utils import flatten_dict

        m, now = metrics[0], int(time.time() * 1000)
        params = [Param(k, str(v)) for k, v in flatten_dict(run_context.train_loop_config or {}).items()] if self.new else []
        self.new = False  # a resumed run keeps the params it started with (MLflow refuses to change one)
        values = [Metric(k, float(v), now, int(m.get("step", 0))) for k, v in m.items() if isinstance(v, (int, float))]
        MlflowClient(self.uri).log_batch(self.run_id, metrics=values, params=params)

    def log_file(self, path: str) -> None:
        """Attach a file (local or on the run's storage URI) to the run as an artifact."""
        from mlflow import MlflowClient

        with tempfile.TemporaryDirectory() as tmp:
            if storage.is_uri(path):
                local = os.path.join(tmp, os.path.basename(path))
                with open(local, "wb") as f:
                    f.write(storage.read_bytes(path))
                path = local
            MlflowClient(self.uri).log_artifact(self.run_id, path)

    def end(self, status: str) -> None:
        from mlflow import MlflowClient

        MlflowClient(self.uri).set_terminated(self.run_id, status)


@contextmanager
def train_run(uri: str | None, experiment: str, run_name: str, run_path: str):
    """The Train callbacks that log a `train` or `retrain` run: [TrainRunLogger], or [] without --mlflow. Its MLflow
    run ends with the block: FINISHED, FAILED, or KILLED on Ctrl-C."""
    if not uri:
        yield []
        return
    log = TrainRunLogger(uri, experiment, run_name, run_path)
    try:
        yield [log]
    except BaseException as e:
        log.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    log.end("FINISHED")
