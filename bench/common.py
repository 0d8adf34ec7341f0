"""What every benchmark shares: where things go, the cached dataset, the machine, JSON out, a process sampler.

Imports neither torch nor Ray, so `bench.gpu_train` runs on a box without Ray.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import platform
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psutil

RESULTS = Path(__file__).parent / "results"  # committed: JSON, summary.md, PNGs
CACHE = Path(__file__).parent / ".cache"  # git-ignored: datasets, Ray storage


@dataclass(frozen=True)
class Row:  # one line of summary.md
    benchmark: str
    figure: str
    value: float | str
    goal: str = ""
    met: bool | None = None  # None = no goal


def easy_data(quick: bool = False) -> str:
    """The benchmark dataset ('easy', 90% train / 10% val), generated once (seeded labels; images can't be seeded)."""
    from trainable.data import generate

    n = 400 if quick else 4000
    path = CACHE / f"easy-{n}"
    if not (path / "meta.json").exists():
        generate("easy", n, path, seed=0, processes=os.cpu_count())
    return str(path)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    installed = {d.name: d.version for d in metadata.distributions()}  # no Ray on the GPU box
    return dict(platform=platform.platform(), cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
                torch=installed.get("torch", "not installed"), ray=installed.get("ray", "not installed"),
                date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                load_average_1_5_15=[round(x, 2) for x in os.getloadavg()])  # when written: > cores means others shared the CPU


def write_json(out, name: str, result: dict, fig=None) -> None:
    """OUT/NAME.json with the machine, and OUT/NAME.png of a matplotlib figure when given one."""
    Path(out).mkdir(parents=True, exist_ok=True)
    if fig is not None:
        fig.savefig(Path(out) / f"{name}.png", dpi=110)
    (Path(out) / f"{name}.json").write_text(json.dumps(dict(result, machine=machine()), indent=2))


def read_json(out, name: str) -> dict | None:
    path = Path(out) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def cpu_group(pid: int, title: str) -> str:
    """Kind of process of a sweep or training run, from its pid and Ray's process title."""
    if pid == os.getpid():
        return "driver"
    if title.startswith("ray::"):
        return "train workers" if title.startswith("ray::RayTrainWorker") else "other Ray actors"
    return "Ray system processes"


class ProcessSampler(threading.Thread):
    """Samples this process and its descendants (an embedded Ray's) every `every` seconds; a context manager.

    `.samples`: [(time, {pid: (title, cpu_s, rss, pss)})], the title the command line (Ray's `ray::ClassName`). PSS
    (~2 ms a process: costly to the measured run) is read on every `pss_every`-th pass only, else it is -1."""

    def __init__(self, every: float = 0.5, pss_every: int = 0):
        super().__init__(daemon=True)
        self.every, self.pss_every, self.samples, self.done = every, pss_every, [], threading.Event()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()

    def run(self):
        me = psutil.Process()
        while not self.done.is_set():
            pss, procs = bool(self.pss_every) and len(self.samples) % self.pss_every == 0, {}
            for proc in [me, *me.children(recursive=True)]:
                try:
                    with proc.oneshot():
                        cpu, title = proc.cpu_times(), " ".join(proc.cmdline())[:60]
                        mem = proc.memory_full_info() if pss else proc.memory_info()
                    procs[proc.pid] = (title, cpu.user + cpu.system, mem.rss, mem.pss if pss else -1)
                except psutil.Error:  # exited (or became a zombie) while being read
                    pass
            self.samples.append((time.time(), procs))
            self.done.wait(self.every)

    def cpu_seconds(self, start: float, end: float, group=cpu_group) -> dict[str, float]:
        """CPU seconds used between two times, summed by `group(pid, title)` (processes born in between count from 0).
        A pid's title: its first Ray title but `ray::IDLE` (a starting worker), else its last non-empty one."""
        inside = [procs for t, procs in self.samples if start <= t <= end]
        if len(inside) < 2:
            return {}
        cpu, titles, out = {}, {}, collections.Counter()
        for procs in inside:
            for pid, (title, used, _, _) in procs.items():
                cpu[pid] = used - (inside[0][pid][1] if pid in inside[0] else 0.0)
                if title and (pid not in titles or not titles[pid].startswith("ray::") or titles[pid] == "ray::IDLE"):
                    titles[pid] = title
        for pid, used in cpu.items():
            out[group(pid, titles.get(pid, ""))] += used
        return dict(out)
