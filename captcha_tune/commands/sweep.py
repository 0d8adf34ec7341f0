"""captcha-tune sweep: Optuna (TPE/GP/random) + ASHA over multi-worker Ray Train trials (resumable, extendable)."""

from __future__ import annotations


from trainable.config import GPU_MODEL, add_arguments, from_arguments

# Budgets: 'cpu' finishes a real sweep on a 2-core laptop in ~10 minutes; 'gpu' is the original run.
# The cpu preset's batch of 32 (the original: 128) buys 4x the optimizer steps for the same compute: a
# CTC head needs a few hundred steps to leave its all-blank start, whatever the batch.
# The gpu preset's workers and GPUs per worker (None) come from the GPUs Ray sees: cluster/gpus.py plan_gpu.
PRESETS = {
    "cpu": dict(train=dict(max_steps=1200, warmup_steps=20, cosine_period=600, eval_every=100, batch_size=32), workers=2, gpus=0.0, n=6000),
    "gpu": dict(train=dict(GPU_MODEL, eval_every=5000), workers=None, gpus=None, n=100000),
}


def register(sub) -> None:
    p = sub.add_parser("sweep", help="hyperparameter search: Optuna TPE + ASHA, each trial a DDP run")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="budget and model size (cpu: ~10 min on 2 cores)")
    p.add_argument("--storage", default="experiments", help="local folder or s3:// / gs:// URI")
    p.add_argument("--name", default="sweep", help="experiment name; re-running the same name resumes it")
    p.add_argument("--data", default=None, help="dataset folder (default: generate one into the experiment)")
    p.add_argument("--spec", default="easy", choices=["easy", "mixed", "hard"], help="spec of generated data")
    p.add_argument("--data-n", type=int, default=None, help="images to generate")
    p.add_argument("--num-samples", type=int, default=8, help="trials in total (the reference config is the first, the recommended one second); "
                   "a larger number extends a finished sweep of the same --name")
    p.add_argument("--workers-per-trial", type=int, default=None, help="DDP workers in each trial")
    p.add_argument("--gpus-per-worker", type=float, default=None)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at a time (default: what the cluster fits)")
    p.add_argument("--time-budget", type=float, default=0.0, help="seconds for the whole sweep (0 = none)")
    p.add_argument("--seed", type=int, default=0, help="searcher seed (and of generated labels)")
    p.add_argument("--searcher", choices=["tpe", "gp", "random"], default="tpe",
                   help="Optuna sampler: tpe (multivariate TPE), gp (Gaussian process) or random")
    p.add_argument("--no-recommended", dest="recommended", action="store_false",
                   help="leave out the second start point, captcha-tune's recommended config (CTC head, augment 0.3, the reference's schedule)")
    p.add_argument("--scheduler", choices=["asha", "none"], default="asha")
    p.add_argument("--space", default=None, help="JSON/YAML file of range overrides: {peak_lr: {low: 1e-4, high: 1e-2}}")
    p.add_argument("--bound", action="append", default=[], help="range override NAME=LOW:HIGH or NAME=A,B (repeatable)")
    p.add_argument("--optuna-storage", default=None, help="Optuna RDB URL for the live study (default: EXP/optuna.db for local storage)")
    p.add_argument("--warm-start", default=None, metavar="EXP",
                   help="seed a new sweep's searcher with the finished trials of an earlier experiment STORAGE/NAME")
    p.add_argument("--resume", action="store_true", help="resume an interrupted sweep (re-running the same command does too)")
    p.add_argument("--mlflow", default=None, metavar="URI",
                   help="log each trial as an MLflow run (sqlite:///PATH/mlflow.db or http://HOST:PORT), in the experiment --name")
    add_arguments(p, skip=("data_dir", "seed"))
    p.set_defaults(func=run)


def run(args) -> None:
    from results.experiment import check_errored, print_summary
    from results import tracking, transfer
    from search.space import load_overrides, parse_space
    from search.sweep import SweepSettings, experiment_path, main_command, run_sweep
    from trainable import storage
    from trainable.data import IMAGE_SIZE, SPECS, read_meta

    preset = PRESETS[args.preset]
    base = from_arguments(args, preset["train"])
    if args.init_from:  # a source that can't start the trials' model: one line, before Ray starts
        folder, shape = transfer.source(args.init_from)
        base = from_arguments(args, {**preset["train"], **shape}).replace(init_from=folder)
        transfer.check(base, read_meta(args.data) if args.data else dict(SPECS[args.spec], image_size=IMAGE_SIZE))
    overrides = load_overrides(args.space, args.bound)
    parse_space(overrides)  # bad bounds: one line, before Ray starts
    workers, gpus = args.workers_per_trial or preset["workers"], preset["gpus"] if args.gpus_per_worker is None else args.gpus_per_worker
    if args.preset == "gpu":
        workers, gpus = plan_gpus(args, base, args.data_n or preset["n"])
    s = SweepSettings(
        storage=args.storage, name=args.name, data=args.data, spec=args.spec, data_n=args.data_n or preset["n"],
        num_samples=args.num_samples, workers_per_trial=workers, gpus_per_worker=gpus,
        cpus_per_worker=args.cpus_per_worker, max_concurrent=args.max_concurrent, time_budget_s=args.time_budget,
        seed=args.seed, searcher=args.searcher, recommended=args.recommended, scheduler=args.scheduler, optuna_storage=args.optuna_storage,
        warm_start=args.warm_start, mlflow=args.mlflow and tracking.check(args.mlflow), auto_steps=args.max_steps is None,
    )
    if args.resume and not storage.exists(storage.join(experiment_path(s), "sweep.json")):
        raise FileNotFoundError(f"nothing to resume at {experiment_path(s)}; check --storage and --name")
    exp = run_sweep(s, base, overrides, command=main_command())
    check_errored(print_summary(exp))


def plan_gpus(args, base, data_n: int) -> tuple[int, float]:
    """The gpu preset's (workers per trial, GPUs per worker) on the GPUs Ray sees, the user's flags kept and checked."""
    from cluster.connect import init_ray, node_resources
    from cluster.gpus import card_bytes, plan_gpu, trial_bytes

    init_ray()
    workers = args.workers_per_trial or 1
    plan = plan_gpu(node_resources(), args.workers_per_trial, args.gpus_per_worker, args.max_concurrent,
                    trial_bytes(base, data_n, workers), card_bytes())
    print(plan, flush=True)
    return plan.workers_per_trial, plan.gpus_per_worker
