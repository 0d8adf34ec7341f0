"""The gpu preset fits the GPUs Ray sees (cluster/gpus.py): on a real local Ray that declares one (fake) GPU it plans
one worker per trial and, with --gpus-per-worker 0.25, four trials per card; a packing that cannot run is one line
from the CLI (exit 2) before anything launches; the memory estimate refuses more trials than a card holds."""

import argparse

import pytest

from captcha_tune.cli import main
from captcha_tune.commands import sweep
from cluster.connect import ResourceError, max_concurrent_trials, node_resources
from cluster.gpus import GIB, GpuPlan, plan_gpu, trial_bytes
from trainable.config import GPU_MODEL, TrainConfig


@pytest.fixture(scope="module", autouse=True)
def one_fake_gpu():
    import ray

    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, logging_level="WARNING")  # no CUDA needed
    yield
    ray.shutdown()


def sweep_args(*argv):
    p = argparse.ArgumentParser()
    sweep.register(p.add_subparsers())
    return p.parse_args(["sweep", *argv])


def test_one_gpu_plans_one_worker_per_trial_and_packs_trials_on_the_card(capsys):
    nodes = node_resources()
    assert sum(n.get("GPU", 0) for n in nodes) == 1
    assert plan_gpu(nodes) == GpuPlan(1, 1.0, 1)
    assert plan_gpu(nodes, gpus_per_worker=0.5) == GpuPlan(1, 0.5, 2)
    assert plan_gpu(nodes, gpus_per_worker=0.25) == GpuPlan(1, 0.25, 4)
    assert plan_gpu(nodes, gpus_per_worker=0.3) == GpuPlan(1, 0.3, 3)
    assert max_concurrent_trials(1, 1.0, 0.25) == 4  # what the sweep then runs side by side (4 CPUs declared)

    base = TrainConfig(**GPU_MODEL)
    assert sweep.plan_gpus(sweep_args("--preset", "gpu"), base, 100000) == (1, 1.0)
    assert sweep.plan_gpus(sweep_args("--preset", "gpu", "--gpus-per-worker", "0.25"), base, 100000) == (1, 0.25)
    assert capsys.readouterr().out.splitlines()[-1] == "gpu plan: 1 worker(s) per trial x 0.25 GPU, 4 trial(s) per card"


@pytest.mark.parametrize("flags, says", [
    (["--gpus-per-worker", "0.3", "--max-concurrent", "4"], "only 3 trial(s) of 1 x 0.3 GPU fit"),
    (["--gpus-per-worker", "2"], "--gpus-per-worker 2 but Ray sees 1 GPU(s)"),
    (["--gpus-per-worker", "1.5"], "a share of one card (at most 1) or whole cards"),
    (["--workers-per-trial", "2"], "2 worker(s) x 1 GPU = 2 GPUs a trial"),
])
def test_impossible_packing_is_one_line_before_launch(tmp_path, capsys, flags, says):
    with pytest.raises(SystemExit) as exit:
        main(["sweep", "--preset", "gpu", "--storage", str(tmp_path), *flags])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert says in err and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # nothing prepared or launched


def test_memory_estimate_refuses_more_trials_than_a_card_holds():
    nodes = node_resources()
    per_worker = trial_bytes(TrainConfig(**GPU_MODEL), 100000)
    assert 1 * GIB < per_worker < 8 * GIB  # data ~1.1 GiB + activations + context at the gpu preset
    assert plan_gpu(nodes, gpus_per_worker=0.25, per_worker_bytes=per_worker, card=80 * GIB).trials_per_card == 4
    with pytest.raises(ResourceError, match=r"4 trials per card .* use --gpus-per-worker 0.5\b"):
        plan_gpu(nodes, gpus_per_worker=0.25, per_worker_bytes=3 * GIB, card=7 * GIB)
