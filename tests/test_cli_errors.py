"""The CLI's edge: a UserError or a FileNotFoundError is one line `error: ...` and exit 2; any other exception
(a plain ValueError and a library's ValueError subclass included) is a bug and keeps its traceback; settings
that cannot work are UserErrors from the real command line; the test-only fault injection flag is not offered."""

from __future__ import annotations

import pytest

import captcha_tune.commands.results as results_command
from captcha_tune.cli import main
from trainable.errors import UserError


class LibraryError(ValueError):
    """Stands for a library's own ValueError subclass (a bug of ours or theirs, not the user's)."""


@pytest.mark.parametrize("error", [UserError("bad --bound"), FileNotFoundError("no sweep at x")])
def test_user_errors_are_one_line(monkeypatch, capsys, error):
    def run(args):
        raise error
    monkeypatch.setattr(results_command, "run", run)
    with pytest.raises(SystemExit) as e:
        main(["results", "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: {error}\n"


@pytest.mark.parametrize("error", [ValueError("internal"), LibraryError("internal"), RuntimeError("internal"), KeyError("k")])
def test_other_errors_keep_their_traceback(monkeypatch, error):
    def run(args):
        raise error
    monkeypatch.setattr(results_command, "run", run)
    with pytest.raises(type(error)):
        main(["results", "x"])


def test_fault_injection_is_not_a_flag(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "fail-once" not in capsys.readouterr().out


def test_a_setting_that_cannot_work_is_one_line_before_ray(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data-dir", str(tmp_path), "--loss", "xx"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "loss" in err and err.count("\n") == 1, err


def test_flags_are_generated_from_the_settings_dataclasses():
    """`sweep`'s flags come from SweepSettings and TrainConfig (defaults live there only): a bool that defaults to
    True is `--no-NAME` and parses to False (never bool("False") == True), flags not given parse to None, choices
    are checked by argparse, and a setting's own flag name (time_budget_s -> --time-budget) is kept."""
    import argparse

    from captcha_tune.commands.sweep import register

    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    parser = sub.choices["sweep"]
    args = parser.parse_args(["--no-recommended", "--time-budget", "60", "--searcher", "gp", "--peak-lr", "3e-3"])
    assert (args.recommended, args.time_budget_s, args.searcher, args.peak_lr) == (False, 60.0, "gp", 3e-3)
    default = parser.parse_args([])
    assert (default.recommended, default.num_samples, default.max_steps) == (None, None, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--searcher", "grid"])
