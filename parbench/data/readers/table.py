"""The generic `table` reader: a dataset of your own as a CSV, TSV or JSON-lines file, one row per image.

A card with `reader = "table"` points at the file(s) in `source_files`, relative to the dataset root:

- one file holding every split, with a split column (`split`: train / val / test, any names the card uses), or
- one file per split: `[reader_options] split_files = {train = "train.csv", val = "val.csv", test = "test.csv"}`
  (each listed in `source_files` too, so its content is part of every run's identity).

Columns (names set in `[reader_options]`, defaults in brackets): the image path relative to the root, under the
card's `images` folder when it has one [`image`]; an optional person box [`x`, `y`, `w`, `h`], cropped at load;
an optional identity [`identity`]; the split [`split`]; one column per card attribute, matched by the
attribute's name (or `columns = {attribute = "column"}`), valued 1 (positive), 0 (negative), or empty / NA /
null (unspecified: 255). Other columns are ignored. A `trainval` split is the union of train and val where the
file has no split of that name. Each image (each person box of an image, where the table has boxes) is on one row:
the same image twice, in one split or two, is refused with both lines named, since it would be counted twice or
leak between training and test. Anything else is an error naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from parbench.cards import Card
from parbench.data.dataset import PARDataset, check_relpath
from parbench.errors import ParbenchError
from parbench.labels import UNSPECIFIED

OPTIONS = {
    "path_column": "image",
    "split_column": "split",
    "identity_column": "identity",
    "box_columns": ["x", "y", "w", "h"],
    "columns": {},
    "split_files": {},
}
MISSING = ("", "na", "n/a", "nan", "none", "null")
VALUES = {"1": 1, "1.0": 1, "true": 1, "0": 0, "0.0": 0, "false": 0}


def options_of(card: Card) -> dict[str, Any]:
    unknown = sorted(set(card.reader_options) - set(OPTIONS))
    if unknown:
        raise ParbenchError(
            card.path, f"[reader_options] of the table reader among {', '.join(OPTIONS)}", f"unknown {unknown}"
        )
    return {**OPTIONS, **card.reader_options}


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(column names, [(line number, row)]) of a .csv, .tsv or .jsonl file."""
    if not path.is_file():
        raise ParbenchError(path, "the dataset's annotation table", "no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is not part of the first column name
    except UnicodeDecodeError as e:
        raise ParbenchError(path, "a UTF-8 text table", str(e)) from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows, columns = [], {}
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ParbenchError(f"{path}:{n}", "one JSON object per line", str(e)) from None
            if not isinstance(row, dict):
                raise ParbenchError(f"{path}:{n}", "one JSON object per line", type(row).__name__)
            columns.update(dict.fromkeys(row))
            rows.append((n, row))
        return list(columns), rows
    if path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        raise ParbenchError(path, "a .csv, .tsv or .jsonl annotation table", f"a '{path.suffix}' file")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = [c.strip() for c in reader.fieldnames or []]
    rows = []
    for row in reader:
        if None in row:  # more cells than header columns
            raise ParbenchError(f"{path}:{reader.line_num}", f"{len(columns)} cells, as the header", "more")
        rows.append((reader.line_num, {k.strip(): v for k, v in row.items()}))
    return columns, rows


def _label(value: Any, where: str, column: str) -> int:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNSPECIFIED
    if isinstance(value, bool):
        return int(value)
    key = str(value).strip().lower()
    if key in MISSING:
        return UNSPECIFIED
    if key not in VALUES:
        raise ParbenchError(where, f"column '{column}': 1, 0 or empty/NA (unspecified)", repr(value))
    return VALUES[key]


def _number(value: Any, where: str, column: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParbenchError(where, f"column '{column}': a number", repr(value)) from None
    if not math.isfinite(v):
        raise ParbenchError(where, f"column '{column}': a finite number", repr(value))
    return v


def _columns(card: Card, opts: dict, header: list[str], path: Path) -> list[str]:
    """The table column of each card attribute, in the card's order; every one must be there."""
    cols = [opts["columns"].get(a, a) for a in card.attribute_names]
    missing = [c for c in cols if c not in header]
    if missing:
        raise ParbenchError(
            path,
            f"a column for each of the card's {len(cols)} attributes",
            f"{len(missing)} missing: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}",
        )
    if opts["path_column"] not in header:
        raise ParbenchError(
            path,
            f"an image path column '{opts['path_column']}' ([reader_options] path_column)",
            f"columns {header[:8]}",
        )
    return cols


def _check_once(seen: dict, key: tuple, split: str, row: list[int], where: str, labels: list) -> None:
    """Refuse an image (or person box) on a second row, naming both lines."""
    if key not in seen:
        seen[key] = (split, where, len(labels) - 1)
        return
    first_split, first, i = seen[key]
    what = "its first row" if first_split == split else f"split '{first_split}' there and '{split}' here"
    labels_differ = ", with other labels" if labels[i] != row else ""
    box = f" box {list(key[1])}" if key[1] is not None else ""
    raise ParbenchError(
        where,
        f"each image{' box' if box else ''} on one row",
        f"'{key[0]}'{box} again ({what}, {first}{labels_differ})",
    )


def read_table(card: Card, root: Path, partition: int = 0) -> PARDataset:
    """A `PARDataset` from the card's table file(s); see the module docstring."""
    if partition != 0:
        raise ParbenchError(card.name, "partition 0 (a table holds one split)", str(partition))
    opts = options_of(card)
    files = dict(opts["split_files"]) or {None: card.source_files[0] if card.source_files else ""}
    for f in files.values():
        if f not in card.source_files:
            raise ParbenchError(
                card.path,
                f"'{f}' listed in source_files (its content is part of a run's identity)",
                f"source_files {list(card.source_files)}",
            )
    relpaths, labels, splits, idents, boxes, origins = [], [], [], [], [], []
    seen: dict[tuple, tuple[str, str]] = {}  # (image, box) -> (split, file:line) of its first row
    box_cols = list(opts["box_columns"])
    for split, name in files.items():
        path = root / name
        header, rows = read_rows(path)
        if not rows:
            raise ParbenchError(path, "an annotation row under the header (one per image)", "a header only")
        cols = _columns(card, opts, header, path)
        has_box = all(c in header for c in box_cols)
        has_id = opts["identity_column"] in header
        if split is None and opts["split_column"] not in header:
            raise ParbenchError(
                path,
                f"a split column '{opts['split_column']}' (or [reader_options] split_files)",
                f"columns {header[:8]}",
            )
        for n, row in rows:
            where = f"{path}:{n}"
            image = row.get(opts["path_column"])
            if image is None or not str(image).strip():
                raise ParbenchError(where, f"an image path in column '{opts['path_column']}'", "none")
            rel = check_relpath(str(image).strip(), where)
            relpaths.append(f"{card.images}/{rel}" if card.images else rel)
            labels.append([_label(row.get(c), where, c) for c in cols])
            splits.append(split if split is not None else str(row.get(opts["split_column"]) or "").strip())
            if has_box:
                box = [_number(row.get(c), where, c) for c in box_cols]
                if box[2] <= 0 or box[3] <= 0:
                    raise ParbenchError(where, "a person box with w and h > 0", repr(box))
                boxes.append(box)
                origins.append(f"{name} line {n}")
            if has_id:
                value = row.get(opts["identity_column"])
                idents.append(int(_number(value, where, opts["identity_column"])) if value not in ("", None) else -1)
            _check_once(seen, (rel, tuple(boxes[-1]) if has_box else None), splits[-1], labels[-1], where, labels)
    names = sorted(set(splits))
    if "" in names:
        raise ParbenchError(
            root / files[None],
            f"a split name in column '{opts['split_column']}' on every row",
            f"{splits.count('')} rows without one",
        )
    parts = {s: np.flatnonzero(np.asarray(splits) == s).astype(np.int64) for s in names}
    if "trainval" not in parts and "train" in parts and "val" in parts:
        parts["trainval"] = np.sort(np.concatenate([parts["train"], parts["val"]]))
    for what, got in (("a person box", boxes), ("an identity", idents)):
        if 0 < len(got) < len(relpaths):
            raise ParbenchError(
                card.path,
                f"{what} on every row or on none (split files with the same columns)",
                f"{len(got)} of {len(relpaths)} rows",
            )
    return PARDataset(
        name=card.name,
        attributes=card.attribute_names,
        labels=np.asarray(labels, dtype=np.uint8).reshape(len(relpaths), card.num_attributes),
        relpaths=relpaths,
        root=root,
        partitions=parts,
        identities=np.asarray(idents, np.int64) if idents else None,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4) if boxes else None,
        box_origins=origins or None,
        partition_index=partition,
        card_version=card.version,
    )
