"""Paper scale: bootstrap draws computed once per run and stored; intervals and paired tests made of them equal a
direct recomputation from the predictions; a store written before draws existed still reports (draws computed
once, then kept); the report reads no prediction; merge copies every row; suite --dry-run says what a grid costs."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from parbench.draws import REPORT_BOOT, compute_draws, resample_indices
from parbench.metrics import HEADLINE, pedestrian_metrics
from parbench.report.aggregate import configuration_rows
from parbench.report.render import render_report
from parbench.report.stats import paired_difference, row_interval
from parbench.store import Store
from tests.test_store_report import fake_record


def _two_configurations(tmp_path, with_draws: bool) -> Store:
    store = Store(tmp_path / "s.sqlite")
    for method, ma in (("finetune", 0.8), ("linear-probe", 0.7)):
        for seed in (0, 1, 2):
            rec, p, lab = fake_record("synthetic", method, seed, ma + 0.01 * seed)
            store.add_run(rec, p, lab, draws=compute_draws(lab, p) if with_draws else None)
    return store


def test_draws_equal_the_metrics_of_each_resample_computed_directly():
    rng = np.random.default_rng(3)
    labels = (rng.random((60, 4)) < 0.4).astype(np.uint8)
    labels[rng.random((60, 4)) < 0.05] = 255
    probs = rng.random((60, 4))
    draws = compute_draws(labels, probs, "ignore", n_boot=40, seed=5)
    idx = np.random.default_rng(5).integers(0, 60, size=(40, 60))  # the report's resamples: rng(seed), n_boot x n
    np.testing.assert_array_equal(resample_indices(60, 40, 5), idx)
    for proto in ("promptpar", "rethinking"):
        for b in range(40):
            m = pedestrian_metrics(labels[idx[b]], probs[idx[b]], proto, unspecified="ignore").headline()
            np.testing.assert_allclose(draws[proto][b], [m[k] for k in HEADLINE], rtol=0, atol=1e-12)


def test_intervals_and_paired_tests_equal_a_direct_recomputation(tmp_path):
    """The definitions the report has always used, computed here from the predictions alone: resample the test
    images (rng(0)), score each run on each resample, draw seeds per resample (rng(1)), average, take percentiles;
    a paired difference averages (a - b) over the shared seeds per resample."""
    store = _two_configurations(tmp_path, with_draws=True)
    records = store.records()
    draws = store.load_draws(REPORT_BOOT, 0)
    rows = configuration_rows(records, "promptpar")["synthetic"]
    best, other = rows
    preds = {r["run_id"]: store.predictions(r["run_id"]) for r in records}
    labels = next(iter(preds.values()))[1]
    idx = np.random.default_rng(0).integers(0, len(labels), size=(REPORT_BOOT, len(labels)))

    def direct(run, metric):
        probs, lab = preds[run["run_id"]]
        return np.array([pedestrian_metrics(lab[i], probs[i], "promptpar").headline()[metric] for i in idx])

    per = {m: np.stack([direct(r, m) for r in best["runs"]]) for m in ("ma", "f1")}
    pick = np.random.default_rng(1).integers(0, 3, size=(REPORT_BOOT, 3))
    got = row_interval(draws, best, "promptpar")
    for m in ("ma", "f1"):
        boot = per[m][pick, np.arange(REPORT_BOOT)[:, None]].mean(axis=1)
        assert got[m] == pytest.approx((np.percentile(boot, 2.5), np.percentile(boot, 97.5)), abs=1e-12)
    d = (per["ma"] - np.stack([direct(r, "ma") for r in other["runs"]])).mean(axis=0)
    res = paired_difference(draws, best, other, "promptpar")
    assert res["ci_low"] == pytest.approx(np.percentile(d, 2.5), abs=1e-12)
    assert res["ci_high"] == pytest.approx(np.percentile(d, 97.5), abs=1e-12)
    assert res["p_value"] == pytest.approx(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))
    assert res["seeds"] == [0, 1, 2] and res["n_boot"] == REPORT_BOOT


def test_runs_on_other_test_images_are_never_paired(tmp_path):
    store = _two_configurations(tmp_path, with_draws=True)
    rec, p, lab = fake_record("synthetic", "promptpar", 0, 0.9, n=41)  # one image more: another test set
    store.add_run(rec, p, lab, draws=compute_draws(lab, p))
    draws = store.load_draws(REPORT_BOOT, 0)
    rows = {r["method"]: r for r in configuration_rows(store.records(), "promptpar")["synthetic"]}
    assert paired_difference(draws, rows["promptpar"], rows["finetune"], "promptpar") is None
    assert paired_difference(draws, rows["finetune"], rows["linear-probe"], "promptpar") is not None


def test_a_store_from_before_draws_reports_once_computing_them_then_reads_them(tmp_path, monkeypatch):
    store = _two_configurations(tmp_path, with_draws=False)
    with sqlite3.connect(store.path) as con:  # as schema 3 left it: no draws table at all
        con.execute("DROP TABLE draws")
        con.execute("PRAGMA user_version = 3")
    first = render_report(store.path, tmp_path / "r1").read_text()
    with sqlite3.connect(store.path) as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT run_id) FROM draws").fetchone() == (12, 6)
        con.execute("DELETE FROM predictions")  # a report made of stored draws reads no prediction
    import parbench.draws

    monkeypatch.setattr(parbench.draws, "compute_draws", lambda *a, **k: pytest.fail("draws computed again"))
    second = render_report(store.path, tmp_path / "r2").read_text()
    assert first == second and "Paired bootstrap" in first


def test_a_run_stores_its_draws_when_it_finishes_and_they_equal_a_later_computation(tmp_path):
    from parbench.engine.run import RunSpec, run

    over = {"limit": 24, "epochs": 1, "bootstrap": 50}
    spec = RunSpec(
        "synthetic",
        "linear-probe",
        backbone="parbench-tiny",
        overrides=over,
        out=str(tmp_path / "runs"),
        store=str(tmp_path / "s.sqlite"),
        quiet=True,
    )
    rec = run(spec)
    store = Store(tmp_path / "s.sqlite")
    stored = store.load_draws(REPORT_BOOT, 0)[rec["run_id"]][1]
    probs, labels = store.predictions(rec["run_id"])
    again = compute_draws(labels, probs, rec["unspecified"])
    for proto in again:
        np.testing.assert_allclose(stored[proto], again[proto], atol=1e-12)
    assert set(rec["intervals"]["promptpar"]) == set(HEADLINE)  # 50 resamples for the record's own intervals


def test_merge_copies_every_row_and_blob_and_keeps_what_the_target_had(tmp_path):
    a = _two_configurations(tmp_path / "a", with_draws=True)
    b = Store(tmp_path / "b.sqlite")
    rec, p, lab = fake_record("synthetic", "promptpar", 0, 0.9)
    b.add_run(rec, p, lab, draws=compute_draws(lab, p))
    b.add_derived({"id": "x@y", "kind": "cross", "run_id": rec["run_id"], "run_key": rec["key"]}, p, lab)
    target = Store(tmp_path / "t.sqlite")
    assert target.merge_from(a.path) == 6 and target.merge_from(b.path) == 1
    assert target.merge_from(b.path) == 1  # idempotent
    counts = {}
    with sqlite3.connect(target.path) as con:
        for table in ("runs", "metrics", "attribute_metrics", "predictions", "draws", "derived"):
            counts[table] = con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    assert counts == {"runs": 7, "metrics": 14, "attribute_metrics": 42, "predictions": 7, "draws": 14, "derived": 1}
    got = target.predictions(rec["run_id"])
    np.testing.assert_array_equal(got[1], lab) and np.testing.assert_allclose(got[0], p.astype(np.float32))


def test_suite_dry_run_says_what_the_grid_costs(tmp_path):
    from typer.testing import CliRunner

    from parbench.cli import app

    store = Store(tmp_path / "s.sqlite")
    rec, p, lab = fake_record("synthetic", "linear-probe", 0, 0.7)
    rec.update(train_images_per_s=100.0, eval_images_per_s=400.0)
    store.add_run(rec, p, lab)
    suite = tmp_path / "g.toml"
    suite.write_text(
        'datasets = ["synthetic"]\nmethods = ["linear-probe", "finetune"]\nbackbones = ["parbench-tiny"]\n'
        "seeds = [0, 1, 2]\n[set]\nlimit = 30\nepochs = 4\n"
    )
    res = CliRunner().invoke(app, ["suite", str(suite), "--dry-run", "--store", str(store.path), "--json"])
    assert res.exit_code == 0, res.output
    est = json.loads(res.stdout)["estimate"]
    by = {g["method"]: g for g in est["by_method"]}
    assert est["runs"] == 6 and by["linear-probe"]["train_images"] == 3 * 30 * 4
    assert by["linear-probe"]["seconds"] == pytest.approx(3 * 30 * 4 / 100.0 + 3 * 30 / 400.0)
    assert (
        by["finetune"]["seconds"] is None and est["seconds"] is None and est["unknown"] == ["finetune on parbench-tiny"]
    )
