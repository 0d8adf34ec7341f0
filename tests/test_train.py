"""`captcha-tune train` end to end: 2 gloo DDP workers on real Ray learn, checkpoint, and resume at the right step.
The commands run in this process (`main`) on one Ray started for the module (`module_ray`)."""

import json
import time
from pathlib import Path

import torch

from conftest import TINY, cli_error, main, printed
from results import checkpoints
from trainable import checkpoint
from trainable.data import load_split
from trainable.model import build_model
from trainable.config import TrainConfig, input_shape
from trainable.data import read_meta
from trainable.step import evaluate


def flags(d):
    return [x for k, v in d.items() for x in (f"--{k.replace('_', '-')}", v)]


def test_train_learns_checkpoints_and_resumes(module_ray, easy_data, tmp_path, capsys):
    # enough to learn on 2 cores in ~40 s: the default model width, softmax CE, a higher LR
    settings = {**TINY, "channels": 16, "batch_size": 64, "max_steps": 300, "cosine_period": 300, "eval_every": 100, "loss": "ce", "peak_lr": 3e-3}
    main("train", "--data-dir", easy_data, "--workers", 2, "--storage", tmp_path, "--name", "run", *flags(settings))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final_metrics"]["step"] == 300 and summary["final_metrics"]["world_size"] == 2
    # progress: a line per evaluation, with the time left once the pace is known
    out = printed(capsys, "step 300/300: val full match")
    assert "step 100/300: val full match" in out and "step 300/300: val full match" in out and " left" in out, out[-2000:]

    # better than the untrained model on the validation set
    cfg = input_shape(TrainConfig(data_dir=easy_data, **settings), read_meta(easy_data))
    vx, vy, meta = load_split(easy_data, "val", cfg.img_height, cfg.img_width)
    torch.manual_seed(0)
    untrained = evaluate(build_model(cfg, len(meta["charset"]), meta["max_len"]), vx, vy, cfg, torch.device("cpu"))
    best = summary["best_metrics"]
    assert best["val_char_acc"] > untrained["val_char_acc"] + 0.15
    assert best["val_full_match"] > untrained["val_full_match"]

    # the best checkpoint is a loadable file with its step and settings
    state = checkpoint.load(Path(summary["best_checkpoint"]))
    assert state["step"] == best["step"] and state["config"]["loss"] == "ce" and state["charset"] == meta["charset"]
    assert {k: state[k] for k in checkpoint.LOOP if k in best} == {k: best[k] for k in checkpoint.LOOP if k in best}  # the loop's counters, top-level
    assert state["recent_val_scores"][-1] == best["val_score"]  # the last evaluations, for the plateau rule

    # a second run with the same name continues from the latest checkpoint, not from zero
    main("train", "--data-dir", easy_data, "--workers", 2, "--storage", tmp_path, "--name", "run", *flags({**settings, "max_steps": 310}))
    resumed = json.loads((tmp_path / "run" / "summary.json").read_text())["final_metrics"]
    assert resumed["start_step"] == 300 and resumed["step"] == 310


def test_ctc_head_trains_in_ddp_to_a_time_budget_and_agrees_with_its_export(module_ray, easy_data, tmp_path):
    """The CRNN head with augmentation, 2 gloo workers, stopped by a time budget: both ranks stop at the same
    evaluation (the stop is decided on the slowest rank's clock; each rank's own clock once let one return while the
    other waited in its next all-reduce); it checkpoints, exports, and the .pt2 reads as the checkpoint does."""
    from results.evaluate import evaluate as evaluate_predictor, load_rows
    from results.predict import load_predictor

    settings = {**TINY, "head": "ctc", "augment": 0.5, "seq_hidden": 32, "max_steps": 100_000, "cosine_period": 100_000, "time_budget_s": 4}
    main("train", "--data-dir", easy_data, "--workers", 2, "--storage", tmp_path, "--name", "ctc", *flags(settings))
    summary = json.loads((tmp_path / "ctc" / "summary.json").read_text())
    assert summary["ended"]["kind"] == "time" and summary["final_metrics"]["train_seconds"] >= 4
    assert summary["final_metrics"]["world_size"] == 2 and TINY["eval_every"] <= summary["final_metrics"]["step"] < 100_000
    state = checkpoint.load(Path(summary["best_checkpoint"]))
    assert state["config"]["head"] == "ctc" and state["config"]["img_width"] == 88  # 160x60 at height 32
    # the run folder, its best checkpoint folder and that folder's checkpoint.pt are one checkpoint
    file, origin = checkpoints.resolve(tmp_path / "ctc")
    assert file == checkpoints.resolve(summary["best_checkpoint"])[0] == checkpoints.resolve(file)[0] == f"{summary['best_checkpoint']}/{checkpoint.FILE}"
    assert origin["run"] == summary["run_path"] and origin["step"] == state["step"]

    main("export", tmp_path / "ctc", "--out", tmp_path / "ctc.pt2")
    rows = load_rows(easy_data)[:64]
    images = [rgb for _, rgb, _ in rows]
    from_pt2, from_ckpt = load_predictor(tmp_path / "ctc.pt2"), load_predictor(tmp_path / "ctc")
    assert from_pt2.predict(images) == from_ckpt.predict(images)
    assert evaluate_predictor(from_pt2, rows)["full_match"] == evaluate_predictor(from_ckpt, rows)["full_match"]


