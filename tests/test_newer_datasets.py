"""MSP60K, UPAR, Market-1501 and DukeMTMC attributes, read from files in their releases' exact structures and
checked field by field against what the files hold."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from parbench.cards import load_card
from parbench.data import load_dataset, prepare_dataset
from parbench.errors import ParbenchError
from tests.fixtures import newer_originals as fx


@pytest.fixture
def msp(tmp_path):
    return tmp_path, fx.msp60k(tmp_path)


def test_msp60k_random_split_reads_labels_splits_and_scenes(msp):
    root, truth = msp
    ds = load_dataset("MSP60K", root, use_prepared=False)
    card = load_card("MSP60K")
    assert ds.attributes == list(card.raw_order)  # file order is the evaluation order
    for split in ("train", "val", "test"):
        idx = ds.partition(split)
        names = [p.removeprefix("images/") for p in np.asarray(ds.relpaths)[idx]]
        assert names == truth["random"][split]
        np.testing.assert_array_equal(ds.labels[idx], np.array([truth["labels"][n] for n in names]))
        assert [ds.domains[i] for i in idx] == [truth["scene_of"][n] for n in names]
    np.testing.assert_array_equal(
        ds.partition("trainval"), np.concatenate([ds.partition("train"), ds.partition("val")])
    )


@pytest.mark.parametrize("k", [1, 2])
def test_msp60k_cross_scene_splits_come_from_the_json(msp, k):
    root, truth = msp
    ds = load_dataset(f"MSP60K-MS{k}", root, use_prepared=False)
    split = fx.SPLITS[f"split_{k}"]
    for part in ("trainval", "test"):
        want = [n for scene in split[part] for n in truth["by_scene"][scene]]  # scene by scene, in order
        idx = ds.partition(part)
        assert [p.removeprefix("images/") for p in np.asarray(ds.relpaths)[idx]] == want
        assert {ds.domains[i] for i in idx} == set(split[part])
        np.testing.assert_array_equal(ds.labels[idx], np.array([truth["labels"][n] for n in want]))
    assert not set(ds.partition("trainval")) & set(ds.partition("test"))


def test_msp60k_split_missing_from_the_json_is_named(msp):
    root, _ = msp
    with pytest.raises(ParbenchError, match=r"Multi_Sences.json.*split 'split_3'.*split_1, split_2"):
        load_dataset("MSP60K-MS3", root, use_prepared=False)


def test_msp60k_pickle_reads_like_the_json_and_the_llm_par_template_is_refused(msp):
    root, truth = msp
    good, bad = root / "dataset_random.pkl", root / "msp_random_template.pkl"
    fx.msp60k_random_pickle(good, truth)
    fx.msp60k_random_pickle(bad, truth, template=True)
    from_json = load_dataset("MSP60K", root, use_prepared=False)
    from_pkl = load_dataset("MSP60K", root, source=good)
    np.testing.assert_array_equal(from_pkl.labels, from_json.labels)
    assert from_pkl.relpaths == from_json.relpaths
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(from_pkl.partition(s), from_json.partition(s))
    with pytest.raises(ParbenchError, match=r"msp_random_template.pkl.*LLM-PAR.*Short sleeves.*Black hair"):
        load_dataset("MSP60K", root, source=bad)


def test_msp60k_template_is_refused_by_its_labels_alone(msp, tmp_path):
    """A template file renamed back to the official order still carries the duplicated column."""
    import pickle

    root, truth = msp
    path = root / "renamed.pkl"
    fx.msp60k_random_pickle(path, truth, template=True)
    with open(path, "rb") as f:
        d = pickle.load(f)
    d.attributes = list(load_card("MSP60K").raw_order)
    d.label[:, 19] = d.label[:, 9]  # what the template's index list does to the column named Short sleeves
    with open(path, "wb") as f:
        pickle.dump(d, f)
    with pytest.raises(ParbenchError, match="equals its 'Black hair' column"):
        load_dataset("MSP60K", root, source=path)


@pytest.mark.parametrize("partition", [0, 2, 8])
def test_upar_partitions_sources_and_labels(tmp_path, partition):
    truth = fx.upar(tmp_path)
    ds = load_dataset("UPAR", tmp_path, partition=partition, use_prepared=False)
    assert ds.attributes == list(truth_names := load_card("UPAR").attribute_names) and len(truth_names) == 40
    np.testing.assert_array_equal(ds.labels, truth["label"].astype(np.uint8))
    assert ds.relpaths == truth["images"]
    assert ds.domains == truth["sources"]
    p = truth["partition"]
    for s in ("train", "val", "trainval"):
        np.testing.assert_array_equal(ds.partition(s), p[s][partition])
    np.testing.assert_array_equal(ds.partition("test"), np.concatenate([np.array(x) for x in p.test[partition]]))


def test_upar_unknown_codes_are_unspecified_and_counted(tmp_path):
    fx.upar(tmp_path, odd=True)
    ds = load_dataset("UPAR", tmp_path, use_prepared=False)
    assert ds.labels[0, 5] == 255
    assert ds.notes == ["1 labels coded [-1] (meaning not confirmed) read as unspecified"]


def test_upar_partition_out_of_range_is_named(tmp_path):
    fx.upar(tmp_path, partitions=3)
    with pytest.raises(ParbenchError, match="dataset_all.pkl.*no partition 5"):
        load_dataset("UPAR", tmp_path, partition=5, use_prepared=False)


@pytest.mark.parametrize("partition", ["9", "-1"])
def test_a_partition_the_dataset_lacks_names_the_pickle_everywhere(tmp_path, partition):
    """-1 is refused too (a Python index would quietly read partition 8)."""
    import subprocess
    import sys

    from tests.test_faults import one_line_error

    fx.upar(tmp_path)
    for cmd in (
        ["datasets", "prepare", "UPAR", "--root", str(tmp_path), "--partition", partition],
        ["run", "--dataset", "UPAR", "--root", str(tmp_path), "--partition", partition, "--method", "linear-probe"],
    ):
        proc = subprocess.run([sys.executable, "-m", "parbench", *cmd], capture_output=True, text=True)
        one_line_error(proc.returncode, proc.stderr, f"{tmp_path}/dataset_all.pkl (UPAR", "0..8", partition)


def test_msp60k_rows_with_the_wrong_label_count_name_the_image(msp):
    import json

    root, _ = msp
    doc = json.loads((root / "random_split.json").read_text())
    name = list(doc["val"])[3]
    doc["val"][name] = doc["val"][name][:-1]
    (root / "random_split.json").write_text(json.dumps(doc))
    with pytest.raises(
        ParbenchError, match=rf"random_split.json: val: 57 labels per image; found 56 labels for '{name}'"
    ):
        load_dataset("MSP60K", root, use_prepared=False)


def test_msp60k_random_split_reads_scenes_where_the_scene_file_knows_them(msp):
    """The random split never depended on Multi_Sences.json: images it does not list get the scene "unknown"."""
    import json

    root, truth = msp
    doc = json.loads((root / "Multi_Sences.json").read_text())
    dropped = doc["image_names"].pop(sorted(doc["image_names"])[0])
    (root / "Multi_Sences.json").write_text(json.dumps(doc))
    ds = load_dataset("MSP60K", root, use_prepared=False)
    names = [p.removeprefix("images/") for p in ds.relpaths]
    assert len(ds) == sum(len(truth["random"][s]) for s in ("train", "val", "test"))
    for n, d in zip(names, ds.domains, strict=True):
        assert d == ("unknown" if n in dropped else truth["scene_of"][n])


def test_upar_challenge_csv_holds_out_market(tmp_path):
    truth = fx.upar(tmp_path)
    fx.upar_csv(tmp_path / "phase1/train/train.csv", truth)
    ds = load_dataset("UPAR-challenge", tmp_path, use_prepared=False)
    np.testing.assert_array_equal(ds.labels, truth["label"].astype(np.uint8))
    test = ds.partition("test")
    assert {ds.domains[i] for i in test} == {"Market-1501"}
    assert {ds.domains[i] for i in ds.partition("train")} == {"PA100k", "PETA", "RAPv2"}
    assert len(test) + len(ds.partition("train")) == len(truth["images"])


@pytest.mark.parametrize("dataset", ["Market-1501", "DukeMTMC"])
def test_reid_attributes_read_by_field_name_and_expand_to_images(tmp_path, dataset):
    codes = fx.reid_attributes(tmp_path, dataset)
    card = load_card(dataset)
    ds = load_dataset(dataset, tmp_path, use_prepared=False)
    cols = card.reader_options["columns"]
    for split in ("train", "test"):
        c = codes[split]
        idx = ds.partition(split)
        assert len(idx) == 3 * len(c["ids"])  # distractor 0000 and junk -1 left out
        for i in idx:
            pid = ds.relpaths[i].split("/")[-1].split("_")[0]
            k = c["ids"].index(pid)
            assert ds.identities[i] == int(pid)
            want = [int(c[f][k] == code) for f, code in (cols[a] for a in card.attribute_names)]
            assert ds.labels[i].tolist() == want
    assert any("images of identities without labels left out" in n for n in ds.notes)


def test_reid_attributes_field_orders_differ_in_the_fixture_as_in_the_release(tmp_path):
    fx.reid_attributes(tmp_path, "Market-1501")
    m = scipy.io.loadmat(tmp_path / "market_attribute.mat")["market_attribute"][0, 0]
    assert m["train"][0, 0].dtype.names != m["test"][0, 0].dtype.names


def test_reid_attribute_quirks_are_counted_not_crashed(tmp_path):
    """Duke train `top` = 0 for some identities, an identity with no upper colour, a column without positives."""
    codes = fx.reid_attributes(tmp_path, "DukeMTMC")
    path = tmp_path / "duke_attribute.mat"
    m = scipy.io.loadmat(path)["duke_attribute"][0, 0]
    train = {f: m["train"][0, 0][f] for f in m["train"][0, 0].dtype.names}
    test = {f: m["test"][0, 0][f] for f in m["test"][0, 0].dtype.names}
    train["top"][0, 1] = 0
    for f in ("upblack", "upwhite", "upred", "uppurple", "upgray", "upblue", "upgreen", "upbrown"):
        train[f][0, 0] = 1
    test["boots"][:] = 1
    scipy.io.savemat(path, {"duke_attribute": {"train": train, "test": test}})
    ds = load_dataset("DukeMTMC", tmp_path, use_prepared=False)
    j = ds.attributes.index("top-short")
    pid = int(codes["train"]["ids"][1])
    assert (ds.labels[ds.identities == pid, j] == 255).all()
    notes = " | ".join(ds.notes)
    assert f"train: 'top' is 0 for 1 identities ({codes['train']['ids'][1]})" in notes
    assert "train: " in notes and "identities with no upper colour marked" in notes
    assert "test: 'boots' has no positive" in notes
    rep = prepare_dataset("DukeMTMC", tmp_path)
    assert rep["notes"] == ds.notes and rep["splits"] == {"train": 18, "test": 15}
    assert load_dataset("DukeMTMC", tmp_path).notes == ds.notes  # kept in the prepared copy


def test_every_new_card_lists_sources_citation_and_what_is_unconfirmed():
    import tomllib
    from pathlib import Path

    for name in ("MSP60K", "MSP60K-MS1", "UPAR", "UPAR-challenge", "Market-1501", "DukeMTMC"):
        card = load_card(name)
        assert card.source_files and card.citation
        text = Path(card.path).read_text()
        assert "Not confirmed" in text or "not confirmed" in text
        tomllib.loads(text)
