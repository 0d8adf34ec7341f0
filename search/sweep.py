"""`run_sweep`: Optuna (TPE, GP or random) proposes, ASHA prunes, each trial is a multi-worker Ray Train run.

Re-running the same command resumes a sweep; a larger --num-samples extends a finished one with its history."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass

from ray.tune import Callback
from ray.tune.search import ConcurrencyLimiter

from search import scheduler, status, warm_start
from search.searcher import SEARCHERS, ExtendableSearch, build_searcher
from search.space import check_values, fit_to_data, materialize, parse_space, start_points
from trainable import storage
from trainable.config import TrainConfig, setting
from trainable.data import SPECS, dataset_meta
from trainable.errors import UserError
from trainable.worker import DivergedError

STATE = "sweep.json"  # everything a later command needs to know about the sweep


@dataclass(frozen=True)
class SweepSettings:
    """How a sweep runs; `captcha-tune sweep`'s flags are generated from these fields (trainable.config.add_arguments)."""

    storage: str = setting("experiments", "local folder or URI (s3://, gs://, file://) holding the experiment")
    name: str = setting("sweep", "experiment name: STORAGE/NAME holds everything; re-running the same name resumes it")
    data: str | None = setting(None, "dataset folder (default: generate --spec data into the experiment)", kind=str)
    spec: str = setting("easy", "spec of generated data", choices=tuple(SPECS))
    data_n: int = setting(6000, "images to generate (default: the preset's)")
    num_samples: int = setting(8, "trials in total (the reference config first, the recommended one second); a larger "
                                  "number extends a finished sweep of the same --name")
    workers_per_trial: int = setting(2, "DDP workers in each trial (default: the preset's)")
    gpus_per_worker: float = setting(0.0, "GPUs per worker; 0.5 or less packs trials on a card (default: the preset's)")
    cpus_per_worker: float = setting(1.0, "CPUs per worker")
    max_concurrent: int = setting(0, "trials at a time (0 = what the cluster fits)")
    time_budget_s: float = setting(0.0, "seconds for the whole sweep (0 = none)", flag="time-budget")
    seed: int = setting(0, "searcher seed (and of generated labels)")
    searcher: str = setting("tpe", "Optuna sampler: tpe (multivariate TPE), gp (Gaussian process) or random", choices=SEARCHERS)
    recommended: bool = setting(True, "leave out the second start point, captcha-tune's recommended config (search/space.py RECOMMENDED)")
    scheduler: str = setting("asha", "early stopping of weak trials ('none': every trial runs to max_steps; benchmarks)", choices=("asha", "none"))
    optuna_storage: str | None = setting(None, "Optuna RDB URL for the live study (default: EXP/optuna.db for local storage)", kind=str)
    warm_start: str | None = setting(None, "seed a new sweep's searcher with the finished trials of an earlier experiment STORAGE/NAME", kind=str)
    # Off: Tune can reuse a trial's actor only when its function has returned, and an ASHA-stopped trial's function
    # is still inside TorchTrainer.fit(); Tune then marks the *next* trial errored. (On saves ~2 s a trial.)
    reuse_actors: bool = setting(False, "reuse trial actors (off: see the comment above)")
    mlflow: str | None = setting(None, "log each trial as an MLflow run (sqlite:///PATH/mlflow.db or http://HOST:PORT), in the experiment --name", kind=str)
    auto_steps: bool = setting(False, "size the trial budget from the data's label length (search.space.fit_to_data); the CLI's default")


NOT_FLAGS = ("reuse_actors", "auto_steps")  # SweepSettings fields the command sets itself


def experiment_path(s: SweepSettings) -> str:
    return storage.join(storage.normalize(s.storage), s.name)


# Settings a sweep can't change once it ran: trials made with others would not be comparable. Only num_samples
# may grow (extend a sweep); where it runs (storage, name) and how many trials at a time may change. A warm start
# seeds a new sweep only: a resume keeps the study it has (and sweep.json the --warm-start it started with).
# --mlflow is not changeable: a resumed Tuner restores its pickled callbacks, so a new URI would be ignored.
CHANGEABLE = ("storage", "name", "num_samples", "max_concurrent", "warm_start")
FLAGS = {"time_budget_s": "time-budget"}  # setting -> its flag, where the names differ


