"""Tracking on real services, and extending a sweep: `--mlflow` logs a tiny sweep's trials (the sweep extended from
1 to 2 trials by re-running it with a larger --num-samples, which keeps the finished ones), a `train` and a `retrain` into a real MLflow
sqlite store (read back with mlflow.search_runs), and optuna-dashboard serves the sweep's live study over HTTP.
The commands run in this process (captcha_tune.cli.main) on one Ray started for the module."""

import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import TINY, main, own_output

mlflow = pytest.importorskip("mlflow")

FLAGS = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]
REPORTS = TINY["max_steps"] // TINY["eval_every"]


pytestmark = pytest.mark.usefixtures("module_ray")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh MLflow sqlite store; its artifacts land in the folder MLflow is used from, so that is a temporary one."""
    folder = tmp_path_factory.mktemp("mlflow")
    cwd = os.getcwd()
    os.chdir(folder)
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    yield f"sqlite:///{folder}/mlflow.db"
    os.chdir(cwd)


FINISHED = {}  # summary.json -> mtime of the trials the first run of `exp` finished


@pytest.fixture(scope="module")
def exp(easy_data, store, tmp_path_factory):
    """A 1-trial sweep logged to MLflow, then extended to 2 by the same command with a larger --num-samples (Tune
    restores it, with the callbacks of its first run). No ASHA: each trial reports at every evaluation."""
    storage = tmp_path_factory.mktemp("exp")
    for n in (1, 2):
        main("sweep", "--storage", storage, "--name", "tracked", "--data", easy_data, "--num-samples", n,
                     "--workers-per-trial", 1, "--scheduler", "none", "--mlflow", store, *FLAGS)
        if n == 1:
            FINISHED.update({p: os.path.getmtime(p) for p in glob.glob(str(storage / "tracked" / "train" / "*" / "summary.json"))})
    return storage / "tracked"


def test_extending_keeps_the_finished_trials_and_refuses_other_settings(exp, easy_data, store, capsys):
    import optuna

    from results.experiment import load

    trials, _ = load(exp)
    assert len(FINISHED) == 1 and len(trials) == 2 and (trials["status"] == "completed").all()
    for path, mtime in FINISHED.items():  # the first was kept, not rerun
        assert os.path.getmtime(path) == mtime
    assert len(optuna.load_study(study_name="captcha-tune-tracked", storage=f"sqlite:///{exp}/optuna.db").trials) == 2
    base = ["sweep", "--storage", exp.parent, "--name", "tracked", "--data", easy_data, "--scheduler", "none", "--mlflow", store, *FLAGS]
    base += ["--workers-per-trial", 1]
    for flags, msg in [(["--num-samples", 1], "can only grow"), (["--num-samples", 3, "--seed", 1], "--seed 0, not 1"),
                       (["--num-samples", 3, "--bound", "peak_lr=1e-4:1e-3"], "another search space (peak_lr")]:
        with pytest.raises(SystemExit) as e:
            main(*base, *flags)
        err = own_output(capsys.readouterr().err)
        assert e.value.code == 2 and msg in err and "Traceback" not in err, err[-3000:]
    assert len(load(exp)[0]) == 2, "a refused run changed nothing"


def test_sweep_logs_each_trial_with_params_and_a_metric_history(exp):
    runs = mlflow.search_runs(experiment_names=["tracked"], filter_string="tags.trial_name LIKE 'run_trial_%'")  # not a retrain
    assert len(runs) == 2 and (runs["status"] == "FINISHED").all()  # one run per trial, the restored sweep's too
    space = json.loads((exp / "sweep.json").read_text())["space"]
    for name in ("peak_lr", "warmup_steps", "head"):  # the searched config, one param each
        assert name in space and runs[f"params.{name}"].notna().all(), name
    client = mlflow.MlflowClient()
    for run_id in runs["run_id"]:
        history = client.get_metric_history(run_id, "val_full_match")
        assert [m.step for m in history] == [TINY["eval_every"] * (i + 1) for i in range(REPORTS)]  # at the optimizer step


def test_train_is_one_run_with_its_config_and_metrics_per_report(easy_data, store, tmp_path):
    main("train", "--data-dir", easy_data, "--storage", tmp_path, "--name", "one", "--mlflow", store, *FLAGS)
    runs = mlflow.search_runs(experiment_names=["train"])
    assert len(runs) == 1 and runs["status"][0] == "FINISHED" and runs["tags.mlflow.runName"][0] == "one"
    assert runs["params.max_steps"][0] == str(TINY["max_steps"]) and runs["params.channels"][0] == str(TINY["channels"])
    history = mlflow.MlflowClient().get_metric_history(runs["run_id"][0], "val_full_match")
    assert [m.step for m in history] == [TINY["eval_every"] * (i + 1) for i in range(REPORTS)]


def test_retrain_logs_its_run_and_the_exported_model(exp, store):
    main("retrain", exp, "--max-steps", TINY["max_steps"], "--patience", 0, "--mlflow", store)
    runs = mlflow.search_runs(experiment_names=["tracked"], filter_string="tags.mlflow.runName = 'retrain/retrain'")
    assert len(runs) == 1 and runs["status"][0] == "FINISHED"
    run_id = runs["run_id"][0]
    assert len(mlflow.MlflowClient().get_metric_history(run_id, "val_full_match")) > 1
    assert [a.path for a in mlflow.MlflowClient().list_artifacts(run_id)] == ["model.pt2"]
    model = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model.pt2")
    assert os.path.getsize(model) == os.path.getsize(exp / "retrain" / "retrain" / "model.pt2")


def test_bad_tracking_uri_is_one_line_before_ray(tmp_path):
    from results.tracking import check
    from trainable.errors import UserError

    t0 = time.time()
    with pytest.raises(UserError, match="no longer writes file stores; use sqlite"):
        check(f"file://{tmp_path}/mlruns")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=f"--mlflow http://127.0.0.1:{port}: no MLflow server answers there"):
        check(f"http://127.0.0.1:{port}")
    assert time.time() - t0 < 30, "no minutes of HTTP retries"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_optuna_dashboard_serves_the_live_study(exp):
    import optuna

    study = optuna.load_study(study_name="captcha-tune-tracked", storage=f"sqlite:///{exp}/optuna.db")
    port = free_port()
    dashboard = [os.path.join(os.path.dirname(sys.executable), "optuna-dashboard")]
    server = subprocess.Popen([*dashboard, f"sqlite:///{exp}/optuna.db", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                studies = get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, f"optuna-dashboard exited: {server.stderr.read()[-2000:]}"
                assert time.time() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == ["captcha-tune-tracked"]
        detail = get(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}")
        assert detail["name"] == "captcha-tune-tracked" and len(detail["trials"]) == 2
        assert [t["values"] for t in detail["trials"]] == [t.values for t in study.trials]
        assert {t["state"] for t in detail["trials"]} == {"Complete"}
        assert [len(t["intermediate_values"]) for t in detail["trials"]] == [REPORTS] * 2  # the learning curves
    finally:
        server.terminate()
        server.wait(timeout=30)
