"""Store under concurrent writers, suites that resume, and the rendered report checked against the store."""

import copy
import json
import multiprocessing as mp
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from parbench.report.render import render_report
from parbench.store import Store


def fake_record(dataset, method, seed, ma, n=40, k=3, **settings):
    """A record as `run` writes it (identity, group key, metrics under both protocols, predictions), with the
    headline numbers given; `settings` change the configuration (a new group), not the seed."""
    from parbench.engine.spec import group_key, identity_key

    labels = (np.random.default_rng(0).random((n, k)) < 0.4).astype(np.uint8)  # the same test images for all
    rng = np.random.default_rng(seed * 1000 + sum(map(ord, method)))
    probs = np.clip(labels * ma + rng.random((n, k)) * (1 - ma), 0, 1)
    metrics = {
        p: {
            "ma": ma,
            "acc": ma - 0.1,
            "prec": ma - 0.05,
            "rec": ma - 0.02,
            "f1": ma - 0.03,
            "threshold": t,
            "label_ma": [ma] * k,
        }
        for p, t in (("promptpar", 0.45), ("rethinking", 0.5))
    }
    train = {"epochs": 3, "lr": 1e-3, "select_on": "auto", "train_split": "auto", **settings}
    identity = {
        "dataset": dataset,
        "method": method,
        "backbone": "parbench-tiny",
        "weights": "none",
        "train": train,
        "options": None,
        "seed": seed,
    }
    rec = {
        "run_id": f"{dataset}-{method}-s{seed}-{identity_key(identity)}",
        "key": identity_key(identity),
        "group_key": group_key(identity),
        "identity": identity,
        "dataset": dataset,
        "method": method,
        "backbone": "parbench-tiny",
        "pretrained": "none",
        "activation": "quickgelu",
        "seed": seed,
        "partition": 0,
        "metrics": metrics,
        "ranking": {"map": ma - 0.01, "mauc": ma},
        "attributes": ["a", "b", "c"],
        "groups": {"a": "head", "b": "upper", "c": "lower"},
        "total_params": 1000,
        "trainable_params": 10 * (seed + 1),
        "image_tower_params": 800,
        "selected_on": "val",
        "selected_on_test": False,
        "fit_s": 1.0,
        "eval_s": 0.5,
        "train_images_per_s": 50.0,
        "eval_images_per_s": 90.0,
        "peak_mem_mb": 0.0,
        "wall_s": 2.0,
        "smoke": False,
        "unspecified": "negative",
        "n_test": n,
        "status": "finished",
        "finished": "2026-11-27T00:00:00",
        "history": [{"epoch": e, "loss": 1.0 / e, "select": {"ma": ma - 0.1 / e}} for e in (1, 2, 3)],
        "config": {"train": train},
    }
    return rec, probs, labels


def _writer(args):
    path, start = args
    store = Store(path)
    for i in range(start, start + 25):
        rec, p, lab = fake_record("synthetic", f"m{i}", 0, 0.7)
        store.add_run(rec, p, lab)


def test_four_processes_lose_no_row(tmp_path):
    path = str(tmp_path / "store.sqlite")
    Store(path)
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_writer, [(path, 0), (path, 25), (path, 50), (path, 75)])
    assert Store(path).count() == 100


def _store_with_runs(tmp_path) -> Store:
    store = Store(tmp_path / "store.sqlite")
    for ds in ("synthetic", "synthetic-zs"):
        for method, ma in (("linear-probe", 0.7), ("finetune", 0.8), ("promptpar", 0.9)):
            for seed in (0, 1):
                rec, p, lab = fake_record(ds, method, seed, ma + 0.01 * seed - (0.05 if ds.endswith("zs") else 0))
                store.add_run(rec, p, lab)
    return store


def test_report_numbers_match_store(tmp_path):
    store = _store_with_runs(tmp_path)
    path = render_report(store.path, tmp_path / "out")
    page = path.read_text()
    # PromptPAR on synthetic: seeds 0.90 and 0.91 -> mean 90.50, std 0.71
    row = re.search(r'<tr class="run" data-method="promptpar">(.*?)</tr>', page, re.S).group(1)
    assert "90.50 ± 0.71" in row
    for ds in ("synthetic", "synthetic-zs"):
        assert f'id="ds-{ds}"' in page
    assert "Standard vs identity-disjoint" in page and "5.00" in page  # the drop
    assert "Paired bootstrap" in page and "<svg" in page and 'id="main-rethinking"' in page
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| promptpar | random (per seed) | 2 | val | auto | 90.50 ± 0.71" in md
    csv = (tmp_path / "out" / "leaderboard.csv").read_text().splitlines()
    assert len(csv) == 1 + 2 * 6  # both protocols, 3 configurations x 2 datasets
    assert "ma[a]" in csv[0] and "selected_on_test" in csv[0] and "train_split" in csv[0]