def prepare_data(s: SweepSettings, exp: str) -> str:
    """The dataset every trial reads, made once on the driver before any trial starts."""
    from trainable.data import generate, read_meta

    if s.data:
        if not storage.exists(storage.join(storage.normalize(s.data), "meta.json")):
            read_meta(s.data)  # raises the one-line "not a dataset" error
        return storage.normalize(s.data)
    path = storage.join(exp, "data")
    if not storage.exists(storage.join(path, "meta.json")):
        print(f"generating {s.data_n} '{s.spec}' captchas into {path}", flush=True)
        if storage.is_uri(path):  # render locally, then put it on the shared storage for every node
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                storage.upload(generate(s.spec, s.data_n, tmp, seed=s.seed), path)
        else:
            generate(s.spec, s.data_n, path, seed=s.seed)
    return path


@dataclass(frozen=True)
class Prepared:
    """What prepare_sweep settled before Ray starts (on a resume: the settings and base that sweep.json holds)."""

    settings: SweepSettings
    base: TrainConfig  # data_dir: the prepared dataset
    space: dict
    exp: str
    resuming: bool
    rungs: list[int]
    longest_warmup: int

    @property
    def state_file(self) -> str:
        return storage.join(self.exp, STATE)


def prepare_sweep(s: SweepSettings, base: TrainConfig, space_overrides: dict | None = None) -> Prepared:
    """Everything that needs no Ray, so that a bad flag, range or storage is one line and nothing started: the
    searcher and space, the storage (from the driver), a resume, extension or warm start, and the data."""
    from cluster.storage_check import check_storage

    if s.searcher not in SEARCHERS:
        raise UserError(f"unknown searcher {s.searcher!r}; use one of {', '.join(SEARCHERS)}")
    fractions = parse_space(space_overrides)
    space = materialize(fractions, base.max_steps)  # bad bounds fail here
    check_values(space, base)  # ... and so do values no trial could train with
    exp = experiment_path(s)
    check_storage(exp)  # before anything reads it: unreachable storage is one line, not a traceback
    state_file = storage.join(exp, STATE)
    resuming = storage.exists(state_file)
    earlier = None  # a missing or unreadable earlier experiment is one line, before any data is made
    if s.warm_start and not resuming:
        if warm_start.study_url(exp, s.optuna_storage) is None:
            raise UserError("--warm-start needs --optuna-storage or a local --storage: an s3:// sweep without one keeps its study in memory")
        earlier = warm_start.read_earlier(s.warm_start)
    data_dir = prepare_data(s, exp)
    fractions, base = fit_to_data(fractions, base.replace(data_dir=data_dir), dataset_meta(data_dir), s.auto_steps)
    space = materialize(fractions, base.max_steps)
    check_values(space, base)
    if resuming:
        saved = json.loads(storage.read_text(state_file))
        check_same_sweep(exp, saved, s, base, space)
        if s.num_samples > saved["settings"]["num_samples"]:  # extend: ExtendableSearch reads the new total on restore
            print(f"extending {exp} from {saved['settings']['num_samples']} to {s.num_samples} trials", flush=True)
            saved["settings"]["num_samples"] = s.num_samples
            storage.write_text(state_file, json.dumps(saved, indent=2))
        if s.warm_start and s.warm_start != saved["settings"].get("warm_start"):
            print(f"--warm-start {s.warm_start} ignored: it seeds a new sweep, and {exp} continues with its own history", flush=True)
        s = SweepSettings(**{**saved["settings"], "max_concurrent": s.max_concurrent})
        base = TrainConfig.from_dict(saved["base"])
    elif earlier is not None:  # the study is seeded before the first trial
        seeds = warm_start.map_trials(earlier, fractions, base.max_steps)
        added = warm_start.seed_study(warm_start.study_url(exp, s.optuna_storage), warm_start.study_name(s.name), seeds, fractions, base.max_steps)
        print(seeds.message(already=not added), flush=True)
    base = base.replace(data_dir=data_dir)
    longest_warmup = int(space["warmup_steps"].high) if "warmup_steps" in space else base.warmup_steps
    return Prepared(s, base, space, exp, resuming, scheduler.rungs(base.max_steps, base.eval_every, longest_warmup), longest_warmup)


