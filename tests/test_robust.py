"""The robustness track: corruptions as ImageNet-C publishes them (checked against the reference packaging where it
runs), attacks that stay in their ball and raise the loss, severity 0 = the clean score, records apart from runs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from parbench.cli import app
from parbench.engine.run import RunSpec, run
from parbench.report.render import render_report
from parbench.robust.corruptions import CORRUPTIONS, PARAMS, corrupt, corruption_seed
from parbench.robust.evaluate import RobustPlan, mce, robust_evaluate
from parbench.store import Store

FAST = {"limit": 32, "epochs": 1, "batch_size": 16, "eval_batch_size": 32, "bootstrap": 0}
runner = CliRunner()

# Hendrycks & Dietterich (ICLR 2019), make_imagenet_c.py: the severity tables, typed from the paper's code
PUBLISHED = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "jpeg_compression": [25, 18, 15, 10, 7],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
    "fog": [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],
}


def _image(seed=0, size=(96, 48)):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size[0] // 4, size[1] // 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR))


def test_severity_tables_are_the_published_ones():
    for name, table in PUBLISHED.items():
        assert PARAMS[name] == table, name
    assert set(CORRUPTIONS) == set(PUBLISHED) | {"occlusion"} and PARAMS["occlusion"] == [0.1, 0.2, 0.3, 0.4, 0.5]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_is_deterministic_per_image_and_changes_with_severity(name):
    x = _image()
    outs = []
    for s in range(1, 6):
        a = corrupt(x, name, s, corruption_seed(name, s, 7))
        b = corrupt(x, name, s, corruption_seed(name, s, 7))
        assert a.dtype == np.uint8 and a.shape == x.shape
        np.testing.assert_array_equal(a, b)
        outs.append(a)
    assert not np.array_equal(outs[0], outs[-1])
    assert np.array_equal(corrupt(x, name, 0, 0), x)  # severity 0: the image itself
    other = "contrast" if name == "fog" else "fog"
    assert corruption_seed(name, 3, 7) != corruption_seed(name, 3, 8) != corruption_seed(other, 3, 8)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_corruptions_equal_the_reference_packaging(name, monkeypatch):
    """imagecorruptions (Michaelis et al.), the ImageNet-C definitions packaged for any image size, draws from
    numpy's global generator: seeded alike, it must give the same pixels, at every severity."""
    monkeypatch.setattr(np, "float_", np.float64, raising=False)  # its fog predates NumPy 2
    ic = pytest.importorskip("imagecorruptions.corruptions")
    x = _image(3)
    for s in range(1, 6):
        np.random.seed(1234)
        arg = Image.fromarray(x) if name in ("jpeg_compression", "pixelate") else x
        ref = np.uint8(np.clip(np.asarray(getattr(ic, name)(arg, s)), 0, 255))
        got = corrupt(x, name, s, 1234)
        if name == "defocus_blur":  # OpenCV's and scipy's filters round apart: a truncation may land 1 apart
            d = np.abs(got.astype(int) - ref.astype(int))
            assert d.max() <= 1, (s, d.max())
            flat = np.full((160, 80, 3), 120, np.uint8)  # large flat regions: most pixels may differ, by one level
            flat[40:120, 20:60] = (30, 200, 90)
            np.random.seed(1234)
            ref = np.uint8(np.clip(np.asarray(getattr(ic, name)(flat, s)), 0, 255))
            d = np.abs(corrupt(flat, name, s, 1234).astype(int) - ref.astype(int))
            assert d.max() <= 1, (s, d.max())
        else:
            np.testing.assert_array_equal(got, ref, err_msg=f"{name} severity {s}")