def test_runs_differing_in_one_setting_are_separate_labelled_rows(tmp_path):
    store = Store(tmp_path / "store.sqlite")
    for seed in (0, 1):
        for epochs, ma in ((3, 0.7), (9, 0.8)):
            rec, p, lab = fake_record("synthetic", "linear-probe", seed, ma + 0.01 * seed, epochs=epochs)
            store.add_run(rec, p, lab)
    rec, p, lab = fake_record("synthetic", "linear-probe", 0, 0.75, epochs=3, select_on="test")
    rec["selected_on"], rec["selected_on_test"] = "test", True
    store.add_run(rec, p, lab)
    render_report(store.path, tmp_path / "out")
    page = (tmp_path / "out" / "index.html").read_text()
    labels = re.findall(r'<tr class="run" data-method="linear-probe">\s*<td class="l cfg">([^<]*)', page)
    assert len(labels) == 2 * 3  # three configurations, in each protocol's table: never averaged together
    assert any("epochs=9" in x for x in labels) and any("select_on=test" in x for x in labels)
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert md.count("†") >= 2 and "select_on=test" in md  # marked in Markdown (and the legend)
    rows = [r for r in (tmp_path / "out" / "leaderboard.csv").read_text().splitlines()[1:] if "select_on=test" in r]
    assert rows and all(",True," in r for r in rows)  # and in the CSV


def test_report_shows_published_rows(tmp_path):
    store = Store(tmp_path / "store.sqlite")
    rec, p, lab = fake_record("PETA", "promptpar", 0, 0.8)
    rec["selected_on"], rec["selected_on_test"] = "test", True
    store.add_run(rec, p, lab)
    page = render_report(store.path, tmp_path / "out").read_text()
    assert "PromptPAR (published)" in page and "88.76" in page
    assert 'id="test-selected"' in page


def test_failed_runs_are_listed_never_scored(tmp_path):
    store = _store_with_runs(tmp_path)
    rec, _, _ = fake_record("synthetic", "finetune", 7, 0.5)
    rec.update(status="failed", error="training: a finite loss; found loss nan at epoch 2, step 3", metrics=None)
    store.add_run(rec)
    page = render_report(store.path, tmp_path / "out").read_text()
    assert 'id="failed"' in page and "loss nan at epoch 2" in page
    assert "50.00" not in page  # no score for it anywhere


def test_latex_main_table(tmp_path):
    store = _store_with_runs(tmp_path)
    render_report(store.path, tmp_path / "out")
    tex = (tmp_path / "out" / "main_table_promptpar.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\multicolumn{5}{c}{synthetic}" in tex and "\\multicolumn{5}{c}{synthetic-zs}" in tex
    line = next(x for x in tex.splitlines() if x.startswith("promptpar"))
    assert line.count("\\textbf{") == 10  # best in every column of both datasets
    assert "{\\scriptsize$\\pm$0.71}" in line  # seed spread as a smaller suffix
    second = next(x for x in tex.splitlines() if x.startswith("finetune"))
    assert second.count("\\underline{") == 10


CLICK_EVERY_HEADER = """
<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
window.addEventListener("load", function () {
  var problems = [], clicks = 0;
  function key(row, col) {
    var c = row.cells[col];
    return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent.trim();
  }
  function sorted(values, asc) {
    for (var i = 1; i < values.length; i++) {
      var a = values[i - 1], b = values[i];
      var c = typeof a === "number" ? a - b : a.localeCompare(b);
      if (asc ? c > 0 : c < 0) return false;
    }
    return true;
  }
  document.querySelectorAll("table.sortable").forEach(function (table, t) {
    var head = table.tHead.rows[table.tHead.rows.length - 1];
    var offset = table.tHead.rows.length > 1 ? 1 : 0;
    Array.prototype.forEach.call(head.cells, function (th, i) {
      [true, false].forEach(function (asc) {
        try { th.click(); clicks++; } catch (e) { problems.push("table " + t + " col " + i + ": " + e); return; }
        var rows = Array.prototype.slice.call(table.tBodies[0].querySelectorAll("tr.run"));
        var vals = rows.map(function (r) { return key(r, i + offset); });
        if (!sorted(vals, asc)) problems.push("table " + t + " col " + i + (asc ? " asc: " : " desc: ") + vals.join("|"));
      });
    });
  });
  document.body.setAttribute("data-test", JSON.stringify({clicks: clicks, problems: problems, errors: window.__errors}));
});
</script>
"""


def _chromium():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return chromium


def _headless(chromium, tmp_path, *args):
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'prof'}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_opens_in_headless_chromium(tmp_path):
    chromium = _chromium()
    store = _store_with_runs(tmp_path)
    path = render_report(store.path, tmp_path / "out")
    for width in (1400, 800):
        shot = tmp_path / f"shot{width}.png"
        proc = _headless(chromium, tmp_path, f"--screenshot={shot}", f"--window-size={width},1600", path.as_uri())
        assert shot.is_file() and shot.stat().st_size > 5000, proc.stderr[-2000:]
        console_errors = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln and "rror" in ln]
        assert console_errors == []
        from PIL import Image

        img = np.asarray(Image.open(shot).convert("L"))
        assert img.std() > 5  # not blank


