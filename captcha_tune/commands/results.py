"""captcha-tune results: leaderboard, tables, plots and a markdown report of a sweep (finished or running)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("results", help="leaderboard, plots and report.md of a sweep (also while it runs)")
    p.add_argument("exp", help="sweep experiment folder STORAGE/NAME (local or s3:// / gs://)")
    p.add_argument("--out", default=None, help="folder for report.md, the plots and the tables (default: EXP/results)")
    p.add_argument("--quiet", action="store_true", help="write them without printing the leaderboard (`sweep` has printed it)")
    p.set_defaults(func=run)


def run(args) -> None:
    import os

    from results.experiment import print_summary
    from results.report import write_report

    if not args.quiet:
        print_summary(args.exp)
        print()
    report = write_report(args.exp, args.out)
    out = os.path.dirname(report)
    print(f"report: {report}")
    print(f"trials: {os.path.join(out, 'trials.parquet')}")
    print(f"history: {os.path.join(out, 'history.parquet')}")