def test_occlusion_covers_its_area_fraction_with_a_black_box():
    x = np.full((100, 50, 3), 200, np.uint8)
    for s, frac in enumerate(PARAMS["occlusion"], start=1):
        y = corrupt(x, "occlusion", s, corruption_seed("occlusion", s, 0))
        black = (y == 0).all(-1)
        assert abs(black.mean() - frac) < 0.02, (s, black.mean())
        rows, cols = np.flatnonzero(black.any(1)), np.flatnonzero(black.any(0))
        assert black[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()  # one rectangle


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("robust")
    rec = run(
        RunSpec(
            dataset="synthetic",
            method="finetune",
            backbone="parbench-tiny",
            overrides=FAST,
            out=str(tmp / "runs"),
            store=str(tmp / "s.sqlite"),
            quiet=True,
        )
    )
    return tmp, rec


def test_severity_zero_is_the_clean_score_exactly(finetuned):
    _tmp, rec = finetuned
    plan = RobustPlan(corruptions=("fog", "occlusion"), severities=(0,), attacks=())
    for r in robust_evaluate(rec["run_dir"], plan):
        assert r["metrics"] == rec["metrics"]
        assert r["ranking"]["map"] == rec["ranking"]["map"]


def _attack_inputs(rec):
    from parbench.data.transforms import build_transform
    from parbench.robust.evaluate import PixelSplit, _context

    _, built, ds, idx, pos = _context(__import__("pathlib").Path(rec["run_dir"]))
    split = PixelSplit(ds, idx[:16], build_transform(built.preprocess, False))
    x = torch.stack([split[k][0] for k in range(16)])
    y = torch.stack([split[k][1] for k in range(16)])
    mean = torch.tensor(built.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(built.preprocess.std).view(1, 3, 1, 1)
    return built.model.eval(), x, y, torch.as_tensor(pos), mean, std


@pytest.mark.parametrize("eps", [4 / 255, 10 / 255])
def test_pgd_raises_the_loss_every_step_and_stays_in_the_ball(finetuned, eps):
    from contextlib import nullcontext

    from parbench.engine.loss import weighted_bce
    from parbench.robust.attacks import Attack, attack_batch

    model, x, y, pos, mean, std = _attack_inputs(finetuned[1])
    with torch.no_grad():
        clean = float(weighted_bce(model((x - mean) / std)["logits"], y, pos))
    adv, losses = attack_batch(model, x, y, pos, mean, std, Attack("pgd", eps), "negative", nullcontext)
    assert len(losses) == 11 and losses[-1] > clean
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(losses)), losses
    assert float((adv - x).abs().max()) <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    fgsm, (loss,) = attack_batch(model, x, y, pos, mean, std, Attack("fgsm", eps), "negative", nullcontext)
    assert loss > clean and float((fgsm - x).abs().max()) <= eps + 1e-6


def test_robust_cli_records_apart_from_runs_and_the_report_shows_the_section(finetuned):
    tmp, rec = finetuned
    store = tmp / "s.sqlite"
    args = ["robust", rec["run_dir"], "--corruptions", "gaussian_noise,pixelate", "--severities", "1,3"]
    args += ["--attacks", "fgsm,pgd", "--eps", "4/255", "--steps", "3", "--store", str(store), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)[rec["run_dir"]]
    assert len(out["records"]) == 2 * 2 + 2
    s = Store(store, create=False)
    assert len(s.records()) == 1  # robustness rows are not runs
    robust = s.derived("robust")
    assert {r["run_key"] for r in robust} == {rec["key"]} and len(robust) == 6
    pgd = next(r for r in robust if r["perturbation"]["name"] == "pgd")
    assert pgd["perturbation"] == {
        "kind": "attack",
        "name": "pgd",
        "eps": 4 / 255,
        "eps_255": 4.0,
        "norm": "linf",
        "steps": 3,
        "step_size": 1 / 255,
        "random_start": True,
    }
    page = render_report(store, tmp / "rep", include_smoke=True).read_text()
    assert 'id="robustness-promptpar"' in page and "PGD 4/255" in page and "mA against severity" in page
    assert "per-attribute mA drop under" in page
    assert "| finetune |" in (tmp / "rep" / "robustness.md").read_text()
    again = runner.invoke(app, args)
    assert all(r.get("reused") for r in json.loads(again.stdout)[rec["run_dir"]]["records"])


def test_mce_is_imagenet_c_s_ratio_of_summed_errors():
    def rec(ma, name, s):
        return {"perturbation": {"kind": "corruption", "name": name, "severity": s}, "metrics": {"p": {"ma": ma}}}

    base = [rec(0.8, "fog", 1), rec(0.6, "fog", 2), rec(0.9, "jpeg_compression", 1), rec(0.7, "jpeg_compression", 2)]
    mine = [rec(0.9, "fog", 1), rec(0.7, "fog", 2), rec(0.9, "jpeg_compression", 1), rec(0.8, "jpeg_compression", 2)]
    got = mce({"base": base, "mine": mine}, "base", "p")
    want = 100 * np.mean([(0.1 + 0.3) / (0.2 + 0.4), (0.1 + 0.2) / (0.1 + 0.3)])
    assert got["base"] == pytest.approx(100.0) and got["mine"] == pytest.approx(want)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", ["linear-probe", "finetune", "zeroshot", "promptpar", "lora", "vpt-deep", "strong-baseline", "vtb"]
)
def test_robust_runs_on_every_demo_method(tmp_path, method):
    from parbench.demo import suites_dir
    from parbench.suite import load_suite

    suite = load_suite(suites_dir() / "demo.toml", out=str(tmp_path / "runs"))
    spec = next(s for s in suite.specs if s.method == method and s.dataset == "synthetic" and s.seed == 0)
    spec.overrides = {**spec.overrides, **FAST, "epochs": 0}  # the method's model as built: what is attacked
    spec.robust, spec.eval_on, spec.quiet = None, [], True
    rec = run(spec)
    plan = RobustPlan(corruptions=("motion_blur",), severities=(2,), attacks=("fgsm",), eps=(4 / 255,))
    recs = robust_evaluate(rec["run_dir"], plan)
    assert [r["perturbation"]["name"] for r in recs] == ["motion_blur", "fgsm"]
    assert all(np.isfinite(r["metrics"]["promptpar"]["ma"]) for r in recs)


