"""One line per evaluation of a training run (train, retrain), printed by the Train controller, and its history."""

from __future__ import annotations

import json
import time

from ray.train import UserCallback


def duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


class Progress(UserCallback):
    """step N/M, validation metrics, images/s and the time left (from the pace since the first report)."""

    def __init__(self, max_steps: int, history: str | None = None, time_budget_s: float = 0.0):
        """history: a file (local or URI) that keeps every report's numbers as JSON lines, for the learning curve;
        a resumed run adds to it. Written from the Train controller, so the driver reads it back from storage.
        time_budget_s: the run's own (TrainConfig.time_budget_s), which bounds the time left."""
        self.max_steps, self.first, self.time_budget_s = max_steps, None, time_budget_s  # first: (time, step) of the first report
        self.history, self.rows = history, None

    def after_report(self, run_context, metrics, checkpoint):
        m, now = metrics[0], time.monotonic()
        if self.history:
            self.keep({k: v for k, v in m.items() if isinstance(v, (int, float))})
        step = int(m.get("step", 0))
        self.first = self.first or (now, step)
        t0, s0 = self.first
        left = (self.max_steps - step) * (now - t0) / (step - s0) if step > s0 else None
        if self.time_budget_s and "train_seconds" in m:
            left = min(left if left is not None else float("inf"), max(0.0, self.time_budget_s - m["train_seconds"]))
        left = f", at most {duration(left)} left" if left is not None else ""
        print(f"step {step}/{self.max_steps}: val full match {m.get('val_full_match', 0):.3f} (best {m.get('best_val_full_match', 0):.3f}), "
              f"char acc {m.get('val_char_acc', 0):.3f}, train loss {m.get('train_loss', 0):.4g}, "
              f"{m.get('images_per_s', 0):.0f} img/s{left}", flush=True)

    def keep(self, row: dict) -> None:
        from trainable import storage

        if self.rows is None:
            self.rows = storage.read_text(self.history).splitlines() if storage.exists(self.history) else []
        self.rows.append(json.dumps(row))
        storage.write_text(self.history, "\n".join(self.rows) + "\n")