def test_impossible_worker_request_fails_fast(module_ray, easy_data, tmp_path, capsys):
    t0 = time.time()
    code, err = cli_error(capsys, "train", "--data-dir", easy_data, "--workers", 16, "--storage", tmp_path, *flags(TINY))
    err = err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: asked for 16 worker(s)") and "the cluster has" in err, err
    assert time.time() - t0 < 60


def test_missing_dataset_is_one_line(tmp_path, capsys):
    code, err = cli_error(capsys, "train", "--data-dir", tmp_path / "nope", "--storage", tmp_path)
    assert code == 2 and "not a dataset" in err and len(err.strip().splitlines()) == 1, err


def overflow_logits(label: list[int], n_symbols: int) -> torch.Tensor:
    """Per-column CTC logits [1, T, C] whose greedy reading is `label` and then one more symbol (a blank between each)."""
    path = [i for s in [*label, label[0]] for i in (s, 0)]
    return torch.nn.functional.one_hot(torch.tensor([path]), n_symbols).float() * 10


def test_a_ctc_reading_longer_than_max_len_is_not_a_full_match():
    from trainable.loss import OVERFLOW, ctc_greedy

    label = [1, 2, 3, 4, 5, 6, 7]  # max_len symbols
    logits = overflow_logits(label, 10)
    assert ctc_greedy(logits, 7).tolist() == [[1, 2, 3, 4, 5, 6, OVERFLOW]]
    assert ctc_greedy(logits[:, :-2], 7).tolist() == [label]  # without the extra glyph: the label itself

    class Fixed(torch.nn.Module):  # a "model" that reads the same columns for every image
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return self.logits.expand(len(x), -1, -1)

    cfg = TrainConfig(head="ctc")
    images, targets = torch.zeros(3, 32, 96, dtype=torch.uint8).numpy(), torch.tensor([label] * 3).numpy()
    assert evaluate(Fixed(logits), images, targets, cfg, torch.device("cpu"))["val_full_match"] == 0.0
    right = evaluate(Fixed(logits[:, :-2]), images, targets, cfg, torch.device("cpu"))
    assert right["val_full_match"] == 1.0 and right["val_char_acc"] == 1.0


def test_evaluate_and_predict_count_an_overlong_reading_as_wrong():
    import numpy as np

    from results.evaluate import evaluate as evaluate_predictor
    from results.predict import MORE, Predictor
    from trainable.loss import ctc_greedy

    charset, label = " ABCDEFGHIJ", "ABCDEFG"
    logits = overflow_logits([charset.index(c) for c in label], len(charset))
    predictor = Predictor(lambda rgb: (logits.expand(len(rgb), -1, -1), ctc_greedy(logits, 7).expand(len(rgb), -1)), charset, 7, {})
    rows = [(f"r{i}", np.zeros((60, 160, 3), np.uint8), label) for i in range(2)]
    m = evaluate_predictor(predictor, rows)
    assert m["full_match"] == 0.0 and m["char_acc"] == 6 / 7 and m["confusions"] == [("G", MORE, 2)]
    assert predictor.predict([rgb for _, rgb, _ in rows]) == ["ABCDEF" + MORE] * 2


def test_resuming_with_other_settings_is_one_line(tmp_path, capsys):
    """`train --name` over a run that recorded its settings: another learning rate stops before Ray, in one line."""
    from captcha_tune.commands.train import SETTINGS_FILE, check_same_run, run_settings
    from trainable.data import generate

    data = generate("easy", 20, tmp_path / "data", seed=0, processes=1)
    cfg = TrainConfig(data_dir=str(data), **TINY)
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / SETTINGS_FILE).write_text(json.dumps(run_settings(cfg, 2)))
    check_same_run(str(run_dir), run_settings(cfg, 2))  # the same run resumes ...
    check_same_run(str(run_dir), run_settings(cfg.replace(max_steps=400), 2))  # ... and may train further
    code, err = cli_error(capsys, "train", "--data-dir", data, "--workers", 2, "--storage", tmp_path / "runs", "--name", "run",
                          *flags({**TINY, "peak_lr": 0.5}))
    err = err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"error: {run_dir} ran with --peak-lr {cfg.peak_lr}, not 0.5; resume with the same flags (only --max-steps may change) or pick a new --name")
    code, err = cli_error(capsys, "train", "--data-dir", data, "--workers", 1, "--storage", tmp_path / "runs", "--name", "run", *flags(TINY))
    assert code == 2 and "ran with --workers 2, not 1" in err, err


def test_ray_workers_drop_the_cleaner_notice_and_keep_other_warnings(module_ray, capsys):
    """Every worker process of a Ray that init_ray starts runs cluster/connect.py's setup hook: the notice Train's
    placement-group cleaner logs for each trial ASHA stops stays off the console, its other warnings reach it."""
    import ray

    from cluster.connect import CLEANER_NOTICE

    @ray.remote(num_cpus=0)
    def log_in_a_worker():
        import logging

        cleaner = logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner")
        cleaner.warning(f"{CLEANER_NOTICE} (test) is dead. Cleaning up placement group")
        cleaner.warning("Failed to clean up placement group: test")
        return True

    capsys.readouterr()
    assert ray.get(log_in_a_worker.remote())
    out = printed(capsys, "Failed to clean up placement group: test")
    assert "Failed to clean up placement group: test" in out, out[-2000:]
    assert CLEANER_NOTICE not in out, out[-2000:]
