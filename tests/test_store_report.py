"""Store under concurrent writers, suites that resume, and the rendered report checked against the store."""

import copy
import multiprocessing as mp
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from parbench.report.render import render_report
from parbench.store import Store


def fake_record(dataset, method, seed, ma, n=40, k=3):
    labels = (np.random.default_rng(seed).random((n, k)) < 0.4).astype(np.uint8)  # same test images per seed
    rng = np.random.default_rng(seed * 1000 + sum(map(ord, method)))
    probs = np.clip(labels * ma + rng.random((n, k)) * (1 - ma), 0, 1)
    metrics = {p: {"ma": ma, "acc": ma - 0.1, "prec": ma - 0.05, "rec": ma - 0.02, "f1": ma - 0.03, "threshold": t,
                   "label_ma": [ma] * k} for p, t in (("promptpar", 0.45), ("rethinking", 0.5))}  # fmt: skip
    rec = {"run_id": f"{dataset}-{method}-s{seed}", "key": f"{dataset}{method}{seed}", "dataset": dataset, "method": method,
           "backbone": "parbench-tiny", "pretrained": "none", "seed": seed, "partition": 0, "metrics": metrics,
           "intervals": {"promptpar": {"ma": [ma - 0.05, ma + 0.05]}}, "attributes": ["a", "b", "c"],
           "groups": {"a": "head", "b": "upper", "c": "lower"}, "total_params": 1000, "trainable_params": 10 * (seed + 1),
           "trainable_pct": 1.0, "selected_on": "val", "selected_on_test": False, "fit_s": 1.0,
           "train_images_per_s": 50.0, "peak_mem_mb": 0.0, "wall_s": 2.0, "smoke": False, "unspecified": "negative",
           "finished": "2026-11-27T00:00:00"}  # fmt: skip
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
                rec, p, lab = fake_record(
                    ds, method, seed, ma + 0.01 * seed - (0.05 if ds.endswith("zs") else 0)
                )
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
    assert "Standard vs zero-shot" in page and "5.00" in page  # the drop
    assert "Paired bootstrap" in page and "<svg" in page
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| promptpar | parbench-tiny | 2 | 90.50 ± 0.71" in md
    csv = (tmp_path / "out" / "leaderboard.csv").read_text().splitlines()
    assert len(csv) == 1 + 6


def test_report_shows_published_rows(tmp_path):
    store = Store(tmp_path / "store.sqlite")
    rec, p, lab = fake_record("PETA", "promptpar", 0, 0.8)
    rec["selected_on"], rec["selected_on_test"] = "test", True
    store.add_run(rec, p, lab)
    page = render_report(store.path, tmp_path / "out").read_text()
    assert "PromptPAR (published)" in page and "88.76" in page
    assert 'id="test-selected"' in page


def test_report_opens_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    store = _store_with_runs(tmp_path)
    path = render_report(store.path, tmp_path / "out")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1200,900", path.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 5000, proc.stderr[-2000:]
    console_errors = [
        ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln and ("Error" in ln or "error" in ln)
    ]
    assert console_errors == []
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.std() > 5  # not blank


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
    assert sorted(x.key() for x in shard(s.specs, 1, 2) + shard(s.specs, 2, 2)) == sorted(
        x.key() for x in s.specs
    )
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
    assert target.count() == 2 and target.predictions("synthetic-m0-s0") is not None
    assert Path(target.path).is_file()
