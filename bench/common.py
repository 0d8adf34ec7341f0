"""What every benchmark shares: where things go, the cached dataset, the machine, JSON out, a process sampler.

Imports neither torch nor Ray, so `bench.gpu_train` runs on a box without Ray.
"""

from __future__ import annotations

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

HERE = Path(__file__).parent
RESULTS = HERE / "results"  # committed: JSON, summary.md, PNGs
CACHE = HERE / ".cache"  # git-ignored: datasets, Ray storage


@dataclass(frozen=True)
class Row:
    """One line of summary.md."""

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


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # e.g. no Ray on the GPU box
        return "not installed"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return dict(platform=platform.platform(), cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
                torch=version("torch"), ray=version("ray"), date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                load_average_1_5_15=[round(x, 2) for x in os.getloadavg()])  # when written: > cores means others shared the CPU


def write_json(out, name: str, result: dict) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
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
    """Samples this process and its descendants (an embedded Ray's GCS, raylet, actors, workers) every `every`
    seconds with psutil. A context manager; `.samples` is a list of (time, {pid: (title, cpu_s, rss, pss)}).

    The title is the command line (Ray sets `ray::ClassName`). PSS (~2 ms per process) is read on every
    `pss_every`-th pass only, else it is -1: at every pass it would cost the measured run several % of a core.
    """

    def __init__(self, every: float = 0.5, pss_every: int = 0):
        super().__init__(daemon=True)
        self.every, self.pss_every, self.samples, self.done = every, pss_every, [], threading.Event()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()

    @staticmethod
    def read(proc: psutil.Process, pss: bool):
        try:
            with proc.oneshot():
                cpu, title = proc.cpu_times(), " ".join(proc.cmdline())[:60]
                mem = proc.memory_full_info() if pss else proc.memory_info()
            return title, cpu.user + cpu.system, mem.rss, mem.pss if pss else -1
        except psutil.Error:  # exited (or became a zombie) while being read
            return None

    def run(self):
        me = psutil.Process()
        while not self.done.is_set():
            pss = bool(self.pss_every) and len(self.samples) % self.pss_every == 0
            infos = {p.pid: self.read(p, pss) for p in [me, *me.children(recursive=True)]}
            self.samples.append((time.time(), {pid: info for pid, info in infos.items() if info is not None}))
            self.done.wait(self.every)

    def cpu_seconds(self, start: float, end: float, group=cpu_group) -> dict[str, float]:
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
