"""captcha-tune retrain EXP: the best config to completion (no ASHA), exported, optionally tested."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("retrain", help="retrain the best config of a sweep to completion and export it")
    p.add_argument("exp", help="experiment path STORAGE/NAME")
    p.add_argument("--workers", type=int, default=None, help="DDP workers (default: the sweep's per-trial count)")
    p.add_argument("--gpus-per-worker", type=float, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="default: the sweep's trial budget; step settings scale with it")
    p.add_argument("--patience", type=int, default=5, help="evaluations past warmup without improvement before stopping (at least one cosine period of them; 0 = never stop early)")
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
        s = retrain(args.exp, args.workers, args.gpus_per_worker, args.max_steps, args.patience, args.name, args.out, args.test, args.data, logs, init_from=init_from)
        for log in logs:
            log.log_file(s["model"])
    m = s["best_metrics"]
    print(f"best val_full_match {m.get('val_full_match', 0):.4f} at step {m.get('step')} "
          f"(sweep best {s['sweep_best']['val_full_match']:.4f}); model {s['model']}")
    if "test" in s:
        print(f"test full match {s['test']['full_match']:.4f}  char acc {s['test']['char_acc']:.4f}  n {s['test']['n']}")