def build_tuner(p: Prepared, points: list[dict], concurrent: int, train=None, callbacks=()):
    """The Tuner: Optuna proposes (at most `concurrent` trials at a time), ASHA prunes, each trial is a Train run.
    A sweep that ran before is restored from its experiment state instead. train: see search.trial.run_trial."""
    from ray import tune

    from cluster.connect import on_head
    from search.trial import run_trial

    s, base = p.settings, p.base
    run = dict(workers=s.workers_per_trial, gpus_per_worker=s.gpus_per_worker, cpus_per_worker=s.cpus_per_worker,
               storage=storage.join(p.exp, "train"))
    # The trial itself holds no CPU: its Train workers do (a CPU here would starve a 2-worker trial on 2 CPUs).
    # It runs on the head node, and so does its Train controller (placed beside it): a lost worker node then
    # costs a trial a restart from its checkpoint, never the trial (Tune does not retry a lost trial actor).
    trainable = tune.with_parameters(run_trial, base=base.to_dict(), run=run, exp=p.exp, train=train)
    trainable = tune.with_resources(trainable, {"cpu": 0, **on_head()})
    if p.resuming and tune.Tuner.can_restore(p.exp):
        print(f"resuming {p.exp}", flush=True)
        return tune.Tuner.restore(p.exp, trainable=trainable, resume_unfinished=True, resume_errored=False)

    # A total that can grow: ExtendableSearch reads it from sweep.json when a later command restores the sweep.
    search = ExtendableSearch(ConcurrencyLimiter(build_searcher(s, p.space, points, p.exp), max_concurrent=concurrent), p.state_file)
    asha = None
    if s.scheduler == "asha" and p.rungs:
        asha = scheduler.build_asha(base.max_steps, p.rungs, p.exp)
    callbacks = [RecordErrors(p.exp), *callbacks]  # callbacks: e.g. MLflow's, which the command builds (results/tracking.py)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search, scheduler=asha, num_samples=s.num_samples,
                                    time_budget_s=s.time_budget_s or None, reuse_actors=s.reuse_actors),
        run_config=tune.RunConfig(name=s.name, storage_path=storage.normalize(s.storage), verbose=1, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )


def run_sweep(s: SweepSettings, base: TrainConfig, space_overrides: dict | None = None, command: str = "", train=None,
              callbacks=()) -> str:
    """Launch (or resume) the sweep; returns the experiment path. train: see search.trial.run_trial (tests inject faults)."""
    from cluster.connect import check_fits, init_ray, max_concurrent_trials, node_resources
    from cluster.storage_check import check_storage

    # [1] Prepare the experiment before Ray starts: searcher, space, storage, resume/extend/warm start, data.
    p = prepare_sweep(s, base, space_overrides)
    s, base, exp = p.settings, p.base, p.exp

    # [2] Start Ray or join the cluster in RAY_ADDRESS; check that a trial fits and every node can use the storage.
    init_ray()
    check_fits(s.workers_per_trial, s.cpus_per_worker, s.gpus_per_worker)
    if len(node_resources()) > 1:  # with one node, this driver runs on it (embedded Ray, a job on a lone head): [1] checked it
        check_storage(exp)
    concurrent = s.max_concurrent or max_concurrent_trials(s.workers_per_trial, s.cpus_per_worker, s.gpus_per_worker)

    # [3] Record the sweep for later commands (resume, extend, results), and say what will run.
    points = start_points(p.space, base.max_steps, base, s.recommended)
    if not p.resuming:
        storage.write_text(p.state_file, json.dumps(dict(
            settings=dataclasses.asdict(s), base=base.to_dict(), space=space_json(p.space),
            reference=points[0], recommended=points[1] if len(points) > 1 else None, rungs=p.rungs, command=command, created=time.time()), indent=2))
    if s.scheduler == "asha":
        print(scheduler.rung_plan(base.max_steps, base.eval_every, p.longest_warmup, s.num_samples), flush=True)
    else:
        print("no early stopping: every trial runs to max_steps", flush=True)
    print(f"{s.num_samples} trials x {s.workers_per_trial} workers of {base.max_steps} steps each"
          + (" (sized from the data's label length)" if s.auto_steps else "") + f", {concurrent} at a time; experiment {exp}", flush=True)
    quiet_divergence()

    # [4] Build the Tuner and run it.
    tuner = build_tuner(p, points, concurrent, train, callbacks)
    started = time.monotonic()
    results = tuner.fit()

    # [5] The trials that were still running when the time budget ran out: recorded as stopped by it. Tune saw no
    # error in them; an `errored` record is the trial's function seeing its Train run torn down by that stop.
    if s.time_budget_s and time.monotonic() - started >= s.time_budget_s:
        for r in results:
            last = r.metrics or {}
            if r.error is None and "trial_id" in last and status.read(exp, last["trial_id"])["kind"] in ("running", "errored"):
                status.record(exp, last["trial_id"], "budget", last.get("step"))
    return exp


