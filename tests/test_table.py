"""The generic `table` reader, card folders and `datasets new`: a dataset of one's own without Python. The same
data as PETA's original .mat and as a table give the same labels and splits."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from parbench.cards import load_card, parse_card
from parbench.data import load_dataset
from parbench.data.new_card import write_draft_card
from parbench.errors import ParbenchError
from parbench.labels import UNSPECIFIED
from tests.fixtures import originals
from tests.test_faults import one_line_error


def _by_image(ds, split):
    """(image path, label row) of a split, in path order: what a split *is*, whatever the row order."""
    return sorted((ds.relpaths[i], tuple(ds.labels[i])) for i in ds.partition(split))


def _write_table(path: Path, header: list[str], rows: list[list]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, r, strict=True))) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as f:
            w = csv.writer(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writerow(header)
            w.writerows(rows)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_the_same_data_as_peta_mat_and_as_a_table_give_the_same_labels_and_splits(tmp_path, suffix):
    root = tmp_path / "PETA"
    root.mkdir()
    originals.peta(root, n=400)
    peta = load_dataset("PETA", root, use_prepared=False)
    names = peta.attributes
    split_of = {int(i): s for s in ("train", "val", "test") for i in peta.partition(s)}
    rows = [[peta.relpaths[i].removeprefix("images/"), split_of[i], *peta.labels[i].tolist()] for i in range(len(peta))]
    table = _write_table(root / f"annotations{suffix}", ["image", "split", *names], rows)
    card = write_draft_card("peta-table", table, tmp_path / "cards" / "peta_table.toml")
    text = card.read_text().replace('select_split = "val"', 'select_split = "val"\nimages = "images"')
    card.write_text(text)
    ds = load_dataset(str(card), use_prepared=False)  # the card's own root: the table's folder
    assert ds.attributes == names and len(ds) == len(peta)
    for split in ("train", "val", "test", "trainval"):
        assert _by_image(ds, split) == _by_image(peta, split), split
    assert parse_card(card).splits == {
        "test": len(peta.partition("test")),
        "train": len(peta.partition("train")),
        "val": len(peta.partition("val")),
    }


def _images(root: Path, n: int) -> list[str]:
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (40, 80), (i * 20 % 255, 0, 0)).save(root / "imgs" / f"{i}.png")
    return [f"imgs/{i}.png" for i in range(n)]


CARD = """
name = "mine"
version = 1
reader = "table"
description = "a table"
source_files = [{files}]
{extra}

[splits]
train = 0
test = 0

[[attributes]]
name = "hat"
group = "head"
positive = "A pedestrian wearing a hat"
negative = "A pedestrian not wearing a hat"

