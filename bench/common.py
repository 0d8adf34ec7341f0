"""What every benchmark shares: where things go, the cached dataset, the machine's description, JSON out.

Imports nothing from Ray, so `bench.gpu` and `bench.data` run on a box without it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psutil

HERE = Path(__file__).parent
RESULTS = HERE / "results"  # committed: JSON, summary.md, PNGs
CACHE = HERE / ".cache"  # git-ignored: datasets, Ray storage
DATA_N = dict(full=4000, quick=400)  # the benchmark dataset: 'easy', 90% train / 10% val


@dataclass(frozen=True)
class Row:
    """One line of summary.md."""

    benchmark: str
    figure: str
    value: float | str
    goal: str = ""
    met: bool | None = None  # None = no goal


def easy_data(quick: bool = False) -> str:
    """The benchmark dataset, generated once into bench/.cache (seeded labels; images can't be seeded)."""
    from trainable.data import generate

    n = DATA_N["quick" if quick else "full"]
    path = CACHE / f"easy-{n}"
    if not (path / "meta.json").exists():
        generate("easy", n, path, seed=0, processes=os.cpu_count())
    return str(path)


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # e.g. no Ray on the GPU box
        return "not installed"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return dict(platform=platform.platform(), cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
                torch=version("torch"), ray=version("ray"),
                date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                load_average_1_5_15=[round(x, 2) for x in os.getloadavg()])  # when written: > cores means others shared the CPU


def write_json(out, name: str, result: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(dict(result, machine=machine()), indent=2))
    return path


def read_json(out, name: str) -> dict | None:
    path = Path(out) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def median(xs) -> float:
    return float(statistics.median(xs))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def standalone(name: str, run) -> None:
    """`python -m bench.NAME [--quick] [--out DIR]`: one benchmark without the summary."""
    p = argparse.ArgumentParser(prog=f"python -m bench.{name}")
    p.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of NAME.json and plots")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(json.dumps(run(args.out, args.quick), indent=2, default=str))


def cpu_group(pid: int, title: str) -> str:
    """Kind of process of a sweep or training run, from its pid and Ray's process title."""
    if pid == os.getpid():
        return "driver"
    if title.startswith("ray::RayTrainWorker"):
        return "train workers"
    if title.startswith("ray::"):
        return "other Ray actors"
    return "Ray system processes"


class ProcessSampler:
    """Samples this process and its descendants (an embedded Ray's GCS, raylet, actors, workers) every
    `every` seconds with psutil: per pid its title (Ray sets `ray::ClassName`), CPU seconds, RSS and PSS.

    Use as a context manager; `.samples` is a list of (time, {pid: (title, cpu_s, rss, pss)}). PSS
    (smaps_rollup, ~2 ms per process) is read on every `pss_every`-th pass only, else it is -1: at
    every pass it would cost the measured run several % of a core.
    """

    def __init__(self, every: float = 0.5, pss_every: int = 0):
        self.every, self.pss_every, self.samples = every, pss_every, []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    @staticmethod
    def _read(proc: psutil.Process, pss: bool):
        try:
            with proc.oneshot():
                cpu, title = proc.cpu_times(), " ".join(proc.cmdline())[:60]
                mem = proc.memory_full_info() if pss else proc.memory_info()
            return title, cpu.user + cpu.system, mem.rss, mem.pss if pss else -1
        except psutil.Error:  # exited (or became a zombie) while being read
            return None

    def _run(self):
        me = psutil.Process()
        while not self._done.is_set():
            pss = bool(self.pss_every) and len(self.samples) % self.pss_every == 0
            infos = {p.pid: self._read(p, pss) for p in [me, *me.children(recursive=True)]}
            self.samples.append((time.time(), {pid: info for pid, info in infos.items() if info is not None}))
            self._done.wait(self.every)

    def cpu_seconds(self, start: float, end: float, group=lambda pid, title: title) -> dict[str, float]:
        """CPU seconds used between two times, summed by `group(pid, title)` (processes born in between count from 0).

        A pid's title is the first Ray title (`ray::...`) it showed, else its last non-empty one: an exiting
        process shows an empty command line, a starting Ray worker `ray::IDLE`.
        """
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {}
        first, cpu, titles, out = inside[0][1], {}, {}, {}
        for _, procs in inside:
            for pid, (title, used, _, _) in procs.items():
                cpu[pid] = used
                if title and (pid not in titles or not titles[pid].startswith("ray::") or titles[pid] == "ray::IDLE"):
                    titles[pid] = title
        for pid, used in cpu.items():
            key = group(pid, titles.get(pid, ""))
            out[key] = out.get(key, 0.0) + used - (first[pid][1] if pid in first else 0.0)
        return out

