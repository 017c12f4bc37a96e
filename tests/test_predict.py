"""`parbench predict` and `parbench eval` on a run: the restored model predicts what the run predicted."""

import csv
import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from parbench.cli import app
from parbench.data import load_dataset
from parbench.engine.run import RunSpec, run

SETS = {"epochs": 1, "limit": 24, "fusion_dim": 32, "fusion_heads": 2, "batch_size": 8}


@pytest.fixture(scope="module")
def promptpar_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run(
        RunSpec(
            dataset="synthetic",
            method="promptpar",
            backbone="parbench-tiny",
            seed=3,
            overrides=SETS,
            out=str(out),
            quiet=True,
        )
    )


def test_predict_reproduces_the_runs_test_probabilities(promptpar_run, tmp_path):
    saved = np.load(f"{promptpar_run['run_dir']}/predictions.npz")
    ds = load_dataset("synthetic")
    files = [str(ds.root / ds.relpaths[i]) for i in saved["index"][:6]]
    r = CliRunner().invoke(
        app, ["predict", "--run", promptpar_run["run_dir"], *files, "--format", "csv", "-o", str(tmp_path / "p.csv")]
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    attrs = promptpar_run["attributes"]
    probs = np.array([[float(row[a]) for a in attrs] for row in rows])
    # random frozen tower re-drawn from the run's seed, trained tensors and BatchNorm statistics restored
    np.testing.assert_allclose(probs, saved["probs"][:6], atol=1e-5)
    for row, p in zip(rows, probs, strict=True):
        assert [int(row[f"{a}_pred"]) for a in attrs] == [int(v > 0.45) for v in p]


def test_predict_json_folder_and_threshold(promptpar_run, tmp_path):
    ds = load_dataset("synthetic")
    folder = ds.root / "images"
    r = CliRunner().invoke(
        app, ["predict", "--run", promptpar_run["run_dir"], str(folder), "--format", "json", "--threshold", "0.0"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout[r.stdout.index("{") :])
    assert len(doc["predictions"]) == len(ds.relpaths) and doc["threshold"] == 0.0
    assert all(len(p["attributes"]) == len(promptpar_run["attributes"]) for p in doc["predictions"])


def test_eval_of_a_run_matches_its_record(promptpar_run, tmp_path):
    r = CliRunner().invoke(
        app, ["eval", "--checkpoint", promptpar_run["run_dir"], "--json", "--predictions", str(tmp_path / "e.npz")]
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    saved = np.load(f"{promptpar_run['run_dir']}/predictions.npz")
    mine = np.load(tmp_path / "e.npz")
    # a smoke run scored its first `limit` test images: eval of the run scores the same ones, the same way
    assert res["format"] == "parbench" and res["n"] == SETS["limit"] == res["data"]["limit"]
    np.testing.assert_array_equal(mine["index"], saved["index"])
    np.testing.assert_array_equal(mine["probs"], saved["probs"])
    assert res["metrics"] == promptpar_run["metrics"]


def test_predict_needs_exactly_one_source(tmp_path):
    r = CliRunner().invoke(app, ["predict", str(tmp_path)])
    assert r.exit_code != 0


def test_a_lora_run_is_evaluated_from_its_own_checkpoint(tmp_path):
    """peft's LoRA on nn.MultiheadAttention merges and unmerges its update into the frozen weight on every
    forward (float rounding moves it); the frozen-weights digest is taken as built, so the run's own checkpoint
    restores and predicts what the run predicted."""
    from parbench.engine.restore import evaluate_checkpoint

    rec = run(
        RunSpec(
            dataset="synthetic",
            method="lora",
            backbone="parbench-tiny",
            seed=1,
            overrides={"epochs": 1, "limit": 24, "batch_size": 8, "bootstrap": 0},
            out=str(tmp_path),
            quiet=True,
        )
    )
    res = evaluate_checkpoint(rec["run_dir"], quiet=True)
    saved = np.load(f"{rec['run_dir']}/predictions.npz")["probs"]
    assert res["metrics"]["promptpar"]["ma"] == pytest.approx(rec["metrics"]["promptpar"]["ma"], abs=1e-6)
    assert res["n"] == len(saved)
