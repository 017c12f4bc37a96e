"""Readers of the original MATLAB annotation files: PETA, PA100k, RAPv1, RAPv2 (and their ZS splits).

Indexing follows the reference preprocessing scripts (Rethinking_of_PAR `format_*.py`, which PromptPAR's
`*_pad.py` mirror): structs read by position (PETA, RAPv1) or by field name (RAPv2), 1-based indices turned
0-based, partition 0 of 5 by default. Labels keep their meaning: RAP's 2 (uncertain) becomes 255.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from parbench.cards import Card
from parbench.data.dataset import PARDataset, check_relpath
from parbench.data.pickles import first_if_list, get, load_pickle
from parbench.errors import ParbenchError
from parbench.labels import UNSPECIFIED


def loadmat(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ParbenchError(path, "the original annotation file", "no such file")
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types for a file that is not a .mat
        raise ParbenchError(path, "a MATLAB .mat file", f"{type(e).__name__}: {e}") from None


def cell_str(x: Any) -> str:
    """Unwrap a MATLAB cell element (nested 1-element arrays) to its string."""
    while isinstance(x, np.ndarray):
        if x.size != 1:
            break
        x = x.reshape(-1)[0]
    if isinstance(x, np.ndarray) and x.dtype.kind == "U":
        return "".join(x.reshape(-1).tolist())
    return str(x)


def dig(obj: Any, path: Path, what: str, *keys: Any) -> Any:
    """Index nested MATLAB structures, turning any miss into one clear error."""
    try:
        for k in keys:
            obj = obj[k]
        return obj
    except (IndexError, KeyError, ValueError, TypeError) as e:
        raise ParbenchError(path, f"{what} at {list(keys)}", f"{type(e).__name__}: {e}") from None


def indices(arr: Any, path: Path, what: str, n: int) -> np.ndarray:
    """1-based MATLAB indices -> 0-based int64, range-checked."""
    idx = np.asarray(arr).astype(np.int64).reshape(-1) - 1
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ParbenchError(path, f"{what}: 1-based indices in [1, {n}]", f"{idx.min() + 1}..{idx.max() + 1}")
    return idx


def binary_labels(raw: np.ndarray, path: Path, allow_uncertain: bool) -> np.ndarray:
    """Check coding and map to canonical uint8 (RAP's 2 -> 255)."""
    raw = np.asarray(raw)
    allowed = {0, 1, 2} if allow_uncertain else {0, 1}
    values = set(np.unique(raw).tolist())
    if not values <= allowed:
        raise ParbenchError(path, f"label values in {sorted(allowed)}", f"{sorted(values - allowed)[:5]}")
    out = raw.astype(np.uint8)
    out[out == 2] = UNSPECIFIED
    return out


def check_names(card: Card, found: list[str], path: Path) -> None:
    """Attribute names in the file should match the card; a mismatch is worth a warning, not a refusal."""
    want = card.attribute_names
    bad = [(w, f) for w, f in zip(want, found, strict=True) if w.lower() != f.strip().lower()]
    if bad:
        warnings.warn(
            f"{path}: attribute names differ from the {card.name} card at {len(bad)} columns, e.g. "
            f"card '{bad[0][0]}' vs file '{bad[0][1]}'; columns are taken by position as the references do",
            stacklevel=3,
        )


def pick_partition(n_partitions: int, partition: int, path: Path) -> int:
    if not 0 <= partition < n_partitions:
        raise ParbenchError(path, f"a partition in 0..{n_partitions - 1}", str(partition))
    return partition


def zs_partitions(card: Card, root: Path, n: int) -> dict[str, np.ndarray]:
    """The published zero-shot split: only its index arrays are used (labels come from the .mat)."""
    path = root / card.reader_options["zs_index"]
    obj = load_pickle(path)
    part = get(obj, "partition", path)
    out = {s: first_if_list(get(part, s, path)) for s in ("train", "val", "test")}
    for s, idx in out.items():
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ParbenchError(path, f"'{s}' indices in [0, {n})", f"{idx.min()}..{idx.max()}")
    out["trainval"] = np.concatenate([out["train"], out["val"]])
    return out


def _dataset(card: Card, root: Path, labels, relpaths, partitions, **kw) -> PARDataset:
    return PARDataset(
        name=card.name,
        attributes=card.attribute_names,
        labels=labels,
        relpaths=relpaths,
        root=root,
        partitions={k: np.asarray(v, dtype=np.int64) for k, v in partitions.items()},
        card_version=card.version,
        **kw,
    )


def read_peta(card: Card, root: Path, partition: int = 0) -> PARDataset:
    path = root / card.source_files[0]
    mat = loadmat(path)
    peta = dig(mat, path, "variable 'peta'", "peta", 0, 0)
    data = np.asarray(dig(peta, path, "the data matrix", 0))
    if data.ndim != 2 or data.shape[1] < 5:
        raise ParbenchError(path, "peta data matrix N x (4 + attributes)", str(data.shape))
    n = data.shape[0]
    raw = binary_labels(data[:, 4:], path, allow_uncertain=False)
    names = [cell_str(x) for x in dig(peta, path, "attribute names", 1)]
    cols = [a.raw for a in card.attributes]
    if raw.shape[1] <= max(cols):
        raise ParbenchError(
            path, f"at least {max(cols) + 1} attribute columns after the 4 leading ones", str(raw.shape[1])
        )
    check_names(card, [names[c] if c < len(names) else "?" for c in cols], path)
    if "zs_index" in card.reader_options:
        parts = zs_partitions(card, root, n)
    else:
        parts_cell = dig(peta, path, "the 5 partitions", 3)
        k = pick_partition(len(parts_cell), partition, path)
        split = {
            s: indices(dig(parts_cell, path, f"partition {k} {s}", k, 0, 0, 0, i)[:, 0], path, s, n)
            for i, s in enumerate(("train", "val", "test"))
        }
        parts = {**split, "trainval": np.concatenate([split["train"], split["val"]])}
    rest = [c for c in range(raw.shape[1]) if c not in set(cols)]
    relpaths = [f"{card.images}/{i + 1:05d}.png" for i in range(n)]
    return _dataset(
        card,
        root,
        raw[:, cols],
        relpaths,
        parts,
        extra_attributes=[names[c] for c in rest if c < len(names)],
        extra_labels=raw[:, rest],
        partition_index=partition,
    )


def read_pa100k(card: Card, root: Path, partition: int = 0) -> PARDataset:
    path = root / card.source_files[0]
    mat = loadmat(path)
    names, labels, parts, start = [], [], {}, 0
    for split in ("train", "val", "test"):
        cell = dig(mat, path, f"variable '{split}_images_name'", f"{split}_images_name")
        lab = np.asarray(dig(mat, path, f"variable '{split}_label'", f"{split}_label"))
        if lab.ndim != 2 or lab.shape[0] != len(cell):
            raise ParbenchError(path, f"{split}_label with one row per image ({len(cell)})", str(lab.shape))
        names += [check_relpath(cell_str(x), path) for x in cell]
        labels.append(lab)
        parts[split] = np.arange(start, start + len(cell))
        start += len(cell)
    parts["trainval"] = np.concatenate([parts["train"], parts["val"]])
    raw = binary_labels(np.concatenate(labels), path, allow_uncertain=False)
    file_attrs = [cell_str(x) for x in dig(mat, path, "variable 'attributes'", "attributes")]
    cols = [a.raw for a in card.attributes]
    if raw.shape[1] != len(card.raw_order):
        raise ParbenchError(path, f"{len(card.raw_order)} label columns", str(raw.shape[1]))
    check_names(card, [file_attrs[c] for c in cols], path)
    relpaths = [f"{card.images}/{p}" for p in names]
    return _dataset(card, root, raw[:, cols], relpaths, parts, partition_index=partition)


def read_rapv1(card: Card, root: Path, partition: int = 0) -> PARDataset:
    path = root / card.source_files[0]
    mat = loadmat(path)
    rap = dig(mat, path, "variable 'RAP_annotation'", "RAP_annotation", 0, 0)
    raw = binary_labels(dig(rap, path, "the label matrix", 1), path, allow_uncertain=True)
    n = raw.shape[0]
    if raw.ndim != 2 or raw.shape[1] < len(card.raw_order):
        raise ParbenchError(path, f"a label matrix with at least {len(card.raw_order)} columns", str(raw.shape))
    image_cell = dig(rap, path, "image names", 5)
    if len(image_cell) != n:
        raise ParbenchError(path, f"{n} image names (one per label row)", str(len(image_cell)))
    names = [cell_str(x) for x in dig(rap, path, "English attribute names", 3)]
    cols = [a.raw for a in card.attributes]
    check_names(card, [names[c] for c in cols], path)
    parts_cell = dig(rap, path, "the 5 partitions", 0)
    k = pick_partition(len(parts_cell), partition, path)
    parts = {
        s: indices(dig(parts_cell, path, f"partition {k} {s}", k, 0, 0, 0, i)[0, :], path, s, n)
        for i, s in enumerate(("trainval", "test"))
    }
    rest = list(range(len(card.raw_order), raw.shape[1]))  # face direction, occlusion, colours
    relpaths = [f"{card.images}/{check_relpath(cell_str(x), path)}" for x in image_cell]
    return _dataset(
        card,
        root,
        raw[:, cols],
        relpaths,
        parts,
        extra_attributes=[names[c] for c in rest],
        extra_labels=raw[:, rest],
        partition_index=partition,
    )


RAP2_COLOUR = list(range(31, 45)) + list(range(53, 67)) + list(range(74, 88))


def read_rapv2(card: Card, root: Path, partition: int = 0) -> PARDataset:
    path = root / card.source_files[0]
    mat = loadmat(path)
    rap = dig(mat, path, "variable 'RAP_annotation'", "RAP_annotation")
    field = lambda name: dig(rap, path, f"field '{name}'", name, 0, 0)
    data = np.asarray(field("data"))
    n = data.shape[0]
    image_cell = field("name")
    if len(image_cell) != n:
        raise ParbenchError(path, f"{n} image names (one per label row)", str(len(image_cell)))
    names = [cell_str(x) for x in field("attribute")]
    selected = np.asarray(field("selected_attribute")).reshape(-1).astype(np.int64) - 1
    order = card.reader_options["group_order"]
    if max(order) >= selected.size:
        raise ParbenchError(path, f"selected_attribute with at least {max(order) + 1} entries", str(selected.size))
    cols = selected[order].tolist()
    # Only evaluated, colour and extra columns are binary (viewpoint and boxes are not): check those.
    full_selected = selected.tolist()
    extra = np.setdiff1d(np.arange(data.shape[1]), RAP2_COLOUR + full_selected).tolist()[:24]
    extra = extra[:15] + extra[16:]  # drop `viewpoint`, as Rethinking_of_PAR does
    rest = RAP2_COLOUR + extra if data.shape[1] >= 120 else []
    labels = binary_labels(data[:, cols + rest], path, allow_uncertain=True)
    check_names(card, [names[c] for c in cols], path)
    if "zs_index" in card.reader_options:
        parts = zs_partitions(card, root, n)
    else:
        pcell = dig(rap, path, "field 'partition_attribute'", "partition_attribute", 0, 0, 0)
        k = pick_partition(len(pcell), partition, path)
        parts = {
            s: indices(dig(pcell, path, f"partition {k} {s}_index", k, f"{s}_index", 0, 0, 0), path, s, n)
            for s in ("train", "val", "test")
        }
        parts["trainval"] = np.concatenate([parts["train"], parts["val"]])
    ident = None
    if "person_identity" in (rap.dtype.names or ()):
        ident = np.asarray(field("person_identity")).reshape(-1).astype(np.int64)
    relpaths = [f"{card.images}/{check_relpath(cell_str(x), path)}" for x in image_cell]
    k_eval = len(cols)
    return _dataset(
        card,
        root,
        labels[:, :k_eval],
        relpaths,
        parts,
        identities=ident,
        extra_attributes=[names[c] for c in rest],
        extra_labels=labels[:, k_eval:],
        partition_index=partition,
    )
