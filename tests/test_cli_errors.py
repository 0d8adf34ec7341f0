"""The CLI's edge: a UserError, a FileNotFoundError or a plain ValueError is one line `error: ...` and exit 2;
any other exception (a ValueError subclass that is not a UserError included) is a bug and keeps its
traceback; the test-only fault injection flag is not offered on the command line."""

from __future__ import annotations

import pytest

import captcha_tune.commands.results as results_command
from captcha_tune.cli import main
from trainable.errors import UserError


class LibraryError(ValueError):
    """Stands for a library's own ValueError subclass (a bug of ours or theirs, not the user's)."""


@pytest.mark.parametrize("error", [UserError("bad --bound"), FileNotFoundError("no sweep at x"), ValueError("loss must be 'focal' or 'ce'")])
def test_user_errors_are_one_line(monkeypatch, capsys, error):
    def run(args):
        raise error
    monkeypatch.setattr(results_command, "run", run)
    with pytest.raises(SystemExit) as e:
        main(["results", "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: {error}\n"


@pytest.mark.parametrize("error", [LibraryError("internal"), RuntimeError("internal"), KeyError("k")])
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
