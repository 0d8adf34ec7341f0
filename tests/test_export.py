"""Export, predict and evaluate against the checkpoint as reference: the exported .pt2 gives the
checkpoint's logits (atol 1e-4) on raw captchas of the training size and of another size; it loads
and reads captchas in a fresh Python that cannot import any project module (also the README snippet
in results/export.py); a failed export leaves no file behind; corrupt or foreign model files are
one-line errors; arithmetic answers are computed, not eval'd; evaluate's metrics agree with the
predicted texts and the CLI prints them as JSON."""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import results.export
from conftest import png_files
from results.evaluate import evaluate, load_rows
from results.export import export_model
from results.predict import answer, load_predictor, read_images
from trainable import checkpoint
from trainable.charset import encode
from trainable.config import TrainConfig
from trainable.model import build_model
from trainable.preprocess import decode_image, to_model_input
from trainable.step import train_step

REPO = Path(__file__).resolve().parents[1]
CHARSET = " " + string.digits + string.ascii_uppercase
MAX_LEN = 4
CFG = TrainConfig(channels=8, img_height=32, img_width=96, batch_size=16, peak_lr=1e-2, min_lr=1e-4)
BLOCKED = ("trainable", "search", "results", "cluster", "captcha_tune", "ray")
# Prepended to code run in a fresh interpreter: no project module (nor Ray) can be imported there.
NO_PROJECT = f"""
import sys
class NoProject:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked in this test: " + name)
sys.meta_path.insert(0, NoProject())
try:
    import trainable
    sys.exit("the import blocker does not work")
except ImportError:
    pass
"""
STANDALONE = NO_PROJECT + """
import json
import numpy as np
import torch
from PIL import Image

extra = {"captcha_tune.json": ""}
model = torch.export.load(sys.argv[1], extra_files=extra).module()
charset = json.loads(extra["captcha_tune.json"])["charset"]
texts, all_logits = [], []
for path in sys.argv[2:]:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    with torch.no_grad():
        logits, indices = model(torch.from_numpy(rgb.copy())[None])
    texts.append("".join(charset[i] for i in indices[0].tolist()).replace(" ", ""))
    all_logits.append(logits[0].tolist())
assert not [m for m in sys.modules if m.split(".")[0] in {blocked!r}]
print(json.dumps(dict(texts=texts, logits=all_logits)))
""".replace("{blocked!r}", repr(BLOCKED))


def render(n: int, width: int, height: int, seed: int) -> list[tuple[str, bytes]]:
    """(label, PNG bytes) of real captchas drawn by the `captcha` package."""
    from captcha.image import ImageCaptcha

    rng, gen = random.Random(seed), ImageCaptcha(width=width, height=height)
    labels = ["".join(rng.choices(CHARSET[1:], k=MAX_LEN)) for _ in range(n)]
    return [(label, gen.generate(label, format="png").getvalue()) for label in labels]


def cli(*args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "captcha_tune", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def captchas() -> dict[str, list[tuple[str, bytes]]]:
    return {"160x60": render(16, 160, 60, seed=0), "200x70": render(6, 200, 70, seed=1)}


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory, captchas) -> Path:
    """A real checkpoint: the tiny CNN after 30 Adam steps on 160x60 captchas (batch norm stats moved)."""
    torch.manual_seed(0)
    model = build_model(CFG, len(CHARSET), MAX_LEN)
    optimizer = torch.optim.Adam(model.parameters(), lr=CFG.peak_lr, amsgrad=True)
    rgb = torch.from_numpy(np.stack([decode_image(png) for _, png in captchas["160x60"]]))
    x = to_model_input(rgb, CFG.img_height, CFG.img_width)
    y = torch.tensor([encode(label, CHARSET, MAX_LEN) for label, _ in captchas["160x60"]])
    model.train()
    for _ in range(30):
        train_step(model, optimizer, x, y, CFG, CFG.peak_lr)
    out = tmp_path_factory.mktemp("ckpt")
    metrics = dict(val_full_match=0.25, val_char_acc=0.5, val_loss=0.1, step=30)
    checkpoint.save(out, model, optimizer, 30, CFG, dict(charset=CHARSET, max_len=MAX_LEN), metrics)
    return out


@pytest.fixture(scope="module")
def pt2(ckpt_dir, tmp_path_factory) -> Path:
    return export_model(ckpt_dir / checkpoint.FILE, tmp_path_factory.mktemp("export") / "model.pt2", origin={"source": "test", "step": 30})


def rgbs(items) -> list[np.ndarray]:
    return [decode_image(png) for _, png in items]


