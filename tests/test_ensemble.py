"""Top-k ensemble against its rule computed in Python as reference: `captcha-tune export EXP --top-k 3` picks the sweep's
best 3 finished trials with a checkpoint (by best val_score; a running trial and a deleted checkpoint are
skipped) and writes one .pt2 that, in a fresh Python without the project, gives the reading with the highest mean
member probability (each member's geometric mean per emitted symbol, whatever its head; members of different
input sizes) on captchas of two sizes; all-ctc members pick the reading they agree on; the predictor, evaluate
and `evaluate --compare-members` read it (gain = ensemble - best member); --top-k larger than the finished
trials, and members of different charsets, are one-line errors that write nothing.
No Ray here: member checkpoints are trained directly into a sweep's layout (EXP/train/<trial>/checkpoint_*, status
records), read by the same results.checkpoints ranking as export; `--top-k` on the real session sweep (conftest.exp)
takes the trials that rank best by val_score in its trials table."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import png_files
from results import checkpoints, ensemble
from results.evaluate import evaluate, load_rows
from results.predict import load_predictor
from test_export import CFG, CHARSET, MAX_LEN, NO_PROJECT, render, rgbs, write_parquet
from trainable import checkpoint
from trainable.charset import encode
from trainable.errors import UserError
from trainable.loss import OVERFLOW, decode_indices
from trainable.model import build_model
from trainable.preprocess import decode_image, to_model_input
from trainable.step import train_step

MEMBERS = {  # name -> (config, seed, val_score, status): the ranking the stub sweep reports
    "ml": (CFG, 0, 0.9, "completed"),
    "ctc": (CFG.replace(head="ctc", seq_hidden=32), 1, 0.8, "asha"),
    "ml_big": (CFG.replace(img_height=40, img_width=128), 2, 0.7, "diverged"),
    "ctc_late": (CFG.replace(head="ctc", seq_hidden=32), 3, 0.95, "running"),  # still running: not a member
}
STANDALONE = NO_PROJECT + """
import json
import math
import numpy as np
import torch
from PIL import Image

extra = {"captcha_tune.json": ""}
model = torch.export.load(sys.argv[1], extra_files=extra).module()
out = dict(meta=json.loads(extra["captcha_tune.json"]), probs=[], indices=[])
for path in sys.argv[2:]:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    with torch.no_grad():
        probs, indices = model(torch.from_numpy(rgb.copy())[None])
    out["probs"].append(probs[0].tolist())
    out["indices"].append(indices[0].tolist())
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def captchas() -> dict[str, list[tuple[str, bytes]]]:
    return {"160x60": render(12, 160, 60, seed=0), "200x70": render(4, 200, 70, seed=1)}


def train_checkpoint(out: Path, cfg, seed: int, items, charset=CHARSET, score: float = 0.0) -> Path:
    """A real checkpoint: 15 Adam steps on the captchas, so the members read differently."""
    torch.manual_seed(seed)
    model = build_model(cfg, len(charset), MAX_LEN)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.peak_lr, amsgrad=True)
    x = to_model_input(torch.from_numpy(np.stack(rgbs(items))), cfg.img_height, cfg.img_width)
    y = torch.tensor([encode(label, charset, MAX_LEN) for label, _ in items])
    model.train()
    for _ in range(15):
        train_step(model, optimizer, x, y, cfg, cfg.peak_lr)
    checkpoint.save(out, model, optimizer, 15, cfg, dict(charset=charset, max_len=MAX_LEN),
                    dict(val_full_match=score, val_char_acc=0.6, val_loss=0.5, val_score=score))
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    exp = tmp_path_factory.mktemp("exp")
    (exp / "sweep.json").write_text("{}")
    return exp


@pytest.fixture(scope="module")
def ckpts(sweep, captchas) -> dict[str, Path]:
    """Each member's checkpoint where a sweep keeps it, with its status record (none: still running); trial 'gone'
    reported the best score of all but its checkpoint file was deleted."""
    from search import status

    out = {name: train_checkpoint(sweep / "train" / name / "checkpoint_000000", cfg, seed, captchas["160x60"], score=score)
           for name, (cfg, seed, score, _) in MEMBERS.items()}
    for name, (_, _, _, kind) in MEMBERS.items():
        if kind != "running":
            status.record(str(sweep), name, kind, 15)
    gone = train_checkpoint(sweep / "train" / "gone" / "checkpoint_000000", CFG, 4, captchas["160x60"][:2], score=0.99)
    (gone / checkpoint.FILE).unlink()
    status.record(str(sweep), "gone", "completed", 15)
    return out


@pytest.fixture(scope="module")
def ens_pt2(sweep, ckpts, tmp_path_factory) -> Path:
    from captcha_tune.cli import main

    out = tmp_path_factory.mktemp("export") / "ens.pt2"
    main(["export", str(sweep), "--top-k", "3", "--out", str(out)])
    return out


