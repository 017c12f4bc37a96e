"""A user's existing reference pickle as the source: Rethinking_of_PAR's `dataset_all.pkl` /
`dataset_zs_run0.pkl`, or PromptPAR's `pad.pkl` / `dataset_zs_pad.pkl` / `expand_pad.pkl`.

These files disagree on what `label` holds (raw columns, or columns already in group order while
`label_idx.eval` still lists the group order: applying it again scrambles them) and on the order (PA100k and
RAPv1 in raw order in PromptPAR's). So columns are taken **by attribute name**, never by position or by
`label_idx`: the names of the stored columns are `attr_name` when it has one entry per column, else
`attr_name[label_idx.eval]` (the already-reordered case). RAP's 2 (uncertain) becomes 255. The baked-in
`root` (the authors' server) is ignored: images are looked up under the dataset root given here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parbench.cards import Card
from parbench.data.dataset import PARDataset, check_relpath
from parbench.data.pickles import get, load_pickle
from parbench.errors import ParbenchError


def column_names(obj: dict, label: np.ndarray, path: Path) -> list[str]:
    key = "attr_name" if "attr_name" in obj or "attributes" not in obj else "attributes"  # MSP60K's: attributes
    names = [str(n) for n in get(obj, key, path)]
    if len(names) == label.shape[1]:
        return names
    idx = obj.get("label_idx", {}).get("eval") if isinstance(obj.get("label_idx"), dict) else None
    if idx is not None and len(idx) == label.shape[1]:
        return [names[int(i)] for i in idx]  # label already reordered; label_idx.eval only names its columns
    raise ParbenchError(
        path, f"attr_name (or label_idx.eval) naming all {label.shape[1]} label columns", f"{len(names)} names"
    )


def read_pickled(card: Card, pickle_path: str | Path, root: str | Path, partition: int = 0) -> PARDataset:
    path = Path(pickle_path)
    obj = load_pickle(path)
    label = np.asarray(get(obj, "label", path))
    if label.ndim != 2:
        raise ParbenchError(path, "a 2-D label matrix", f"shape {label.shape}")
    names = column_names(obj, label, path)
    if card.reader == "msp60k_json":
        from parbench.data.readers.msp60k import check_derived

        check_derived(names, label, path)
    where = {n: i for i, n in enumerate(names)}
    missing = [a for a in card.attribute_names if a not in where]
    if missing:
        raise ParbenchError(path, f"columns for {card.name}'s attributes", f"no column named {missing[:5]}")
    values = set(np.unique(label).tolist())
    if not values <= {0, 1, 2}:
        raise ParbenchError(path, "labels 0, 1 (and RAP's 2 = uncertain)", f"values {sorted(values)[:8]}")
    cols = [where[a] for a in card.attribute_names]
    labels = label[:, cols].astype(np.uint8)
    labels[labels == 2] = 255
    rest = [i for i in range(label.shape[1]) if i not in set(cols)]
    images = [str(n) for n in get(obj, "image_name", path)]
    if len(images) != len(label):
        raise ParbenchError(path, f"{len(label)} image names (one per label row)", str(len(images)))
    parts = {}
    for split, value in get(obj, "partition", path).items():
        if isinstance(value, list | tuple) and len(value) and np.ndim(value[0]) >= 1:
            if partition >= len(value):
                raise ParbenchError(path, f"partition {partition} of {split}", f"{len(value)} partitions")
            value = value[partition]
        parts[str(split)] = np.asarray(value, dtype=np.int64).reshape(-1)
    prefix = f"{card.images}/" if card.images else ""
    return PARDataset(
        name=card.name,
        attributes=card.attribute_names,
        labels=labels,
        relpaths=[check_relpath(prefix + n, path) for n in images],
        root=Path(root),
        partitions=parts,
        extra_attributes=[names[i] for i in rest],
        extra_labels=label[:, rest].astype(np.uint8) if rest else None,
    )