# ---------------------------------------------------------------- (a) same logits as the checkpoint
@pytest.mark.parametrize("size", ["160x60", "200x70"])
def test_exported_logits_equal_checkpoint(pt2, ckpt_dir, captchas, size):
    model, _ = checkpoint.load_model(ckpt_dir)
    rgb = torch.from_numpy(np.stack(rgbs(captchas[size])))
    extra = {"captcha_tune.json": ""}
    exported = torch.export.load(pt2, extra_files=extra).module()
    with torch.no_grad():
        reference = model(to_model_input(rgb, CFG.img_height, CFG.img_width))
        logits, indices = exported(rgb)
    assert logits.dtype == torch.float32 and indices.dtype == torch.int64
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=0)
    assert torch.equal(indices, reference.argmax(-1))

    meta = json.loads(extra["captcha_tune.json"])
    assert (meta["charset"], meta["max_len"], meta["img_height"], meta["img_width"]) == (CHARSET, MAX_LEN, 32, 96)
    assert meta["input"]["dynamic_size"] is True and meta["config"] == CFG.to_dict()
    assert meta["metrics"]["val_full_match"] == 0.25 and meta["origin"] == {"source": "test", "step": 30}
    assert meta["torch"] == torch.__version__ and "indices" in meta["usage"]


def test_predictors_agree_on_mixed_sizes(pt2, ckpt_dir, captchas):
    """Images of two sizes, interleaved: grouping into batches keeps the input order."""
    images = [im for pair in zip(rgbs(captchas["160x60"]), rgbs(captchas["200x70"])) for im in pair]
    from_pt2, from_ckpt = load_predictor(pt2), load_predictor(ckpt_dir)
    torch.testing.assert_close(from_pt2.logits(images), from_ckpt.logits(images), atol=1e-4, rtol=0)
    singles = torch.cat([from_ckpt.logits([im]) for im in images])
    torch.testing.assert_close(from_pt2.logits(images), singles, atol=1e-4, rtol=0)
    assert from_pt2.predict(images) == from_ckpt.predict(images)
    assert from_pt2.charset == from_ckpt.charset == CHARSET and from_pt2.max_len == MAX_LEN
    assert from_pt2.origin["origin"]["source"] == "test" and from_ckpt.origin["step"] == 30


