"""The sweep: search space, Optuna TPE searcher, ASHA scheduler, and the Tuner wiring."""