def reference(names, ckpts, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ensemble's reading computed in Python, by the rule of results/ensemble.py's docstring."""
    readings = []
    for name in names:
        model, state = checkpoint.load_model(ckpts[name])
        with torch.no_grad():
            logits = model(to_model_input(rgb, state["config"]["img_height"], state["config"]["img_width"]))[0]
        path, p = logits.argmax(-1).tolist(), logits.softmax(-1).max(-1).values.tolist()
        if state["config"]["head"] == "ctc":
            emitted = [t for t, c in enumerate(path) if c != 0 and (t == 0 or c != path[t - 1])]
            symbols = [path[t] for t in emitted]
            indices = symbols[:MAX_LEN] + [0] * (MAX_LEN - len(symbols)) if len(symbols) <= MAX_LEN else symbols[: MAX_LEN - 1] + [OVERFLOW]
        else:
            emitted, indices = [t for t, c in enumerate(path) if c != 0], path
        steps = emitted or range(len(path))  # per emitted symbol; every step when it read nothing
        readings.append((indices, math.prod(p[t] for t in steps) ** (1 / len(steps))))
    means = [sum(p for r, p in readings if r == mine) / len(readings) for mine, _ in readings]
    best = means.index(max(means))  # the first maximum: the better-ranked member on a tie
    return torch.tensor(means[best]), torch.tensor(readings[best][0])


def test_members_are_the_best_finished_trials_with_a_checkpoint(sweep, ckpts):
    ranked = checkpoints.ranked(sweep, finished=True)
    assert [o["trial_id"] for _, o in ranked] == ["ml", "ctc", "ml_big"]
    assert ranked[0][0] == str(ckpts["ml"] / checkpoint.FILE)
    assert ranked[0][1]["step"] == 15 and ranked[0][1]["val_score"] == 0.9 and ranked[0][1]["val_full_match"] == 0.9
    assert [o["trial_id"] for _, o in ensemble.top_checkpoints(sweep, 2)] == ["ml", "ctc"]


def test_ensemble_pt2_standalone_equals_python_average(ens_pt2, ckpts, captchas, tmp_path):
    items = captchas["160x60"][:3] + captchas["200x70"][:2]
    paths = png_files(items, tmp_path)
    proc = subprocess.run([sys.executable, "-I", "-c", STANDALONE, str(ens_pt2), *map(str, paths)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    meta = out["meta"]
    assert meta["ensemble"] == 3 and meta["combine"] == "readings" and meta["input"]["dynamic_size"] is True
    assert [m["trial_id"] for m in meta["members"]] == ["ml", "ctc", "ml_big"]
    assert [m["head"] for m in meta["members"]] == ["multilabel", "ctc", "multilabel"]
    assert meta["members"][2]["img_width"] == 128 and meta["members"][0]["val_score"] == 0.9
    assert (meta["charset"], meta["max_len"]) == (CHARSET, MAX_LEN)

    for k, (_, png) in enumerate(items):
        rgb = torch.from_numpy(decode_image(png).copy())[None]
        prob, indices = reference(["ml", "ctc", "ml_big"], ckpts, rgb)
        torch.testing.assert_close(torch.tensor(out["probs"][k]), prob, atol=1e-5, rtol=1e-4)
        assert out["indices"][k] == indices.tolist()
    assert all(0 < p <= 1 for p in out["probs"])


def test_all_ctc_members_pick_the_reading_they_agree_on(ckpts, captchas, tmp_path):
    members = [(str(ckpts[name] / checkpoint.FILE), dict(trial_id=name)) for name in ("ctc", "ctc_late")]
    predictor = load_predictor(ensemble.export_ensemble(members, tmp_path / "ctc.pt2"))
    assert predictor.origin["combine"] == "readings"
    images = rgbs(captchas["160x60"][:4] + captchas["200x70"][:2])
    probs, indices = predictor.outputs(images)
    for k, im in enumerate(images):
        ref_prob, ref_indices = reference(["ctc", "ctc_late"], ckpts, torch.from_numpy(im.copy())[None])
        torch.testing.assert_close(probs[k], ref_prob.float(), atol=1e-5, rtol=1e-4)
        assert torch.equal(indices[k], ref_indices)


def test_predictor_evaluate_and_compare_members(ens_pt2, ckpts, captchas, tmp_path, capsys):
    from captcha_tune.cli import main

    data = write_parquet(tmp_path / "test.parquet", captchas["160x60"][:8] + captchas["200x70"])
    rows = load_rows(data)
    predictor = load_predictor(ens_pt2)
    m = evaluate(predictor, rows)
    texts = predictor.predict([rgb for _, rgb, _ in rows])
    assert m["n"] == 12 and m["full_match"] == np.mean([t == label for t, (_, _, label) in zip(texts, rows)])

    c = ensemble.compare_members(predictor, rows)
    each = [evaluate(load_predictor(ckpts[name]), rows) for name in ("ml", "ctc", "ml_big")]
    assert [x["full_match"] for x in c["members"]] == [x["full_match"] for x in each]
    best = max(each, key=lambda x: (x["full_match"], x["char_acc"]))
    assert c["gain_full_match"] == m["full_match"] - best["full_match"] and c["gain_char_acc"] == m["char_acc"] - best["char_acc"]

    main(["evaluate", str(ens_pt2), "--data", str(data), "--compare-members", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["gain_full_match"] == c["gain_full_match"] and [x["trial_id"] for x in out["members"]] == ["ml", "ctc", "ml_big"]
    main(["evaluate", str(ens_pt2), "--data", str(data), "--compare-members"])
    assert f"ensemble - best member ({c['best_member']}): full match {c['gain_full_match']:+.4f}" in capsys.readouterr().out

    with pytest.raises(UserError, match="needs an ensemble"):
        ensemble.compare_members(load_predictor(ckpts["ml"]), rows)


@pytest.mark.parametrize("k", [4, 0])
def test_top_k_beyond_the_finished_trials_is_one_line_and_writes_nothing(sweep, ckpts, tmp_path, capsys, k):
    from captcha_tune.cli import main

    out = tmp_path / "ens.pt2"
    with pytest.raises(SystemExit) as e:
        main(["export", str(sweep), "--top-k", str(k), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: --top-k")
    assert ("has 3 finished trials with a checkpoint" in err[0]) if k else ("at least 1" in err[0])
    assert list(tmp_path.iterdir()) == []


def test_members_must_share_charset(ckpts, captchas, tmp_path):
    other = train_checkpoint(tmp_path / "other", CFG, 0, captchas["160x60"][:4], charset=CHARSET + "abc")
    members = [(str(ckpts["ml"] / checkpoint.FILE), dict(trial_id="ml")), (str(other / checkpoint.FILE), dict(trial_id="other"))]
    with pytest.raises(UserError, match="must share charset: other has") as e:
        ensemble.export_ensemble(members, tmp_path / "ens.pt2")
    assert "\n" not in str(e.value) and not (tmp_path / "ens.pt2").exists()



def logits_of(path: list[int], p: float, n_symbols: int = 6) -> torch.Tensor:
    """[1, T, C] logits whose softmax puts `p` on path[t] at each step t and spreads the rest evenly."""
    probs = torch.full((len(path), n_symbols), (1 - p) / (n_symbols - 1))
    probs[range(len(path)), path] = p
    return probs.log()[None]


def test_member_probability_is_per_emitted_symbol_whatever_the_head():
    """The same reading 'ABCD' held at 0.9 a symbol: a multilabel member (4 positions) and ctc members of 9 and
    25 columns get 0.9 each, where the product over every step gave 0.66, 0.31 and 0.0086."""
    ml = logits_of([1, 2, 3, 4], 0.9)
    ctc_short = torch.cat([logits_of([1, 0, 2, 0, 3, 0, 4], 0.9), logits_of([0, 0], 0.8)], 1)
    ctc_long = torch.cat([logits_of([1, 0, 2, 0, 3, 0, 4], 0.9), logits_of([0] * 18, 0.8)], 1)
    for logits, head in ((ml, "multilabel"), (ctc_short, "ctc"), (ctc_long, "ctc")):
        assert decode_indices(logits, head, 4).tolist() == [[1, 2, 3, 4]]
        assert ensemble.per_symbol(logits, head).item() == pytest.approx(0.9, rel=1e-6)
    product = [l.log_softmax(-1).amax(-1).sum(-1).exp().item() for l in (ml, ctc_short, ctc_long)]
    assert product == pytest.approx([0.9**4, 0.9**7 * 0.8**2, 0.9**7 * 0.8**18], rel=1e-5)
    # a ctc run of one symbol over 3 columns counts its first column; a reading of nothing, every step
    assert ensemble.per_symbol(logits_of([1, 1, 1, 0], 0.5), "ctc").item() == pytest.approx(0.5, rel=1e-6)
    assert ensemble.per_symbol(torch.cat([logits_of([0, 0], 0.5), logits_of([0, 0], 0.8)], 1), "ctc").item() == pytest.approx((0.5**2 * 0.8**2) ** 0.25, rel=1e-6)


def test_top_k_on_a_real_sweep_takes_its_best_trials_by_val_score(exp, tmp_path):
    """The session's real TPE + ASHA sweep: the members of `export --top-k 2` are the two finished trials whose best
    val_score in trials.parquet is highest, and the .pt2 reads the validation split like its best member or better."""
    from conftest import cli
    from results.experiment import load

    trials, _ = load(exp)
    done = trials[trials["status"].ne("running") & trials["best_val_score"].notna()]
    top = list(done.sort_values("best_val_score", ascending=False, kind="stable")["trial_id"][:2])
    out = tmp_path / "ens.pt2"
    cli("export", exp, "--top-k", 2, "--out", out)
    meta = load_predictor(out).origin
    assert [m["trial_id"] for m in meta["members"]] == top