def test_a_reference_checkpoint_is_scored_through_eval_s_import(tmp_path):
    """PromptPAR's released-file layout: imported as `parbench eval` imports it; severity 0 = eval's own score."""
    from parbench.cards import load_card
    from parbench.engine.restore import evaluate_checkpoint
    from tests.fixtures import originals
    from tests.test_promptpar_checkpoint import _model, _save_reference

    card = load_card("PA100k")
    root = tmp_path / "PA100k"
    root.mkdir()
    originals.pa100k(root, sizes=(12, 4, 8), images=True)
    ckpt = tmp_path / "ckpt.pth"
    _save_reference(_model(card, 0), card, ckpt, vis_key="vis_embed")
    store = tmp_path / "s.sqlite"
    args = ["robust", "--checkpoint", str(ckpt), "--dataset", "PA100k", "--root", str(root)]
    args += ["--backbone", "parbench-tiny", "--set", "fusion_heads=2", "--set", "device=cpu"]
    args += ["--corruptions", "contrast", "--severities", "0,2", "--attacks", "fgsm", "--eps", "4/255"]
    args += ["--store", str(store), "--out", str(tmp_path / "ref"), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    ((folder, out),) = json.loads(res.stdout).items()
    assert json.loads((tmp_path / "ref" / folder.split("/")[-1] / "record.json").read_text())["reference"] == str(ckpt)
    clean = evaluate_checkpoint(ckpt, "PA100k", str(root), backbone="parbench-tiny", overrides={"fusion_heads": 2})
    zero = out["records"][0]
    assert zero["perturbation"]["severity"] == 0 and zero["metrics"] == clean["metrics"]
    assert all(r["reference"] == str(ckpt) for r in out["records"]) and len(out["records"]) == 3
    assert Store(store, create=False).records() == [] and len(Store(store, create=False).derived("robust")) == 3
    from parbench.report.render import _robustness  # a reference file has no leaderboard row: its own robust row

    sections = _robustness(Store(store, create=False).derived("robust"), {}, "promptpar")
    assert [r["label"] for sec in sections for r in sec["rows"]] == ["promptpar (reference: ckpt.pth)"]
