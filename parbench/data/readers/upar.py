"""UPAR (Specker et al., WACV 2023): PA100k, PETA, RAPv2 and Market-1501 relabelled to 40 shared attributes.

`dataset_all.pkl` (speckean/upar_dataset; an EasyDict, read through the restricted unpickler) holds every image
of the four sources: `image_name` (paths relative to one folder holding the sources), `label` (N x 40),
`attr_name`, `dataset_ids`, and 9 partitions, `partition.{train, val, trainval}[p]` index arrays and
`partition.test[p]` a list of per-source index lists (the authors' loader concatenates them and keeps their
lengths to score each source). Partition 0 trains on all data; 1/3/5/7 are the cross-validation protocol,
2/4/6/8 leave one dataset out. Each image's source is read off its path (the component naming RAP2, PETA,
PA100k or Market1501), kept as the dataset's domains, so the test scores come per source; `dataset_ids` is
not used, its coding being documented nowhere we could read.

The challenge CSVs (speckean/upar_challenge: `# image,<40 names>` header, one row per image, 0/1) carry labels
for the training images only; `read_upar_csv` reads one and holds out the sources the card names as test.

Not confirmed from the authors' files: how unknown labels are coded (no loader masks anything). Values other than
0/1 are read as unspecified and counted in the notes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from parbench.cards import Card
from parbench.data.dataset import PARDataset, check_relpath
from parbench.data.pickles import get, load_pickle
from parbench.errors import ParbenchError
from parbench.labels import UNSPECIFIED

SOURCES = {"RAP2": "RAPv2", "RAPV2": "RAPv2", "PETA": "PETA", "PA100K": "PA100k", "MARKET1501": "Market-1501"}


def source_of(image: str) -> str | None:
    for part in image.replace("\\", "/").split("/"):
        key = part.upper().replace("-", "")
        if key in SOURCES:
            return SOURCES[key]
    return None


def _sources(images: list[str], path: Path) -> list[str]:
    out = [source_of(n) for n in images]
    bad = [n for n, s in zip(images, out, strict=True) if s is None]
    if bad:
        raise ParbenchError(path, "image paths naming their source (RAP2, PETA, PA100k or Market1501)", bad[0])
    return out


def _columns(card: Card, names: list[str], label: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    """Card-order labels by name, values other than 0/1 as unspecified (counted)."""
    where = {n.strip().lower(): i for i, n in enumerate(names)}
    missing = [a for a in card.attribute_names if a.lower() not in where]
    if missing:
        raise ParbenchError(path, "columns for UPAR's 40 attributes", f"no column named {missing[:4]}")
    raw = label[:, [where[a.lower()] for a in card.attribute_names]]
    odd = ~np.isin(raw, (0, 1))
    out = raw.astype(np.int64).clip(0, 1).astype(np.uint8)
    out[odd] = UNSPECIFIED
    notes = []
    if odd.any():
        values = sorted(set(np.unique(raw[odd]).tolist()))
        notes.append(f"{int(odd.sum())} labels coded {values} (meaning not confirmed) read as unspecified")
    return out, notes


def _dataset(card, root, path, images, labels, parts, notes, partition: int = 0) -> PARDataset:
    """The four sources' images under one root, each image's source (read off its path) as its domain."""
    prefix = f"{card.images}/" if card.images else ""
    return PARDataset(
        name=card.name,
        attributes=card.attribute_names,
        labels=labels,
        relpaths=[prefix + check_relpath(n, path) for n in images],
        root=root,
        partitions=parts,
        domains=_sources(images, path),
        partition_index=partition,
        card_version=card.version,
        notes=notes,
    )


def read_upar(card: Card, root: Path, partition: int = 0) -> PARDataset:
    path = root / card.source_files[0]
    obj = load_pickle(path)
    label = np.asarray(get(obj, "label", path))
    images = [str(n) for n in get(obj, "image_name", path)]
    if label.ndim != 2 or len(label) != len(images):
        raise ParbenchError(path, f"a label matrix with one row per image ({len(images)})", f"shape {label.shape}")
    labels, notes = _columns(card, [str(n) for n in get(obj, "attr_name", path)], label, path)
    part = get(obj, "partition", path)
    parts = {}
    for s in ("train", "val", "trainval", "test"):
        value = get(part, s, path)
        if not isinstance(value, list | tuple) or partition >= len(value):
            raise ParbenchError(
                path, f"partition.{s}: a list of {card.partitions} partitions", f"no partition {partition}"
            )
        value = value[partition]
        if s == "test":  # per-source lists, concatenated as the authors' loader does
            value = np.concatenate([np.asarray(v, np.int64).reshape(-1) for v in value]) if len(value) else []
        parts[s] = np.asarray(value, np.int64).reshape(-1)
    return _dataset(card, root, path, images, labels, parts, notes, partition)


def read_upar_csv(card: Card, root: Path, partition: int = 0) -> PARDataset:
    path = root / card.source_files[0]
    if not path.is_file():
        raise ParbenchError(path, "the UPAR challenge annotation CSV", "no such file")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or not rows[0] or not rows[0][0].lstrip("# ").lower().startswith("image"):
        raise ParbenchError(path, "a header '# image,<40 attribute names>'", repr(rows[0][:2]) if rows else "empty")
    header = [h.strip() for h in rows[0][1:]]
    images, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header) + 1:
            raise ParbenchError(f"{path}:{line}", f"{len(header) + 1} fields (image and labels)", str(len(row)))
        try:
            values.append([int(float(v)) for v in row[1:]])
        except ValueError:
            raise ParbenchError(f"{path}:{line}", "integer labels", repr(row[1:4])) from None
        images.append(row[0].strip())
    labels, notes = _columns(card, header, np.asarray(values, np.int64).reshape(len(images), -1), path)
    held = set(card.reader_options.get("test_sources", []))
    is_test = np.array([d in held for d in _sources(images, path)])
    parts = {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}
    return _dataset(card, root, path, images, labels, parts, notes)
