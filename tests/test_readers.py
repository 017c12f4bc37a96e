"""Readers on files built in the original structures, at the real row counts where the real files have them."""

import pickle
import time

import numpy as np
import pytest

from parbench.cards import load_card
from parbench.data import load_dataset, prepare_dataset
from parbench.data.audit import identity_overlap
from parbench.data.pickles import load_pickle
from parbench.errors import ParbenchError
from tests.fixtures import originals


def cols(name):
    return [a.raw for a in load_card(name).attributes]


@pytest.fixture(scope="module")
def peta_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("PETA")
    raw = originals.peta(root)
    return root, raw


def test_peta(peta_root):
    root, raw = peta_root
    ds = load_dataset("PETA", root)
    assert ds.num_attributes == 35 and len(ds) == 19000
    assert ds.attributes == load_card("PETA").attribute_names
    assert ds.attributes[:3] == ["accessoryHat", "accessoryMuffler", "accessoryNothing"]
    np.testing.assert_array_equal(ds.labels, raw[:, cols("PETA")])
    sizes = {s: ds.partition(s).size for s in ("train", "val", "test", "trainval")}
    assert sizes == {"train": 9500, "val": 1900, "test": 7600, "trainval": 11400}
    assert ds.relpaths[0] == "images/00001.png" and ds.relpaths[-1] == "images/19000.png"
    assert ds.extra_labels.shape == (19000, 70)
    # partition k is read too, and differs from partition 0
    ds3 = load_dataset("PETA", root, partition=3)
    assert not np.array_equal(ds3.partition("train"), ds.partition("train"))
    with pytest.raises(ParbenchError, match="partition in 0..4"):
        load_dataset("PETA", root, partition=5)


def test_peta_zs_uses_published_indices(peta_root, tmp_path):
    root, raw = peta_root
    rng = np.random.default_rng(1)
    perm = rng.permutation(19000)
    originals.zs_pickle(root / "dataset_zs_run0.pkl", perm[:11241], perm[11241:15067], perm[15067:])
    ds = load_dataset("PETA-ZS", root)
    assert ds.num_attributes == 35
    assert {s: ds.partition(s).size for s in ("train", "val", "test")} == {
        "train": 11241,
        "val": 3826,
        "test": 3933,
    }
    np.testing.assert_array_equal(ds.partition("test"), perm[15067:])
    np.testing.assert_array_equal(ds.labels, raw[:, cols("PETA")])


def test_pa100k(tmp_path):
    raw = originals.pa100k(tmp_path)
    ds = load_dataset("PA100k", tmp_path)
    assert ds.num_attributes == 26 and len(ds) == 100000
    assert ds.attributes[:2] == ["Hat", "Glasses"] and ds.attributes[-4:] == [
        "Female",
        "Front",
        "Side",
        "Back",
    ]
    np.testing.assert_array_equal(ds.labels, raw[:, cols("PA100k")])
    assert ds.partition("val")[0] == 80000 and ds.partition("test")[-1] == 99999
    assert ds.relpaths[0] == "data/000001.jpg"
    assert list(load_card("PA100k").raw_order)[:3] == ["Female", "AgeOver60", "Age18-60"]


def test_rapv1_uncertain_becomes_255(tmp_path):
    raw = originals.rapv1(tmp_path)
    ds = load_dataset("RAPv1", tmp_path)
    assert ds.num_attributes == 51 and len(ds) == 41585
    assert ds.attributes[0] == "hs-BaldHead" and "action-Pusing" in ds.attributes
    expect = raw[:, cols("RAPv1")].copy()
    expect[expect == 2] = 255
    np.testing.assert_array_equal(ds.labels, expect)
    assert set(ds.partitions) == {"trainval", "test"}
    assert ds.partition("trainval").size == 33268 and ds.partition("test").size == 8317


@pytest.fixture(scope="module")
def rap2_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("RAPv2")
    raw, ident = originals.rapv2(root)
    return root, raw, ident


def test_rapv2(rap2_root):
    root, raw, _ = rap2_root
    ds = load_dataset("RAPv2", root)
    assert ds.num_attributes == 54 and len(ds) == 84928
    expect = raw[:, cols("RAPv2")].astype(np.uint8)
    expect[expect == 2] = 255
    np.testing.assert_array_equal(ds.labels, expect)
    assert {s: ds.partition(s).size for s in ("train", "val", "test")} == {
        "train": 50957,
        "val": 16986,
        "test": 16985,
    }
    assert ds.attributes[38:40] == ["Age46-60", "Femal"]
    assert ds.identities is not None and ds.extra_labels.shape[1] == 42 + 23


