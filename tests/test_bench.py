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


def test_gpu_benchmark_imports_no_ray():
    code = "import sys, bench.gpu; assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