[[attributes]]
name = "bag"
group = "attachments"
positive = "A pedestrian with a bag"
negative = "A pedestrian without a bag"
"""


def _card(tmp_path: Path, files=("t.csv",), extra="") -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(CARD.format(files=", ".join(f'"{f}"' for f in files), extra=extra))
    return path


def test_unspecified_boxes_identities_and_split_files(tmp_path):
    imgs = _images(tmp_path, 4)
    _write_table(
        tmp_path / "train.csv",
        ["image", "person", "x", "y", "w", "h", "hat", "bag", "note"],
        [
            [imgs[0], 7, 1, 2, 20, 30, "1", "", "a"],
            [imgs[1], 7, 0, 0, 40, 80, "0", "NA", "b"],
            [imgs[2], 8, 5, 5, 10, 10, "1", "0", ""],
        ],
    )
    _write_table(
        tmp_path / "test.csv",
        ["image", "person", "x", "y", "w", "h", "hat", "bag", "note"],
        [[imgs[3], 9, 0, 0, 40, 80, "n/a", "1", ""]],
    )
    card = _card(
        tmp_path,
        ("train.csv", "test.csv"),
        'root = "."\n[reader_options]\nidentity_column = "person"\n'
        'split_files = {train = "train.csv", test = "test.csv"}',
    )
    ds = load_dataset(str(card), use_prepared=False)
    assert ds.labels.tolist() == [[1, UNSPECIFIED], [0, UNSPECIFIED], [1, 0], [UNSPECIFIED, 1]]
    assert ds.partition("train").tolist() == [0, 1, 2] and ds.partition("test").tolist() == [3]
    assert ds.identities.tolist() == [7, 7, 8, 9]
    assert ds.boxes[0].tolist() == [1, 2, 20, 30] and ds.box_origins[0] == "train.csv line 2"
    from parbench.data.torchdata import load_image

    assert load_image(ds, 0).size == (20, 30)  # the person box is cropped at load


@pytest.mark.parametrize(
    "header,row,needles",
    [
        (["image", "split", "hat", "bag"], ["a.png", "train", "2", "0"], ["t.csv:2", "column 'hat'", "'2'"]),
        (["image", "split", "hat", "bag"], ["a.png", "train", "-1", "0"], ["t.csv:2", "'-1'"]),
        (["image", "split", "hat"], ["a.png", "train", "1"], ["t.csv", "a column for each", "missing: bag"]),
        (["path", "split", "hat", "bag"], ["a.png", "train", "1", "0"], ["t.csv", "image path column 'image'"]),
        (["image", "hat", "bag"], ["a.png", "1", "0"], ["t.csv", "a split column 'split'"]),
        (["image", "split", "hat", "bag"], ["../a.png", "train", "1", "0"], ["t.csv:2", "inside the dataset root"]),
        (["image", "split", "hat", "bag"], ["", "train", "1", "0"], ["t.csv:2", "an image path"]),
    ],
)  # fmt: skip
def test_bad_tables_are_one_line_naming_file_line_and_column(tmp_path, header, row, needles):
    _write_table(tmp_path / "t.csv", header, [row])
    card = _card(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "parbench", "datasets", "prepare", str(card), "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    one_line_error(proc.returncode, proc.stderr, *needles)


@pytest.mark.parametrize(
    "train,test,needles",
    [
        ([], [[0, "1", "0"]], ["train.csv:", "an annotation row under the header", "a header only"]),
        (
            [[0, "1", "0"], [0, "0", "0"]],
            [[3, "1", "0"]],
            ["train.csv:3", "each image on one row", "'imgs/0.png' again", "train.csv:2, with other labels"],
        ),
        (
            [[0, "1", "0"], [1, "0", "0"]],
            [[0, "1", "0"]],
            ["test.csv:2", "'imgs/0.png' again", "split 'train' there and 'test' here", "train.csv:2"],
        ),
    ],
)
def test_an_image_on_two_rows_or_in_two_splits_and_a_header_only_file_are_refused(tmp_path, train, test, needles):
    imgs = _images(tmp_path, 4)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        _write_table(tmp_path / name, ["image", "hat", "bag"], [[imgs[r[0]], *r[1:]] for r in rows])
    card = _card(
        tmp_path,
        ("train.csv", "test.csv"),
        'root = "."\n[reader_options]\nsplit_files = {train = "train.csv", test = "test.csv"}',
    )
    proc = subprocess.run(
        [sys.executable, "-m", "parbench", "datasets", "prepare", str(card)], capture_output=True, text=True
    )
    one_line_error(proc.returncode, proc.stderr, *needles)


def test_one_scene_image_may_hold_several_person_boxes(tmp_path):
    imgs = _images(tmp_path, 2)
    header = ["image", "split", "x", "y", "w", "h", "hat", "bag"]
    _write_table(
        tmp_path / "t.csv",
        header,
        [
            [imgs[0], "train", 0, 0, 10, 20, 1, 0],
            [imgs[0], "train", 20, 0, 10, 20, 0, 1],
            [imgs[1], "test", 0, 0, 10, 20, 1, 1],
        ],
    )
    ds = load_dataset(str(_card(tmp_path, extra='root = "."')), use_prepared=False)
    assert len(ds) == 3 and ds.partition("train").tolist() == [0, 1]


def test_unknown_reader_options_and_unlisted_split_files(tmp_path):
    _write_table(tmp_path / "t.csv", ["image", "split", "hat", "bag"], [["a.png", "train", "1", "0"]])
    with pytest.raises(ParbenchError, match=r"\[reader_options\] of the table reader.*unknown \['path_col'\]"):
        load_dataset(str(_card(tmp_path, extra='[reader_options]\npath_col = "x"')), tmp_path, use_prepared=False)
    with pytest.raises(ParbenchError, match=r"'u.csv' listed in source_files"):
        load_dataset(
            str(_card(tmp_path, extra='[reader_options]\nsplit_files = {train = "u.csv"}')),
            tmp_path,
            use_prepared=False,
        )


def test_card_folders_and_datasets_new(tmp_path):
    imgs = _images(tmp_path / "data", 6)
    _write_table(
        tmp_path / "data" / "ann.csv",
        ["image", "split", "hat", "bag", "camera"],
        [[p, "train" if i < 4 else "test", i % 2, "" if i == 1 else (i // 2) % 2, i + 1] for i, p in enumerate(imgs)],
    )
    env = {**os.environ, "PARBENCH_CARDS": str(tmp_path / "cards")}
    (tmp_path / "cards").mkdir()
    cmd = [
        sys.executable,
        "-m",
        "parbench",
        "datasets",
        "new",
        "Street-X",
        "--from",
        str(tmp_path / "data" / "ann.csv"),
        "-o",
        str(tmp_path / "cards" / "street_x.toml"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    card = parse_card(tmp_path / "cards" / "street_x.toml")
    assert card.attribute_names == ["hat", "bag"] and card.splits == {"test": 2, "train": 4}
    assert "left out: camera" in Path(card.path).read_text()
    assert "# positive ratio 0.500 on train, 0 unspecified" in Path(card.path).read_text()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    one_line_error(proc.returncode, proc.stderr, "street_x.toml", "--force")  # never overwritten by accident
    proc = subprocess.run(
        [sys.executable, "-m", "parbench", "datasets", "list", "--json"], capture_output=True, text=True, env=env
    )
    assert "Street-X" in {d["name"] for d in json.loads(proc.stdout)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PARBENCH_CARDS", str(tmp_path / "cards"))
        ds = load_dataset("street-x", use_prepared=False)  # by name, found in the card folder; its root from the card
        assert ds.labels[:, 1].tolist() == [0, UNSPECIFIED, 1, 1, 0, 0]
        mp.setenv("PARBENCH_CARDS", str(tmp_path / "nowhere"))
        with pytest.raises(ParbenchError, match="nowhere: a folder of dataset cards"):
            load_card("street-x")
