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
    from search.sweep import NOT_FLAGS, SweepSettings

    p = sub.add_parser("sweep", help="hyperparameter search: Optuna TPE + ASHA, each trial a DDP run")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="budget and model size (cpu: ~10 min on 2 cores)")
    p.add_argument("--space", default=None, help="JSON/YAML file of range overrides: {peak_lr: {low: 1e-4, high: 1e-2}}")
    p.add_argument("--bound", action="append", default=[], help="range override NAME=LOW:HIGH or NAME=A,B (repeatable)")
    p.add_argument("--resume", action="store_true", help="resume an interrupted sweep (re-running the same command does too)")
    add_arguments(p, SweepSettings, skip=NOT_FLAGS)
    # the trials' training settings; seed is the sweep's, time_budget_s the sweep's --time-budget
    add_arguments(p, skip=("data_dir", "seed", "time_budget_s"))
    p.set_defaults(func=run)


def run(args) -> None:
    import dataclasses

    from results.experiment import check_errored, print_summary
    from results import tracking, transfer
    from search.space import load_overrides, parse_space
    from search.sweep import NOT_FLAGS, SweepSettings, experiment_path, main_command, run_sweep
    from trainable import storage
    from trainable.data import IMAGE_SIZE, SPECS, read_meta

    preset = PRESETS[args.preset]
    base = from_arguments(args, preset["train"])
    if args.init_from:  # a source that can't start the trials' model: one line, before Ray starts
        folder, shape = transfer.source(args.init_from)
        base = from_arguments(args, {**preset["train"], **shape}).replace(init_from=folder)
        transfer.check(base, read_meta(args.data) if args.data else dict(SPECS[args.spec or "easy"], image_size=IMAGE_SIZE))
    overrides = load_overrides(args.space, args.bound)
    parse_space(overrides)  # bad bounds: one line, before Ray starts
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(SweepSettings) if f.name not in NOT_FLAGS and getattr(args, f.name) is not None}
    given.setdefault("data_n", preset["n"])
    workers, gpus = given.get("workers_per_trial", preset["workers"]), given.get("gpus_per_worker", preset["gpus"])
    if args.preset == "gpu":
        workers, gpus = plan_gpus(args, base, given["data_n"])
    if given.get("mlflow"):
        given["mlflow"] = tracking.check(given["mlflow"])
    s = SweepSettings(**{**given, "workers_per_trial": workers, "gpus_per_worker": gpus, "auto_steps": args.max_steps is None})
    if args.resume and not storage.exists(storage.join(experiment_path(s), "sweep.json")):
        raise FileNotFoundError(f"nothing to resume at {experiment_path(s)}; check --storage and --name")
    callbacks = tracking.sweep_callbacks(s.mlflow, s.name) if s.mlflow else ()  # a resumed sweep restores its own
    exp = run_sweep(s, base, overrides, command=main_command(), callbacks=callbacks)
    check_errored(print_summary(exp))


def plan_gpus(args, base, data_n: int) -> tuple[int, float]:
    """The gpu preset's (workers per trial, GPUs per worker) on the GPUs Ray sees, the user's flags kept and checked."""
    from cluster.connect import init_ray, node_resources
    from cluster.gpus import card_bytes, plan_gpu, trial_bytes

    init_ray()
    workers = args.workers_per_trial or 1
    plan = plan_gpu(node_resources(), args.workers_per_trial, args.gpus_per_worker, args.max_concurrent or 0,
                    trial_bytes(base, data_n, workers), card_bytes())
    print(plan, flush=True)
    return plan.workers_per_trial, plan.gpus_per_worker