def test_rap_zs_53_attributes_and_disjoint_identities(rap2_root):
    root, raw, ident = rap2_root
    # a published-style split over identity-labelled rows, built identity-disjoint
    rows = np.flatnonzero(ident > 0)
    ids = np.unique(ident[rows])
    rng = np.random.default_rng(0)
    pid = rng.permutation(ids)
    grp = lambda g: rows[np.isin(ident[rows], g)]
    n = len(pid)
    originals.zs_pickle(
        root / "dataset_zs_run0.pkl",
        grp(pid[: n * 6 // 10]),
        grp(pid[n * 6 // 10 : n * 8 // 10]),
        grp(pid[n * 8 // 10 :]),
    )
    ds = load_dataset("RAP-ZS", root)
    assert ds.num_attributes == 53 and "Age46-60" not in ds.attributes
    assert ds.attributes[38] == "Femal"
    expect = raw[:, cols("RAP-ZS")].astype(np.uint8)
    expect[expect == 2] = 255
    np.testing.assert_array_equal(ds.labels, expect)
    assert identity_overlap(ds, "train", "test") == []
    assert identity_overlap(ds, "trainval", "test") == []


def test_wider_boxes_and_codes(tmp_path):
    labels, boxes = originals.wider(tmp_path)
    ds = load_dataset("WIDER", tmp_path)
    assert ds.num_attributes == 14 and len(ds) == len(labels)
    mapped = np.vectorize({1: 1, -1: 0, 0: 255}.get)(np.array(labels)).astype(np.uint8)
    np.testing.assert_array_equal(ds.labels, mapped)
    np.testing.assert_allclose(ds.boxes, np.array(boxes, np.float32))
    assert set(ds.partitions) >= {"trainval", "test", "train", "val"}
    from parbench.data.torchdata import load_image

    img = load_image(ds, 0)  # crop clipped to the image bounds
    x, y, w, h = boxes[0]
    assert img.size == (int(round(min(64, x + w) - max(0, x))), int(round(min(48, y + h) - max(0, y))))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "dataset_zs_run0.pkl"
    path.write_bytes(pickle.dumps({"partition": Evil()}))
    with pytest.raises(ParbenchError, match="refused"):
        load_pickle(path)
    assert not marker.exists()


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ParbenchError, match="PETA.mat"):
        load_dataset("PETA", tmp_path)
    (tmp_path / "PETA.mat").write_text("not a mat file")
    with pytest.raises(ParbenchError, match="MATLAB"):
        load_dataset("PETA", tmp_path)
    with pytest.raises(ParbenchError, match="dataset root"):
        load_dataset("PETA")


def test_escaping_image_name_is_refused(tmp_path):
    originals.pa100k(tmp_path, sizes=(4, 2, 2))
    import scipy.io

    mat = scipy.io.loadmat(tmp_path / "annotation.mat")
    mat["train_images_name"][0, 0] = np.array(["../../etc/passwd"])
    scipy.io.savemat(tmp_path / "annotation.mat", {k: v for k, v in mat.items() if not k.startswith("__")})
    with pytest.raises(ParbenchError, match="inside the dataset root"):
        load_dataset("PA100k", tmp_path)


def test_prepare_reports_missing_images_and_prepared_copy_is_fast(tmp_path):
    originals.peta(tmp_path, n=19000)
    rep = prepare_dataset("PETA", tmp_path)
    assert rep["missing"] == 19000 and len(rep["missing_examples"]) == 5
    assert rep["split_mismatches"] == {}
    t = time.perf_counter()
    ds = load_dataset("PETA", tmp_path)
    assert time.perf_counter() - t < 1.0
    assert ds.partition("test").size == 7600


def test_root_from_environment(tmp_path, monkeypatch):
    originals.pa100k(tmp_path, sizes=(4, 2, 2))
    monkeypatch.setenv("PARBENCH_ROOT_PA100K", str(tmp_path))
    assert len(load_dataset("PA100k")) == 8


def _dump(path, obj):
    import easydict

    with open(path, "wb") as f:
        pickle.dump(easydict.EasyDict(obj), f)


def test_rethinking_dataset_all_and_promptpar_pad_pickles_map_by_name(peta_root, tmp_path):
    root, raw = peta_root
    ref = load_dataset("PETA", root)
    card = load_card("PETA")
    names = [f"col{r}" for r in range(raw.shape[1])]
    for a in card.attributes:
        names[a.raw] = a.name
    group = [a.raw for a in card.attributes]
    rng = np.random.default_rng(0)
    parts = {
        s: [ref.partition(s)] + [rng.permutation(19000)[:100] for _ in range(4)]
        for s in ("train", "val", "test", "trainval")
    }
    common = {
        "image_name": [f"{i + 1:05d}.png" for i in range(19000)],
        "attr_name": names,
        "label_idx": {"eval": group},
        "partition": parts,
        "root": "/data/authors/PETA/images",
    }
    # Rethinking: all 105 raw columns
    _dump(tmp_path / "dataset_all.pkl", {**common, "label": raw, "reorder": "group_order"})
    # PromptPAR: the 35 evaluated columns already in group order, label_idx.eval left in (applying it twice
    # would scramble them)
    _dump(tmp_path / "pad.pkl", {**common, "label": raw[:, group]})
    for f in ("dataset_all.pkl", "pad.pkl"):
        ds = load_dataset("PETA", root, source=tmp_path / f)
        np.testing.assert_array_equal(ds.labels, ref.labels)
        np.testing.assert_array_equal(ds.partition("test"), ref.partition("test"))
        assert ds.relpaths[:2] == ref.relpaths[:2]  # the baked-in root is ignored
    ds3 = load_dataset("PETA", root, source=tmp_path / "dataset_all.pkl", partition=3)
    np.testing.assert_array_equal(ds3.partition("train"), parts["train"][3])


def test_pa100k_pad_pickle_in_raw_order_and_rap_uncertain(tmp_path):
    card = load_card("PA100k")
    rng = np.random.default_rng(0)
    raw = (rng.random((40, 26)) < 0.4).astype(np.uint8)  # columns in the file's raw order
    _dump(
        tmp_path / "pad.pkl",
        {
            "image_name": [f"{i:06d}.jpg" for i in range(40)],
            "label": raw,
            "attr_name": list(card.raw_order),
            "attributes": ["sentence"] * 26,
            "partition": {"train": np.arange(30), "test": np.arange(30, 40)},
        },
    )
    ds = load_dataset("PA100k", tmp_path, source=tmp_path / "pad.pkl")
    np.testing.assert_array_equal(ds.labels, raw[:, [card.raw_order.index(a) for a in card.attribute_names]])
    rap = load_card("RAPv2")
    lab = rng.integers(0, 3, size=(10, 54)).astype(np.uint8)
    _dump(
        tmp_path / "rap.pkl",
        {
            "image_name": [f"x{i}.png" for i in range(10)],
            "label": lab,
            "attr_name": rap.attribute_names,
            "partition": {"test": np.arange(10)},
        },
    )
    ds = load_dataset("RAPv2", tmp_path, source=tmp_path / "rap.pkl")
    assert (ds.labels == 255).sum() == (lab == 2).sum() and set(np.unique(ds.labels)) <= {0, 1, 255}
    bad = {"image_name": ["a.png"], "label": np.array([[7] * 54]), "attr_name": rap.attribute_names, "partition": {}}
    _dump(tmp_path / "bad.pkl", bad)
    with pytest.raises(ParbenchError, match="bad.pkl"):
        load_dataset("RAPv2", tmp_path, source=tmp_path / "bad.pkl")


def test_zs_split_command_is_identity_disjoint_and_seeded(tmp_path):
    import json

    from typer.testing import CliRunner

    from parbench.cli import app

    for seed, name in ((0, "a.json"), (0, "b.json"), (1, "c.json")):
        r = CliRunner().invoke(
            app, ["datasets", "zs-split", "synthetic", "-o", str(tmp_path / name), "--seed", str(seed), "--json"]
        )
        assert r.exit_code == 0, r.output
    a, b, c = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json", "c.json"))
    assert a == b and a["splits"]["test"]["index"] != c["splits"]["test"]["index"]
    ds = load_dataset("synthetic")
    ids = {s: set(ds.identities[a["splits"][s]["index"]].tolist()) for s in ("train", "val", "test")}
    assert not ids["train"] & ids["test"] and not ids["val"] & ids["test"] and not ids["train"] & ids["val"]
    assert sum(len(a["splits"][s]["index"]) for s in ("train", "val", "test")) == len(ds.relpaths)
    r = CliRunner().invoke(app, ["datasets", "zs-split", "PA100k", "--root", str(tmp_path), "-o", "x.json"])
    assert r.exit_code != 0
    # the split runs: `parbench run --split-file`, a different run key, and a split of another dataset refused
    from parbench.data.audit import apply_split_file

    moved = apply_split_file(ds, tmp_path / "a.json")
    assert moved.partition("test").tolist() == a["splits"]["test"]["index"]
    r = CliRunner().invoke(
        app,
        [
            "run",
            "--dataset",
            "synthetic",
            "--method",
            "zeroshot",
            "--backbone",
            "parbench-tiny",
            "--split-file",
            str(tmp_path / "a.json"),
            "--out",
            str(tmp_path / "runs"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["n_test"] == len(a["splits"]["test"]["index"])
    r = CliRunner().invoke(
        app,
        [
            "run",
            "--dataset",
            "synthetic-zs",
            "--method",
            "zeroshot",
            "--backbone",
            "parbench-tiny",
            "--split-file",
            str(tmp_path / "a.json"),
        ],
    )
    assert r.exit_code != 0 and "a split of synthetic-zs" in str(r.exception)