def test_every_header_of_every_table_sorts_in_chromium(tmp_path):
    """Clicks each sortable header twice (ascending, then descending) in every table of the page, both
    protocols' included, and checks the row order by the column's numeric value (or text) after each click."""
    chromium = _chromium()
    store = _store_with_runs(tmp_path)
    # values whose text order differs from their numeric order (5 < 33 < 249 < 1,000 but "1,000" < "249" < ...)
    for method, ma, trainable in (
        ("zeroshot", 0.6, 0),
        ("vpt", 0.655, 5),
        ("lora", 0.7, 33),
        ("head", 0.95, 249),
        ("wide", 0.085, 1000),
    ):
        rec, p, lab = fake_record("synthetic", method, 0, ma)
        rec["trainable_params"], rec["total_params"] = trainable, 10 * trainable + 7
        store.add_run(rec, p, lab)
    page = render_report(store.path, tmp_path / "out")
    probe = tmp_path / "out" / "probe.html"
    probe.write_text(page.read_text().replace("</body>", CLICK_EVERY_HEADER + "</body>"))
    proc = _headless(chromium, tmp_path, "--dump-dom", probe.as_uri())
    found = re.search(r'data-test="([^"]*)"', proc.stdout)
    assert found, proc.stderr[-2000:]
    import html as html_lib

    result = json.loads(html_lib.unescape(found.group(1)))
    n_tables = page.read_text().count('class="sortable')
    assert n_tables >= 6 and result["clicks"] > 10 * n_tables
    assert result["problems"] == [] and result["errors"] == []


@pytest.mark.slow
def test_suite_resumes_without_redoing_finished_runs(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(
        'name = "t"\ndatasets = ["synthetic"]\nmethods = ["zeroshot", "linear-probe"]\nbackbones = ["parbench-tiny"]\n'
        f'seeds = [0, 1]\nstore = "{tmp_path / "store.sqlite"}"\nout = "{tmp_path / "runs"}"\n'
        "[set]\nlimit = 64\nbootstrap = 20\nepochs = 2\n"
    )
    from parbench.suite import load_suite, pending, run_suite, shard

    s = load_suite(suite)
    assert len(s.specs) == 4
    assert sorted(x.key() for x in shard(s.specs, 1, 2) + shard(s.specs, 2, 2)) == sorted(x.key() for x in s.specs)
    run_suite(s, s.specs[:2], quiet=True)  # "killed" after two runs
    assert len(pending(s, s.specs)) == 2
    done_before = {r["run_id"]: r["finished"] for r in Store(s.store).records()}
    ran = run_suite(s, s.specs, quiet=True)
    assert len(ran) == 2 and Store(s.store).count() == 4
    after = {r["run_id"]: r["finished"] for r in Store(s.store).records()}
    assert all(after[k] == v for k, v in done_before.items())


def test_store_merge(tmp_path):
    a, b = Store(tmp_path / "a.sqlite"), Store(tmp_path / "b.sqlite")
    for i, st in enumerate((a, b)):
        rec, p, lab = fake_record("synthetic", f"m{i}", 0, 0.7)
        st.add_run(copy.deepcopy(rec), p, lab)
    target = Store(tmp_path / "t.sqlite")
    assert target.merge_from(a.path) + target.merge_from(b.path) == 2
    assert target.merge_from(a.path) == 1 and target.count() == 2  # idempotent
    assert target.predictions(rec["run_id"]) is not None
    assert Path(target.path).is_file()
