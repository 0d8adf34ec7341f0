"""How many draws does the default TPE searcher spend on the head the start points showed is worse? A simulation,
no Ray and no training: the real searcher (search/searcher.py build_searcher, the default space, its start points)
proposes 8-trial sweeps, and a stand-in objective scores each config the way the measured sweeps did (the
multilabel head at 0-5% full match, every measured bench and user sweep; CTC at 50-95% by its peak_lr and
augmentation, with noise). It counts multilabel draws after the start points and the sweeps where more than one
trial ends below half the best (issue 24's goal: at most 1 of 8). The objective is a caricature: the figures
compare searcher settings with each other, not with a real sweep.

    python -m dev.sim_searcher                                  # the default searcher
    python -m dev.sim_searcher --plain-startup --keep-choices   # plain TPE (with local draws: add --no-local)
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import warnings

import optuna

from search import searcher
from search.space import materialize, parse_space, start_points
from search.sweep import SweepSettings
from trainable.config import TrainConfig

STEPS = 1200  # the cpu preset's trial length


def score(config: dict, rng: random.Random) -> float:
    if config["head"] == "multilabel":
        return rng.uniform(0.0, 0.05)
    off = math.log10(config["peak_lr"] / 3e-3)  # best near 3e-3, 0.25 lower a decade away
    return max(0.0, 0.9 - 0.25 * off**2 - 0.1 * abs(config["augment"] - 0.5) + rng.uniform(-0.05, 0.05))


def sweep(seed: int, n: int) -> tuple[int, int, float]:
    """(multilabel draws after the start points, trials below half the best, best - recommended)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        space = materialize(parse_space(), STEPS)
        s = SweepSettings(name="sim", num_samples=n, seed=seed, optuna_storage=f"sqlite:///{tmp}/study.db")
        search = searcher.build_searcher(s, space, start_points(space, STEPS, TrainConfig()), tmp)
        heads, scores = [], []
        for i in range(n):
            config = search.suggest(f"t{i}")
            heads.append(config["head"])
            scores.append(score(config, rng))
            search.on_trial_complete(f"t{i}", dict(val_score=scores[-1], step=STEPS))
    return sum(h == "multilabel" for h in heads[2:]), sum(v < max(scores) / 2 for v in scores), max(scores) - scores[1]


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m dev.sim_searcher", description=__doc__.splitlines()[0])
    p.add_argument("--sweeps", type=int, default=40)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--plain-startup", action="store_true", help="start-up draws pick choices at random too")
    p.add_argument("--keep-choices", action="store_true", help="never retire a losing choice")
    p.add_argument("--no-local", action="store_true", help="no local draws around the best trial (TPE's own draws only)")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    searcher.FOLLOW_BEST_CHOICE = not args.plain_startup
    searcher.RETIRE_LOSING_CHOICES = not args.keep_choices
    if args.no_local:
        searcher.LOCAL_EVERY = 0
    runs = [sweep(seed, args.trials) for seed in range(args.sweeps)]
    print(f"{args.sweeps} simulated {args.trials}-trial sweeps: {sum(r[0] for r in runs) / len(runs):.2f} multilabel draws a sweep "
          f"after the start points; {sum(r[1] > 1 for r in runs)} sweeps with more than 1 trial below half the best; "
          f"best - recommended {sum(r[2] for r in runs) / len(runs):+.3f} on average, >= 1 point in {sum(r[2] >= 0.01 for r in runs)}")