# ---------------------------------------------------------------- (b) standalone: torch and PIL only
def test_pt2_reads_captchas_without_the_project(pt2, ckpt_dir, captchas, tmp_path):
    items = captchas["160x60"][:4] + captchas["200x70"][:2]
    paths = png_files(items, tmp_path)
    reference = load_predictor(ckpt_dir)
    expected = reference.predict(rgbs(items))

    proc = subprocess.run([sys.executable, "-I", "-c", STANDALONE, str(pt2), *map(str, paths)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["texts"] == expected
    torch.testing.assert_close(torch.tensor(out["logits"]), reference.logits(rgbs(items)), atol=1e-4, rtol=0)

    # the README snippet (module docstring of results/export.py), run as written
    snippet = textwrap.dedent(results.export.__doc__.split("::\n", 1)[1])
    (tmp_path / "model.pt2").write_bytes(pt2.read_bytes())
    (tmp_path / "captcha.png").write_bytes(items[-1][1])
    proc = subprocess.run([sys.executable, "-I", "-c", NO_PROJECT + snippet], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected[-1]


# ---------------------------------------------------------------- (a') the ctc head
@pytest.mark.parametrize("sequence", ["conv", "transformer"])
def test_ctc_export_agrees_with_checkpoint(captchas, tmp_path, sequence):
    """A CRNN checkpoint (conv or transformer sequence layer) exports with its greedy CTC decoding inside the program,
    and reads alike standalone."""
    from trainable.loss import ctc_greedy

    cfg = CFG.replace(head="ctc", seq_hidden=32, sequence=sequence, seq_heads=4)
    torch.manual_seed(0)
    model = build_model(cfg, len(CHARSET), MAX_LEN)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.peak_lr, amsgrad=True)
    rgb = torch.from_numpy(np.stack(rgbs(captchas["160x60"])))
    y = torch.tensor([encode(label, CHARSET, MAX_LEN) for label, _ in captchas["160x60"]])
    for _ in range(30):
        train_step(model, optimizer, to_model_input(rgb, cfg.img_height, cfg.img_width), y, cfg, cfg.peak_lr)
    checkpoint.save(tmp_path / "ckpt", model, optimizer, 30, cfg, dict(charset=CHARSET, max_len=MAX_LEN), dict(val_full_match=0.0))
    pt2 = export_model(tmp_path / "ckpt" / checkpoint.FILE, tmp_path / "ctc.pt2")

    reloaded, _ = checkpoint.load_model(tmp_path / "ckpt")
    extra = {"captcha_tune.json": ""}
    exported = torch.export.load(pt2, extra_files=extra).module()
    for size in ("160x60", "200x70"):
        rgb = torch.from_numpy(np.stack(rgbs(captchas[size])))
        with torch.no_grad():
            reference = reloaded(to_model_input(rgb, cfg.img_height, cfg.img_width))
            logits, indices = exported(rgb)
        assert logits.shape == (len(rgb), cfg.img_width // 4, len(CHARSET))
        torch.testing.assert_close(logits, reference, atol=1e-4, rtol=0)
        assert torch.equal(indices, ctc_greedy(reference, MAX_LEN)) and indices.shape == (len(rgb), MAX_LEN)
    meta = json.loads(extra["captcha_tune.json"])
    assert meta["head"] == "ctc" and meta["config"]["sequence"] == sequence and meta["input"]["dynamic_size"] is True

    items = captchas["160x60"][:3]
    paths = png_files(items, tmp_path)
    proc = subprocess.run([sys.executable, "-I", "-c", STANDALONE, str(pt2), *map(str, paths)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["texts"] == load_predictor(tmp_path / "ckpt").predict(rgbs(items))


def test_failed_export_leaves_nothing(ckpt_dir, tmp_path, monkeypatch):
    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch.export, "save", broken_save)
    out = tmp_path / "out" / "model.pt2"
    with pytest.raises(OSError, match="disk full"):
        export_model(ckpt_dir / checkpoint.FILE, out)
    assert not out.exists() and list(out.parent.iterdir()) == []

    folder = tmp_path / "a_folder"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        export_model(ckpt_dir / checkpoint.FILE, folder)
    assert list(folder.iterdir()) == []


class FlatLinear(torch.nn.Module):
    """Exports at its one input size only: the view needs H = 12 and W = 20."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(20 * 3, 2))

    def forward(self, rgb):
        return rgb.float().view(rgb.shape[0], 12, 20 * 3) @ self.w


class DataDependent(FlatLinear):
    """Exports at no size: the branch depends on the pixel values."""

    def forward(self, rgb):
        return super().forward(rgb) if rgb.float().mean() > 0 else rgb


def test_export_falls_back_to_the_models_own_size_or_fails_in_one_line():
    ep, spec = results.export.export_program(FlatLinear(), (12, 20))
    assert spec["dynamic_size"] is False and (spec["height"], spec["width"]) == (12, 20) and spec["why_fixed"]
    rgb = torch.ones(3, 12, 20, 3, dtype=torch.uint8)
    assert torch.equal(ep.module()(rgb), FlatLinear()(rgb))  # any batch, at the recorded size
    with pytest.raises(ValueError, match=r"torch.export failed for any image size \(.*\) and for 20x12 \(") as e:
        results.export.export_program(DataDependent(), (12, 20))
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- (d) corrupt and foreign files
def test_corrupt_pt2_is_a_one_line_cli_error(tmp_path, captchas):
    bad = tmp_path / "model.pt2"
    bad.write_text("this is not a model\n")
    image = tmp_path / "c.png"
    image.write_bytes(captchas["160x60"][0][1])
    proc = cli("predict", bad, image)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a torch.export archive" in err[0]
    assert "Traceback" not in proc.stderr


def test_foreign_model_files_are_value_errors(tmp_path, ckpt_dir):
    ep = torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
    torch.export.save(ep, tmp_path / "plain.pt2")
    with pytest.raises(ValueError, match="without captcha_tune.json"):
        load_predictor(tmp_path / "plain.pt2")
    (tmp_path / "checkpoint.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="can't read a captcha-tune checkpoint"):
        load_predictor(tmp_path / "checkpoint.pt")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        read_images([tmp_path / "broken.png"])


# ---------------------------------------------------------------- (e) arithmetic answers
def test_answer():
    assert answer("3+5=?") == "8"
    assert answer("12*34=?") == "408"
    assert answer("7-9=?") == "-2"
    assert answer("AB12") is None
    assert answer("__import__('os')") is None and answer("3+5=?; 1") is None


# ---------------------------------------------------------------- (f) evaluate
def write_parquet(path: Path, items) -> Path:
    pq.write_table(pa.table({"image": [png for _, png in items], "label": [label for label, _ in items]}), path)
    return path


def test_evaluate_on_parquet(pt2, ckpt_dir, captchas, tmp_path):
    items = captchas["160x60"][:6] + captchas["200x70"][:2]
    data = write_parquet(tmp_path / "test.parquet", items)
    rows = load_rows(data)
    predictor = load_predictor(pt2)
    m = evaluate(predictor, rows)
    texts = predictor.predict([rgb for _, rgb, _ in rows])
    assert m["n"] == 8 and m["full_match"] == np.mean([t == label for t, (label, _) in zip(texts, items)])  # labels fill max_len
    read = predictor.indices([rgb for _, rgb, _ in rows])
    target = torch.tensor([encode(label, predictor.charset, MAX_LEN) for label, _ in items])
    assert m["char_acc"] == pytest.approx((read == target).double().mean().item(), rel=1e-12)
    pairs = {(t, p) for t, p in zip(target[read != target].tolist(), read[read != target].tolist())}
    assert len(m["confusions"]) == min(10, len(pairs))
    if len(pairs) <= 10:  # every confusion listed: they add up to the wrong characters
        assert sum(c for _, _, c in m["confusions"]) == (read != target).sum().item()
    assert evaluate(load_predictor(ckpt_dir), rows) == m

    proc = cli("evaluate", pt2, "--data", data, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["n"] == 8 and out["full_match"] == m["full_match"] and out["char_acc"] == m["char_acc"]

    with pytest.raises(ValueError, match="don't fit the model.*'ab12'"):
        evaluate(predictor, load_rows(write_parquet(tmp_path / "lower.parquet", [("ab12", items[0][1])])))
