"""The one metric every run is ranked by: ASHA, the searcher, checkpoint keeping, patience and results."""

from __future__ import annotations

METRIC, MODE = "val_score", "max"
WORST = 0.0  # val_score of a run that diverged or errored, as told to the searcher


def score(full_matches: float, char_acc: float, n: float) -> float:
    """Validation full match, ties broken by per-character accuracy: (full_matches + 0.999 * char_acc) / n.

    Early in training (at ASHA's first rung of a short budget) every run's full match is 0, and a tie is no
    signal for ASHA or TPE; char_acc < 1 moves the score by less than one full match (1/n), so a run with
    more full matches always ranks higher. Tables and plots report full match itself.
    """
    return (full_matches + char_acc * 0.999) / n
