"""`python -m bench.run --quick --only data,gpu` runs without Ray and writes numeric JSON and summary.md.

The Ray benchmarks (throughput, overhead, search) are run by hand: their results are in bench/results/.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_data_and_gpu_write_json_and_summary(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "data,gpu", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    data = json.loads((tmp_path / "data.json").read_text())
    for key in ("decode_images_per_s_per_core", "loader_images_per_s", "train_images_per_s_per_worker", "decode_over_train"):
        assert isinstance(data[key], float) and math.isfinite(data[key]) and data[key] > 0, key
    assert all(v > 0 for v in data["generate_images_per_s_per_core"].values())
    assert data["machine"]["cores"] >= 1 and data["machine"]["torch"]
    assert (tmp_path / "data.png").stat().st_size > 0

    gpu = json.loads((tmp_path / "gpu.json").read_text())
    if gpu.get("skipped"):
        assert gpu["skipped"] == "no GPU"
    else:
        assert gpu["matmul_tflops_bf16"] > 0 and all(b["compiled_images_per_s"] > 0 for b in gpu["per_batch"].values())

    summary = (tmp_path / "summary.md").read_text()
    assert "| benchmark | figure | value | goal | met? |" in summary and "| data |" in summary and "| gpu |" in summary


def test_gpu_benchmarks_import_no_ray():
    code = "import sys, bench.gpu, bench.gpu_train; assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_gpu_train_runs_both_configs_and_scores_the_exported_model(tmp_path):
    """The GPU training benchmark end to end at smoke size on the CPU: feed rates, two runs, .pt2 tested."""
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_train", "--model", "small", "--spec", "easy", "--data", str(data), "--n", "300",
                           "--minutes", "0.01", "--feed-steps", "2", "--test", str(data / "val-00000.parquet"), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads((tmp_path / "gpu_train.json").read_text())
    assert r["data"]["train"] == 270 and r["data"]["val"] == 30
    assert all(v > 0 for v in r["feed_images_per_s"].values())
    assert set(r["runs"]) == {"reference", "ctc"} and r["runs"]["ctc"]["config"]["head"] == "ctc"
    for run in r["runs"].values():
        assert run["curve"][-1]["step"] == run["config"]["max_steps"] >= 20
        assert 0 <= run["test"]["val-00000"]["full_match"] <= 1 and run["test"]["val-00000"]["n"] == 30
    assert (tmp_path / "gpu_train.png").stat().st_size > 0
