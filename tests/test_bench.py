"""`python -m bench.run --quick --only data` runs without Ray (its training rate from the bare loop) and writes
numeric JSON and summary.md; the process sampler of the Ray benchmarks sees a child's title and CPU time; every
committed result still makes its summary lines; the GPU training benchmark runs end to end on the CPU.

The Ray benchmarks (throughput, overhead, search) are run by hand: their results are in bench/results/.
"""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quick_data_writes_json_and_summary(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "data", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    data = json.loads((tmp_path / "data.json").read_text())
    for key in ("decode_images_per_s_per_core", "loader_images_per_s", "train_images_per_s_per_worker", "decode_over_train"):
        assert isinstance(data[key], float) and math.isfinite(data[key]) and data[key] > 0, key
    assert all(v > 0 for v in data["generate_images_per_s_per_core"].values())
    assert data["train_source"].startswith("bare loop")  # no throughput.json in tmp_path: bench.loop measured it
    assert data["machine"]["cores"] >= 1 and data["machine"]["torch"]
    assert (tmp_path / "data.png").stat().st_size > 0

    summary = (tmp_path / "summary.md").read_text()
    assert "| benchmark | figure | value | goal | met? |" in summary and "| data |" in summary


def test_process_sampler_sees_a_child_and_its_cpu_time():
    from bench.common import ProcessSampler

    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ntime.sleep(0.5)"
    with ProcessSampler(every=0.1, pss_every=2) as sampler:
        t0 = time.time()
        child = subprocess.Popen([sys.executable, "-c", busy])
        child.wait(timeout=60)
        time.sleep(0.2)
    titles = {pid: info[0] for _, procs in sampler.samples for pid, info in procs.items()}
    assert titles[child.pid].startswith(sys.executable) and any(info[3] > 0 for _, procs in sampler.samples for info in procs.values())
    used = sampler.cpu_seconds(t0, time.time(), lambda pid, title: "child" if pid == child.pid else "other")
    assert used["child"] >= 0.2, used


def test_committed_results_make_their_summary_lines():
    from bench import accuracy, data, overhead, search, throughput
    from bench.common import RESULTS, read_json

    for name, module in dict(data=data, throughput=throughput, overhead=overhead, search=search, accuracy=accuracy).items():
        rows = module.rows(read_json(RESULTS, name), read_json(RESULTS, "throughput")) if name == "data" else module.rows(read_json(RESULTS, name))
        assert rows and all(r.benchmark == name for r in rows), name


def test_gpu_benchmark_imports_no_ray():
    code = "import sys, bench.gpu_train; assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_gpu_train_runs_both_configs_and_scores_the_exported_model(tmp_path):
    """The GPU training benchmark end to end with --smoke on the CPU: feed rates, two runs, .pt2 tested, then 1 and 2
    trial processes sharing the device, each with its images/s and accuracy, and the table."""
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_train", "--smoke", "--data", str(data),
                           "--test", str(data / "val-00000.parquet"), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads((tmp_path / "gpu_train.json").read_text())
    assert r["data"]["train"] == 270 and r["data"]["val"] == 30
    assert all(v > 0 for v in r["feed_images_per_s"].values())
    assert set(r["runs"]) == {"reference", "ctc"} and r["runs"]["ctc"]["config"]["head"] == "ctc"
    for run in r["runs"].values():
        assert run["curve"][-1]["step"] == run["config"]["max_steps"] >= 20
        # the exported .pt2 on the validation file reads as the final model did in training's last evaluation
        assert run["test"]["val-00000"]["n"] == 30 and run["test"]["val-00000"]["full_match"] == run["curve"][-1]["val_full_match"]
        assert run["test"]["val-00000"]["char_acc"] == pytest.approx(run["curve"][-1]["val_char_acc"], abs=1e-9)
    assert (tmp_path / "gpu_train.png").stat().st_size > 0
    assert set(r["share"]) == {"1", "2"} and [len(s["trials"]) for s in r["share"].values()] == [1, 2]
    for s in r["share"].values():
        assert s["total_images_per_s"] == pytest.approx(sum(t["images_per_s"] for t in s["trials"]))
        assert all(t["images_per_s"] > 0 and t["steps"] >= 1 and 0 <= t["val_full_match"] <= 1 for t in s["trials"])
    assert "| 2 |" in (tmp_path / "gpu_train.md").read_text()


def test_bench_loop_feeds_each_image_once_an_epoch_and_evaluates_on_schedule():
    """`bench.loop` (the throughput bare arm and gpu_train): an epoch of `resident` batches holds no image twice, and
    `train_loop` evaluates every eval_every steps and at the end, with each interval's images/s."""
    import numpy as np
    import torch

    from bench.loop import resident, train_loop
    from trainable.config import TrainConfig

    x, y = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10)
    feed = resident(x, y, 3)
    epoch = torch.cat([next(feed)[1] for _ in range(3)])
    assert len(set(epoch.tolist())) == 9

    cfg = TrainConfig(img_height=32, img_width=96, batch_size=4, max_steps=5, eval_every=2, warmup_steps=1, augment=0.5)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 96), dtype=np.uint8)
    targets = np.random.default_rng(1).integers(1, 11, (8, 4))
    feed = resident(torch.from_numpy(images)[:, None], torch.from_numpy(targets), cfg.batch_size)
    model, _, curve = train_loop(cfg, dict(charset="_0123456789", max_len=4), feed, images, targets, torch.device("cpu"))
    assert [p["step"] for p in curve] == [2, 4, 5] and all(p["images_per_s"] > 0 for p in curve)
    from trainable.step import evaluate

    final = evaluate(model, images, targets, cfg, torch.device("cpu"))  # the last point measures the returned model
    assert {k: curve[-1][k] for k in final} == final
    assert curve[0]["seconds"] < curve[1]["seconds"] < curve[2]["seconds"] and model.training


def test_reference_arm_is_sized_from_the_other_arms_trials():
    """bench.search gives arm (a) the steps one trial runs in the budget: a line fitted to the other arms' trials."""
    from bench.search import reference_steps

    trials = [dict(steps_run=n, wall_seconds=20 + 0.1 * n) for n in (100, 250, 500)]  # 20 s start-up, 0.1 s a step
    assert reference_steps([dict(trials=trials[:2]), dict(trials=trials[2:])], 600, 50, 300) == 5200  # (540 - 20) / 0.1
    assert reference_steps([dict(trials=trials[2:])], 600, 50, 300) == 900  # one length: no fit, 3 x a search trial
