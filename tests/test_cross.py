"""Cross-dataset evaluation: trained and selected on A, scored on B's test split over the attributes the cards
share (by name or a declared alias, negations included); one record per (run, B), kept apart from runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from parbench.cards import load_card, parse_card
from parbench.cli import app
from parbench.engine.run import RunSpec, run
from parbench.errors import ParbenchError
from parbench.harmonise import match_attributes
from parbench.metrics import pedestrian_metrics, protocol_metrics
from parbench.report.render import render_report
from parbench.store import Store
from tests.fixtures import originals

runner = CliRunner()
FAST = {"limit": 48, "epochs": 1, "batch_size": 16, "eval_batch_size": 48, "bootstrap": 0}


def test_peta_and_pa100k_share_five_attributes_through_the_harmonised_names():
    m = match_attributes(load_card("PETA"), load_card("PA100k"))
    got = {(p.train, p.eval, p.negated) for p in m.pairs}
    assert got == {
        ("accessoryHat", "Hat", False),
        ("upperBodyShortSleeve", "ShortSleeve", False),
        ("lowerBodyShorts", "Shorts", False),
        ("carryingBackpack", "Backpack", False),
        ("personalMale", "Female", True),  # PETA's personalMale is ~Gender-Female
    }
    assert len(m.dropped_train) == 35 - 5 and len(m.dropped_eval) == 26 - 5
    # PA100k's Trousers covers jeans, which PETA annotates apart: not the same attribute
    assert "lowerBodyTrousers" in m.dropped_train and "Trousers" in m.dropped_eval


def test_identical_names_match_without_aliases_and_upar_meets_market():
    m = match_attributes(load_card("synthetic"), load_card("synthetic-zs"))
    assert [p.train for p in m.pairs] == load_card("synthetic").attribute_names and not m.dropped_eval
    m = match_attributes(load_card("Market-1501"), load_card("UPAR"))
    pairs = {p.train: p.eval for p in m.pairs}
    assert pairs["gender-female"] == "Gender-Female" and pairs["upgray"] == "UpperBody-Color-Grey"
    assert len(pairs) == 24


def test_pairing_is_exact_so_markets_age_adult_is_not_upars_age_adult(tmp_path):
    """UPAR's own labels of Market put Market's teenagers under Age-Adult: the two differ only in case and are
    different attributes. Nothing pairs by case-folding; a declared alias or the exact name does."""
    m = match_attributes(load_card("Market-1501"), load_card("UPAR"))
    paired = {p.train for p in m.pairs} | {p.eval for p in m.pairs}
    assert not paired & {"age-young", "age-teenager", "age-adult", "age-old", "Age-Young", "Age-Adult", "Age-Old"}
    src = load_card("synthetic").path
    text = Path(src).read_text().replace('name = "synthetic"', 'name = "synthetic-case"', 1)
    case = tmp_path / "case.toml"
    case.write_text(text.replace('name = "hat"', 'name = "Hat"', 1))
    m = match_attributes(parse_card(case), load_card("synthetic-zs"))
    assert "Hat" in m.dropped_train and "hat" in m.dropped_eval
    case.write_text(text.replace('name = "hat"', 'name = "Hat"\naliases = ["hat"]', 1))
    m = match_attributes(parse_card(case), load_card("synthetic-zs"))
    assert ("Hat", "hat") in {(p.train, p.eval) for p in m.pairs}


def test_attributes_that_only_look_alike_do_not_pair():
    duke_upar = match_attributes(load_card("DukeMTMC"), load_card("UPAR"))
    assert "top-short" in duke_upar.dropped_train and len(duke_upar.pairs) == 18  # garment length, not sleeves
    duke_market = match_attributes(load_card("DukeMTMC"), load_card("Market-1501"))
    assert "top-short" in duke_market.dropped_train and "up-short" in duke_market.dropped_eval
    # RAPv2 annotates sunglasses apart; RAPv1, PA100k and MSP60K's glasses include them
    assert "hs-Glasses" in match_attributes(load_card("RAPv2"), load_card("PA100k")).dropped_train
    assert ("hs-Glasses", "Glasses") in {
        (p.train, p.eval) for p in match_attributes(load_card("RAPv1"), load_card("PA100k")).pairs
    }
    assert "longpants" in match_attributes(load_card("WIDER"), load_card("PETA")).dropped_train


def test_every_shipped_alias_is_a_defined_term_and_every_card_says_where_its_aliases_come_from():
    from parbench.cards import list_cards
    from parbench.harmonise import vocabulary

    terms = vocabulary()
    for name in list_cards():
        card = load_card(name)
        aliases = [x.removeprefix("~") for a in card.attributes for x in a.aliases]
        assert all(x in terms for x in aliases), (name, sorted(set(aliases) - set(terms)))
        assert not aliases or len(card.aliases_source) > 40, name
    for name in ("UPAR", "UPAR-challenge"):  # UPAR's names are the vocabulary's
        assert set(load_card(name).attribute_names) <= set(terms)


def test_an_alias_answering_twice_is_an_error_naming_the_card(tmp_path):
    from pathlib import Path

    src = Path(load_card("synthetic").path).read_text()
    src = src.replace('name = "skirt"', 'name = "skirt"\naliases = ["shorts"]', 1)
    bad = tmp_path / "bad.toml"
    bad.write_text(src.replace('name = "synthetic"', 'name = "synthetic-bad"', 1))
    with pytest.raises(ParbenchError, match=r"bad.toml.*one attribute answering to synthetic-zs's 'shorts'"):
        match_attributes(parse_card(bad), load_card("synthetic-zs"))


def test_negated_pairs_score_one_minus_p_in_the_evaluated_cards_terms():
    from parbench.engine.cross import score_mapped

    rng = np.random.default_rng(0)
    peta, pa = load_card("PETA"), load_card("PA100k")
    m = match_attributes(peta, pa)
    probs = rng.random((50, 35)).astype(np.float32)
    labels = (rng.random((50, 26)) < 0.4).astype(np.uint8)
    p, y, metrics = score_mapped(probs, labels, m, peta, pa, "negative")
    male, female = peta.attribute_names.index("personalMale"), pa.attribute_names.index("Female")
    j = [q.eval for q in m.pairs].index("Female")
    np.testing.assert_allclose(p[:, j], 1 - probs[:, male])
    np.testing.assert_array_equal(y[:, j], labels[:, female])
    hand = pedestrian_metrics(y, p, "promptpar").headline()
    assert metrics["promptpar"]["ma"] == pytest.approx(hand["ma"])


def test_eval_on_synthetic_pair_records_apart_from_runs_and_reports_a_matrix(tmp_path):
    store = tmp_path / "s.sqlite"
    args = ["run", "--dataset", "synthetic", "--method", "linear-probe", "--backbone", "parbench-tiny"]
    args += ["--out", str(tmp_path / "runs"), "--store", str(store), "--eval-on", "synthetic-zs"]
    for k, v in FAST.items():
        args += ["--set", f"{k}={v}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "on synthetic-zs/test (48 images, 12 shared attributes" in res.output
    s = Store(store, create=False)
    assert len(s.records()) == 1 and s.records()[0]["dataset"] == "synthetic"  # the cross score is not a run
    (cross,) = s.derived("cross")
    assert cross["trained_on"] == "synthetic" and cross["evaluated_on"] == "synthetic-zs"
    assert cross["run_key"] == s.records()[0]["key"] and cross["n_test"] == 48
    probs, labels = s.derived_predictions(cross["id"])
    assert cross["metrics"]["promptpar"]["ma"] == pytest.approx(protocol_metrics(labels, probs)["promptpar"]["ma"])
    # the labels scored are synthetic-zs's own test labels
    from parbench.data import load_dataset

    zs = load_dataset("synthetic-zs")
    np.testing.assert_array_equal(labels, zs.labels[zs.partition("test")[:48]])
    again = runner.invoke(app, args + ["--json"])
    assert json.loads(again.stdout)["cross"][0]["reused"] is True and len(s.derived("cross")) == 1
    page = render_report(store, tmp_path / "rep", include_smoke=True).read_text()
    assert 'id="cross-domain-promptpar"' in page and "(12 shared)" in page and "(in domain)" in page
    md = (tmp_path / "rep" / "cross_domain.md").read_text()
    assert f"| synthetic | {100 * cross['in_domain']['promptpar']['ma']:.2f} (in domain) | " in md
    merged = Store(tmp_path / "merged.sqlite")
    merged.merge_from(store)
    assert [c["id"] for c in merged.derived("cross")] == [cross["id"]]


@pytest.mark.slow
def test_a_run_trained_from_a_card_file_is_scored_on_another_dataset(tmp_path):
    card = tmp_path / "mine.toml"
    card.write_text(Path(load_card("synthetic").path).read_text().replace('name = "synthetic"', 'name = "mine"', 1))
    args = ["run", "--dataset", str(card), "--method", "linear-probe", "--backbone", "parbench-tiny"]
    args += ["--out", str(tmp_path / "runs"), "--eval-on", "synthetic-zs", "--json"]
    for k, v in FAST.items():
        args += ["--set", f"{k}={v}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    (cross,) = json.loads(res.stdout)["cross"]
    assert cross["trained_on"] == "mine" and len(cross["mapping"]["pairs"]) == 12


def test_a_cross_target_without_a_root_asks_for_eval_root_before_training(tmp_path, monkeypatch):
    monkeypatch.delenv("PARBENCH_ROOT_MARKET_1501", raising=False)
    args = ["run", "--dataset", "synthetic", "--method", "linear-probe", "--backbone", "parbench-tiny"]
    args += ["--out", str(tmp_path / "runs"), "--eval-on", "Market-1501"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and isinstance(res.exception, ParbenchError)
    assert "pass --eval-root Market-1501=DIR" in str(res.exception) and "--root DIR" not in str(res.exception)
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_eval_on_between_a_pa100k_and_a_peta_fixture(tmp_path):
    pa_root, peta_root = tmp_path / "pa100k", tmp_path / "peta"
    pa_root.mkdir(), peta_root.mkdir()
    originals.pa100k(pa_root, sizes=(40, 16, 16), images=True)
    peta_labels = originals.peta(peta_root, n=60)
    originals.noise_images(peta_root / "images", [f"{i + 1:05d}.png" for i in range(60)], seed=1)
    store = tmp_path / "s.sqlite"
    rec = run(
        RunSpec(
            dataset="PA100k",
            method="linear-probe",
            backbone="parbench-tiny",
            pretrained="none",
            root=str(pa_root),
            overrides={**FAST, "epochs": 2, "track_test": True},
            out=str(tmp_path / "runs"),
            store=str(store),
            quiet=True,
            eval_on=["PETA"],
            eval_roots={"PETA": str(peta_root)},
        )
    )
    (cross,) = rec["cross"]
    peta = load_card("PETA")
    assert [p[1] for p in cross["mapping"]["pairs"]] == [
        "accessoryHat",
        "upperBodyShortSleeve",
        "lowerBodyShorts",
        "carryingBackpack",
        "personalMale",
    ]  # in PETA's evaluation order
    # labels: the PETA file's own columns for those attributes, on its test split
    from parbench.data import load_dataset

    ds = load_dataset("PETA", peta_root)
    test = ds.partition("test")[:48]
    cols = [peta.attributes[peta.attribute_names.index(p[1])].raw for p in cross["mapping"]["pairs"]]
    saved = np.load(f"{rec['run_dir']}/cross/{cross['id'].split('@')[1]}.npz")
    probs, labels = saved["probs"], saved["labels"]
    np.testing.assert_array_equal(labels, peta_labels[test][:, cols])
    # probabilities: the run's model on those images, outside the loader path; personalMale = 1 - Female
    import torch

    from parbench.data.transforms import build_transform
    from parbench.engine.restore import restore

    r = restore(rec["run_dir"])
    t = build_transform(r.built.preprocess, False)
    x = torch.stack([t(Image.open(ds.image_paths[i]).convert("RGB")) for i in test])
    with torch.no_grad():
        out = torch.sigmoid(r.built.model(x)["logits"]).numpy()
    pa = load_card("PA100k")
    want = out[:, [pa.attribute_names.index(p[0]) for p in cross["mapping"]["pairs"]]]
    want[:, -1] = 1 - want[:, -1]
    np.testing.assert_allclose(probs, want, atol=1e-5)
    page = render_report(store, tmp_path / "rep", include_smoke=True).read_text()
    assert "(5 shared)" in page
    assert "published: PromptPAR" in page  # PA100k's published rows beside the published-protocol numbers


def test_a_suite_scores_cross_and_robust_once_and_then_has_nothing_pending(tmp_path):
    from parbench.suite import load_suite, pending, run_suite

    suite_file = tmp_path / "s.toml"
    suite_file.write_text(
        'name = "s"\ndatasets = ["synthetic"]\nmethods = ["linear-probe"]\nbackbones = ["parbench-tiny"]\n'
        "seeds = [0]\n[set]\nlimit = 32\nepochs = 1\nbootstrap = 0\n"
        '[eval_on]\nsynthetic = ["synthetic-zs"]\n'
        '[robust]\ncorruptions = ["contrast"]\nseverities = [2]\nattacks = []\nlimit = 16\n'
    )
    suite = load_suite(suite_file, out=str(tmp_path / "runs"))
    assert len(pending(suite, suite.specs)) == 1
    (rec,) = run_suite(suite, suite.specs, quiet=True)
    assert [c["evaluated_on"] for c in rec["cross"]] == ["synthetic-zs"]
    assert [r["perturbation"] for r in rec["robust"]] == [
        {"kind": "corruption", "name": "contrast", "severity": 2, "limit": 16}
    ]
    assert pending(suite, suite.specs) == []
    s = Store(suite.store, create=False)
    assert len(s.records()) == 1 and len(s.derived("cross")) == 1 and len(s.derived("robust")) == 1
