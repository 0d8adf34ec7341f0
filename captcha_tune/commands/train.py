"""captcha-tune train: one multi-worker Ray Train (DDP) run of the captcha CNN."""

from __future__ import annotations

import json

from trainable.config import SMOKE, add_arguments, from_arguments
from trainable.driver import RunSettings
from trainable.errors import UserError

SETTINGS_FILE = "train.json"  # in the run folder: the settings a resume must repeat
CHANGEABLE = ("max_steps",)  # a resume may train further


def register(sub) -> None:
    p = sub.add_parser("train", help="train the captcha CNN with N DDP workers on Ray Train")
    add_arguments(p, RunSettings)
    p.add_argument("--smoke", action="store_true", help=f"a few-minute CPU run: {SMOKE}")
    p.add_argument("--mlflow", default=None, metavar="URI",
                   help="log the run as an MLflow run (sqlite:///PATH/mlflow.db or http://HOST:PORT), in the experiment 'train'")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from cluster.connect import check_fits, init_ray
    from results import tracking, transfer
    from trainable import storage
    from trainable.data import read_meta
    from trainable.driver import run_training
    from trainable.progress import Progress

    cfg = from_arguments(args, SMOKE if args.smoke else None)
    meta = read_meta(cfg.data_dir)  # fail on a missing dataset before Ray starts
    if args.init_from:  # ... and on a source that can't start this model (its shape settings: defaults under the flags)
        folder, shape = transfer.source(args.init_from)
        cfg = from_arguments(args, {**(SMOKE if args.smoke else {}), **shape}).replace(init_from=folder)
        transfer.check(cfg, meta)
    uri = args.mlflow and tracking.check(args.mlflow)  # ... and on a bad tracking URI
    run = from_arguments(args, cls=RunSettings)
    run_dir, settings = storage.join(storage.normalize(run.storage), run.name), run_settings(cfg, run.workers)
    check_same_run(run_dir, settings)  # ... and on a resume that asks for another run
    init_ray()
    check_fits(run.workers, run.cpus_per_worker, run.gpus_per_worker)
    storage.write_text(storage.join(run_dir, SETTINGS_FILE), json.dumps(settings, indent=2))
    with tracking.train_run(uri, "train", run.name, run_dir) as logs:
        summary = run_training(cfg, run, callbacks=[Progress(cfg.max_steps, storage.join(run_dir, "history.jsonl"), cfg.time_budget_s), *logs])
    m = summary["best_metrics"]
    print(f"best val_full_match {m.get('val_full_match', 0):.4f} at step {m.get('step')}; checkpoint {summary['best_checkpoint']}")
    print(json.dumps({k: summary["final_metrics"].get(k) for k in ("step", "val_full_match", "val_char_acc", "val_loss")}))


def run_settings(cfg, workers: int) -> dict:
    """What a run is: its training config (data_dir as an absolute path or URI) and its number of DDP workers."""
    from trainable import storage

    return {**cfg.to_dict(), "data_dir": storage.normalize(cfg.data_dir), "workers": workers}


def check_same_run(run_dir: str, settings: dict) -> None:
    """A `train --name` that resumes must ask for the run that ran: one line naming the first setting that differs."""
    from trainable import storage

    path = storage.join(run_dir, SETTINGS_FILE)
    if not storage.exists(path):
        return
    was = json.loads(storage.read_text(path))
    for name, now in settings.items():
        if name not in CHANGEABLE and name in was and json.loads(json.dumps(now)) != was[name]:
            raise UserError(f"{run_dir} ran with --{name.replace('_', '-')} {was[name]}, not {now}; "
                            "resume with the same flags (only --max-steps may change) or pick a new --name")
