"""The CLI: JSON-only stdout, one-line errors, no heavy imports for listing and scoring."""

import json
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from parbench.cli import app

runner = CliRunner()


def test_score_json_prints_only_json(tmp_path):
    labels = np.array([[1, 0], [0, 1]], np.uint8)
    probs = np.array([[0.9, 0.2], [0.3, 0.46]])
    np.save(tmp_path / "l.npy", labels)
    np.save(tmp_path / "p.npy", probs)
    res = runner.invoke(
        app, ["score", "--labels", str(tmp_path / "l.npy"), "--probs", str(tmp_path / "p.npy"), "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) >= {"ma", "acc", "prec", "rec", "f1", "protocol", "threshold"}
    assert out["ma"] == 1.0 and out["protocol"] == "promptpar" and out["threshold"] == 0.45
    res = runner.invoke(
        app,
        [
            "score",
            "--labels",
            str(tmp_path / "l.npy"),
            "--probs",
            str(tmp_path / "p.npy"),
            "--protocol",
            "rethinking",
            "--json",
        ],
    )
    assert json.loads(res.stdout)["ma"] == 0.75  # 0.46 is below 0.5


def test_user_error_is_one_line_and_nonzero(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "parbench",
            "score",
            "--labels",
            str(tmp_path / "none.npy"),
            "--probs",
            str(tmp_path / "none.npy"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "none.npy" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_help_and_listing_do_not_import_torch():
    code = (
        "import sys; from parbench.cli import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['datasets', 'list']); assert r.exit_code == 0, r.output; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "print('torch' in sys.modules, 'open_clip' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False False", proc.stderr


def test_datasets_list_json_names_all_cards():
    res = runner.invoke(app, ["datasets", "list", "--json"])
    names = {d["name"]: d["attributes"] for d in json.loads(res.stdout)}
    assert names == {
        "PA100k": 26,
        "PETA": 35,
        "PETA-ZS": 35,
        "RAP-ZS": 53,
        "RAPv1": 51,
        "RAPv2": 54,
        "WIDER": 14,
        "synthetic": 12,
        "synthetic-zs": 12,
        "DukeMTMC": 23,
        "Market-1501": 30,
        "MSP60K": 57,
        "MSP60K-MS1": 57,
        "MSP60K-MS2": 57,
        "MSP60K-MS3": 57,
        "UPAR": 40,
        "UPAR-challenge": 40,
    }


def test_methods_info_json():
    res = runner.invoke(
        app,
        [
            "methods",
            "info",
            "promptpar",
            "--backbone",
            "ViT-L-14",
            "--dataset",
            "PA100k",
            "--variant",
            "reference",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert (info["total_params"], info["trainable_params"]) == (437_858_948, 3_157_635)
    assert abs(info["trainable_pct"] - 0.7211) < 1e-3
    res = runner.invoke(
        app,
        ["methods", "info", "linear-probe", "--backbone", "parbench-tiny", "--num-attributes", "7", "--json"],
    )
    info = json.loads(res.stdout)
    assert info["trainable_params"] == 64 * 7 + 7


def test_unknown_dataset_suggests():
    proc = subprocess.run([sys.executable, "-m", "parbench", "datasets", "info", "pet"], capture_output=True, text=True)
    assert proc.returncode == 1 and "PETA" in proc.stderr


def test_small_breakages_stay_fixed(tmp_path):
    """methods info for zero-shot (no tokenizer on the meta device), the missing-root message keeping its
    `[roots]`, report --include-smoke's help naming real settings, runs list piped: nothing cut."""
    res = runner.invoke(
        app, ["methods", "info", "zeroshot", "--backbone", "parbench-tiny", "--dataset", "PETA", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["trainable_params"] == 0
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "parbench",
            "run",
            "--dataset",
            "PETA",
            "--method",
            "zeroshot",
            "--backbone",
            "parbench-tiny",
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PARBENCH_CONFIG": str(tmp_path / "none.toml")},
    )
    assert proc.returncode == 1 and "add it under [roots] in the config" in proc.stderr, proc.stderr
    help_text = runner.invoke(app, ["report", "--help"]).output
    assert "--set limit" in help_text and "--limit/--max-steps" not in help_text
    from parbench.store import Store
    from tests.test_store_report import fake_record

    store = Store(tmp_path / "s.sqlite")
    rec, p, lab = fake_record("synthetic", "a-method-with-a-rather-long-name-that-a-table-would-cut", 0, 0.7)
    store.add_run(rec, p, lab)
    proc = subprocess.run(
        [sys.executable, "-m", "parbench", "runs", "list", "--store", str(store.path)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and rec["run_id"] in proc.stdout and rec["method"] in proc.stdout
    assert proc.stdout.splitlines()[0].split("\t")[0] == "dataset"
