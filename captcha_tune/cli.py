"""`captcha-tune VERB ...`: each verb is a module in captcha_tune/commands with register(subparsers)."""

from __future__ import annotations

import argparse
import importlib
import sys

from trainable.errors import UserError

VERBS = ["data", "train", "evaluate", "sweep", "results", "export", "predict", "retrain"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="captcha-tune", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    for verb in VERBS:
        importlib.import_module(f"captcha_tune.commands.{verb}").register(sub)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
    except (UserError, FileNotFoundError) as e:  # user errors: one line, no traceback
        fail(e)


def fail(e: Exception) -> None:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