class RecordErrors(Callback):
    """Records `errored` for a trial whose actor failed before its function could record how it ended (search/trial.py
    records every end it sees itself), so a trial's fate is always a status record (search/status.py)."""

    def __init__(self, exp: str):
        self.exp = exp

    def on_trial_error(self, iteration, trials, trial, **info):
        if status.read(self.exp, trial.trial_id)["kind"] == "running":
            error = trial.get_error()
            status.record(self.exp, trial.trial_id, "errored", reason=(str(error).strip() or "error").splitlines()[-1][:300])


def space_json(space: dict) -> dict:
    return json.loads(json.dumps({k: dataclasses.asdict(v) for k, v in space.items()}))


def check_same_sweep(exp: str, saved: dict, s: SweepSettings, base: TrainConfig, space: dict) -> None:
    """A resume or extension must ask for the sweep that ran: one line naming the first setting that differs."""
    advice = "resume with the same flags (only --num-samples may grow) or pick a new --name"
    if s.num_samples < saved["settings"]["num_samples"]:
        raise UserError(f"{exp} already runs {saved['settings']['num_samples']} trials; --num-samples can only grow, "
                        f"not shrink to {s.num_samples}")
    now = {**dataclasses.asdict(s), **{k: v for k, v in base.to_dict().items() if k != "data_dir"}}
    was = {**saved["settings"], **{k: v for k, v in saved["base"].items() if k != "data_dir"}}
    for name in now:
        if name not in CHANGEABLE and name in was and json.loads(json.dumps(now[name])) != was[name]:
            raise UserError(f"{exp} ran with --{FLAGS.get(name, name.replace('_', '-'))} {was[name]}, not {now[name]}; {advice}")
    changed = sorted(k for k in set(space_json(space)) | set(saved["space"]) if space_json(space).get(k) != saved["space"].get(k))
    if changed:
        raise UserError(f"{exp} ran with another search space ({', '.join(changed)} differ: --bound/--space); {advice}")


class _DivergedOneLine(logging.Filter):
    """Tune logs a failed trial with its traceback; for a divergence (a config's LR too high, not a bug) one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        diverged = find_diverged(record.exc_info[1] if isinstance(record.exc_info, tuple) else None)
        if diverged is not None:
            reason = str(diverged).strip().splitlines()[-1]
            record.msg, record.args, record.exc_info, record.exc_text = f"{record.getMessage()}: {reason}", (), None, None
        return True


def find_diverged(exc: BaseException | None):
    """The DivergedError behind what Tune logged (Ray re-raises it as a RayTaskError subclass of it, or as its cause)."""
    seen, found = set(), None
    while exc is not None and id(exc) not in seen:
        found = exc if isinstance(exc, DivergedError) else found  # the innermost: the worker's own, whose str is its reason
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return found


def quiet_divergence() -> None:
    log = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _DivergedOneLine) for f in log.filters):
        log.addFilter(_DivergedOneLine())


def main_command() -> str:
    return " ".join(["captcha-tune", *sys.argv[1:]])
