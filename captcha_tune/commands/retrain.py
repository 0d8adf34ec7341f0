"""captcha-tune retrain EXP: the best config to completion (no ASHA), exported, optionally tested."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("retrain", help="retrain the best config of a sweep to completion and export it")
    p.add_argument("exp", help="experiment path STORAGE/NAME")
    p.add_argument("--workers", type=int, default=None, help="DDP workers (default: the sweep's per-trial count)")
    p.add_argument("--gpus-per-worker", type=float, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="step cap (default: 20 trial lengths; moved up to the end of a cosine cycle); "
                   "the run ends earlier when validation stops improving")
    p.add_argument("--patience", type=int, default=5, help="evaluations without a better score before stopping on a plateau (at least a whole "
                   "cosine cycle of them, and never while the score rose in each of the last 3; 0 = run to the cap)")
    p.add_argument("--eval-epochs", type=float, default=1.0, help="epochs of the training set between evaluations (at least 4 per cosine cycle)")
    p.add_argument("--time-budget", type=float, default=0.0, help="seconds of training after which the run ends at its next evaluation (0 = none)")
    p.add_argument("--trial", default=None, metavar="TRIAL_ID", help="retrain this trial's config (a trial id from the leaderboard) "
                   "instead of the best one's")
    p.add_argument("--name", default="retrain", help="run name under EXP/retrain; the same name resumes")
    p.add_argument("--out", default=None, help="exported model path (default: the run folder's model.pt2)")
    p.add_argument("--data", default=None, help="train on this dataset instead of the sweep's (same charset)")
    p.add_argument("--init-from", default=None, metavar="MODEL.pt2|EXP|RUN",
                   help="start from this model's weights, mapped by symbol (default: the sweep's own --init-from, if any)")
    p.add_argument("--test", default=None, help="held-out Parquet or dataset to evaluate the exported model on")
    p.add_argument("--mlflow", default=None, metavar="URI", help="log the run and its exported model as an MLflow run "
                   "(sqlite:///PATH/mlflow.db or http://HOST:PORT), in the sweep's experiment")
    p.set_defaults(func=run)


def run(args) -> None:
    from results import tracking, transfer
    from results.experiment import load_sweep
    from results.retrain import retrain
    from trainable import storage

    uri = args.mlflow and tracking.check(args.mlflow)  # a bad tracking URI: one line, before Ray starts
    init_from = args.init_from and transfer.source_folder(args.init_from)  # ... and a missing or foreign source
    experiment = load_sweep(args.exp)["settings"]["name"] if uri else None  # the sweep's trials are runs there too
    with tracking.train_run(uri, experiment, f"retrain/{args.name}", storage.join(storage.normalize(args.exp), "retrain", args.name)) as logs:
        s = retrain(args.exp, args.workers, args.gpus_per_worker, args.max_steps, args.patience, args.name, args.out, args.test, args.data, logs,
                    time_budget_s=args.time_budget, eval_epochs=args.eval_epochs, init_from=init_from, trial=args.trial)
        for log in logs:
            log.log_file(s["model"])
    m = s["best_metrics"]
    print(f"best val_full_match {m.get('val_full_match', 0):.4f} at step {m.get('step')} "
          f"(sweep best {s['sweep_best']['val_full_match']:.4f}); model {s['model']}")
    if "test" in s:
        print(f"test full match {s['test']['full_match']:.4f}  char acc {s['test']['char_acc']:.4f}  n {s['test']['n']}")
