"""Resolve a dataset's root, read it with its card's reader, and keep a fast prepared copy."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from parbench.atomic import save_npz, write_text
from parbench.cards import Card, load_card
from parbench.data.dataset import PARDataset
from parbench.errors import ParbenchError
from parbench.registry import readers
from parbench.settings import cache_dir, configured_root, env_var

PREPARED_VERSION = 3  # 2: box origins, 3: image domains
_ARRAYS = ("labels", "identities", "boxes", "extra_labels")


def resolve_root(card: Card, root: str | Path | None, flag: str = "--root DIR") -> Path:
    """Explicit root > environment/config > the card's own `root` (relative to the card file) > (synthetic
    only) generated into the cache. `flag`: how the command at hand takes a root, for the advice."""
    if root is None:
        root = configured_root(card.name)
    if root is None and card.root and card.path:  # a card kept beside its data names the folder itself
        root = Path(card.path).parent / card.root
    if root is None and card.reader == "synthetic_json":
        from parbench.data.synthetic import generate

        return generate(cache_dir() / "synthetic")
    if root is None:
        raise ParbenchError(
            card.name,
            f"a dataset root: pass {flag}, set {env_var(card.name)}, or add it under [roots] in the config",
            "none given",
        )
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ParbenchError(root, f"the {card.name} dataset folder", "no such directory")
    return root


def _prepared_path(card: Card, root: Path, partition: int) -> Path:
    # the key covers everything that changes the content: card, root, partition and the source files' content
    # (hashed once per file version, see parbench/hashing.py): an annotation fixed in place is read again
    from parbench.hashing import files_sha256

    digest = files_sha256([root / f for f in card.source_files])
    raw = f"{PREPARED_VERSION}|{card.sha256}|{root}|{partition}|{digest}"
    key = hashlib.sha256(raw.encode()).hexdigest()[:16]
    safe = card.name.replace("/", "_")
    return cache_dir() / "prepared" / f"{safe}-p{partition}-{key}"


def save_prepared(ds: PARDataset, base: Path) -> None:
    arrays = {k: getattr(ds, k) for k in _ARRAYS if getattr(ds, k) is not None}
    arrays.update({f"split_{k}": v for k, v in ds.partitions.items()})
    meta = {
        "version": PREPARED_VERSION,
        "name": ds.name,
        "attributes": ds.attributes,
        "relpaths": ds.relpaths,
        "root": str(ds.root),
        "extra_attributes": ds.extra_attributes,
        "box_origins": ds.box_origins,
        "domains": ds.domains,
        "notes": ds.notes,
        "partition_index": ds.partition_index,
        "card_version": ds.card_version,
    }

    # arrays first, meta last: a present meta file means a complete prepared copy
    save_npz(base.with_suffix(".npz"), **arrays)
    write_text(base.with_suffix(".json"), json.dumps(meta))


def load_prepared(base: Path) -> PARDataset | None:
    meta_path, npz_path = base.with_suffix(".json"), base.with_suffix(".npz")
    if not (meta_path.is_file() and npz_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("version") != PREPARED_VERSION:
        return None
    with np.load(npz_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return PARDataset(
        name=meta["name"],
        attributes=meta["attributes"],
        labels=arrays["labels"],
        relpaths=meta["relpaths"],
        root=Path(meta["root"]),
        partitions={k[6:]: v for k, v in arrays.items() if k.startswith("split_")},
        identities=arrays.get("identities"),
        boxes=arrays.get("boxes"),
        box_origins=meta.get("box_origins"),
        domains=meta.get("domains"),
        notes=meta.get("notes", []),
        extra_attributes=meta["extra_attributes"],
        extra_labels=arrays.get("extra_labels"),
        partition_index=meta["partition_index"],
        card_version=meta["card_version"],
    )


def read_dataset(card: Card, root: Path, partition: int = 0) -> PARDataset:
    return readers.get(card.reader)(card, root, partition=partition)


def check_partition(card: Card, partition: int, root: Path | None = None) -> None:
    """Refuse a partition the dataset does not have (a negative one too: Python would index from the end), naming
    the file the partitions live in."""
    n = max(card.partitions, 1)
    if isinstance(partition, bool) or not isinstance(partition, int) or not 0 <= partition < n:
        source = card.source_files[0] if card.source_files else card.path or card.name
        where = root / source if root is not None and card.source_files else source
        raise ParbenchError(
            f"{where} ({card.name}, --partition)", f"a partition in 0..{n - 1} (the dataset has {n})", repr(partition)
        )


def load_dataset(
    name: str,
    root: str | Path | None = None,
    partition: int = 0,
    use_prepared: bool = True,
    source: str | Path | None = None,
) -> PARDataset:
    """Read a registered dataset from its original files (or its prepared copy when one is current).

    `source`: a reference pickle to read instead (Rethinking's dataset_all.pkl, PromptPAR's pad.pkl)."""
    card = load_card(name)
    root_path = resolve_root(card, root)
    check_partition(card, partition, root_path)
    if source is not None:
        from parbench.data.readers.pickled import read_pickled

        return read_pickled(card, source, root_path, partition)
    base = _prepared_path(card, root_path, partition)
    if use_prepared and (ds := load_prepared(base)) is not None:
        return ds
    ds = read_dataset(card, root_path, partition)
    if card.reader == "synthetic_json" and use_prepared:
        save_prepared(ds, base)
    return ds


def prepare_dataset(name: str, root: str | Path | None = None, partition: int = 0, progress=None) -> dict:
    """Read the originals once, check images and split sizes, write the prepared copy; return a report."""
    card = load_card(name)
    root_path = resolve_root(card, root)
    check_partition(card, partition, root_path)
    ds = read_dataset(card, root_path, partition)
    missing = []
    paths = ds.image_paths
    unique = list(dict.fromkeys(paths))
    for i, p in enumerate(unique):
        if not os.path.isfile(p):
            missing.append(p)
        if progress is not None and i % 1000 == 0:
            progress(i, len(unique))
    sizes = {s: int(ds.partition(s).size) for s in ds.splits}
    mismatches = {s: (want, sizes.get(s)) for s, want in card.splits.items() if want and sizes.get(s) != want}
    base = _prepared_path(card, root_path, partition)
    save_prepared(ds, base)
    return {
        "dataset": card.name,
        "root": str(root_path),
        "partition": partition,
        "images": len(ds),
        "unique_images": len(unique),
        "missing": len(missing),
        "missing_examples": missing[:5],
        "splits": sizes,
        "split_mismatches": {s: {"card": w, "found": f} for s, (w, f) in mismatches.items()},
        "notes": ds.notes,
        "domains": sorted(set(ds.domains)) if ds.domains is not None else [],
        "prepared": str(base.with_suffix(".npz")),
    }
