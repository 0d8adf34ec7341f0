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
    except ValueError as e:
        # A plain ValueError is still taken as a user error: many checks of flags and settings (TrainConfig's
        # among them) raise it with a message meant for the user. Its subclasses that are not UserError
        # (a library's own error classes, e.g. a broken Parquet or pickle) are bugs: they keep their traceback.
        if type(e) is not ValueError:
            raise
        fail(e)


def fail(e: Exception) -> None:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
