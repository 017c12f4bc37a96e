"""Dataset audits: identities shared across splits, and exact-duplicate images across splits."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from parbench.data.dataset import PARDataset


def identity_overlap(ds: PARDataset, a: str, b: str) -> list[int]:
    if ds.identities is None or a not in ds.partitions or b not in ds.partitions:
        return []
    ia, ib = ds.identities[ds.partition(a)], ds.identities[ds.partition(b)]
    ia, ib = ia[ia >= 0], ib[ib >= 0]  # negative ids mean "no identity"
    return sorted(set(ia.tolist()) & set(ib.tolist()))


def duplicate_images(ds: PARDataset, progress=None) -> list[dict]:
    """Images with identical bytes that sit in different splits."""
    split_of: dict[int, list[str]] = defaultdict(list)
    for s, idx in ds.partitions.items():
        if s == "trainval":
            continue
        for i in idx.tolist():
            split_of[i].append(s)
    by_hash: dict[str, list[int]] = defaultdict(list)
    paths = ds.image_paths
    items = sorted(split_of)
    for n, i in enumerate(items):
        try:
            with open(paths[i], "rb") as f:
                by_hash[hashlib.sha256(f.read()).hexdigest()].append(i)
        except OSError:
            continue
        if progress and n % 500 == 0:
            progress(n, len(items))
    out = []
    for h, rows in by_hash.items():
        splits = sorted({s for i in rows for s in split_of[i]})
        if len(rows) > 1 and len(splits) > 1:
            out.append({"sha256": h[:16], "images": [ds.relpaths[i] for i in rows], "splits": splits})
    return out


def audit(ds: PARDataset, hashes: bool = True, progress=None) -> dict:
    rep = {"dataset": ds.name, "has_identities": ds.identities is not None}
    if ds.identities is not None:
        rep["identities_train_test"] = len(
            identity_overlap(ds, "train" if "train" in ds.partitions else "trainval", "test")
        )
        rep["identities_trainval_test"] = (
            len(identity_overlap(ds, "trainval", "test")) if "trainval" in ds.partitions else 0
        )
    if hashes:
        dups = duplicate_images(ds, progress)
        rep["duplicate_groups_across_splits"] = len(dups)
        rep["duplicate_examples"] = dups[:5]
    return rep


def identity_split(identities: np.ndarray, seed: int = 0, fractions=(0.6, 0.2, 0.2)) -> dict[str, np.ndarray]:
    """A seeded identity-disjoint train/val/test split of the rows that have an identity."""
    rows = np.flatnonzero(identities >= 0)
    ids = np.unique(identities[rows])
    perm = np.random.default_rng(seed).permutation(ids)
    a, b = int(fractions[0] * len(ids)), int((fractions[0] + fractions[1]) * len(ids))
    out = {}
    for name, group in (("train", perm[:a]), ("val", perm[a:b]), ("test", perm[b:])):
        out[name] = np.sort(rows[np.isin(identities[rows], group)])
    out["trainval"] = np.sort(np.concatenate([out["train"], out["val"]]))
    return out


def write_identity_split(ds, path, seed: int = 0, fractions=(0.6, 0.2, 0.2)) -> dict:
    """identity_split of a dataset written (atomically) as JSON: indices and image names per split, so the
    split is reproducible and portable; returns a summary. Refuses datasets without identities."""
    import json

    from parbench.atomic import write_text
    from parbench.errors import ParbenchError

    if ds.identities is None or not (ds.identities >= 0).any():
        raise ParbenchError(ds.name, "a dataset with person identities (RAPv2, synthetic)", "none")
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ParbenchError("--fractions", "three non-negative shares summing to 1", str(fractions))
    splits = identity_split(ds.identities, seed, fractions)
    doc = {
        "format": "parbench-identity-split",
        "dataset": ds.name,
        "seed": seed,
        "fractions": list(fractions),
        "splits": {k: {"index": v.tolist(), "images": [ds.relpaths[i] for i in v]} for k, v in splits.items()},
    }
    write_text(path, json.dumps(doc))
    return {
        "dataset": ds.name,
        "seed": seed,
        "output": str(path),
        "splits": {
            k: {"images": int(v.size), "identities": int(np.unique(ds.identities[v]).size)} for k, v in splits.items()
        },
    }


def apply_split_file(ds, path):
    """Replace a dataset's partitions by a split written by write_identity_split, after checking that it was
    made for this dataset (name, and the image names at its indices)."""
    import dataclasses
    import json
    from pathlib import Path

    from parbench.errors import ParbenchError

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ParbenchError(path, "a split file written by `parbench datasets zs-split`", str(e)) from None
    if not isinstance(doc, dict) or doc.get("format") != "parbench-identity-split":
        raise ParbenchError(
            path,
            "format 'parbench-identity-split'",
            repr(doc.get("format") if isinstance(doc, dict) else doc),
        )
    if doc.get("dataset") != ds.name:
        raise ParbenchError(path, f"a split of {ds.name}", f"a split of {doc.get('dataset')}")
    parts = {}
    for name, split in doc["splits"].items():
        idx = np.asarray(split["index"], dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(ds.relpaths)):
            raise ParbenchError(path, f"indices below {len(ds.relpaths)} in split {name}", f"max {idx.max()}")
        if [ds.relpaths[i] for i in idx] != list(split["images"]):
            raise ParbenchError(path, f"the same images as {ds.name} at root {ds.root}", f"other images in {name}")
        parts[name] = idx
    return dataclasses.replace(ds, partitions=parts)
