"""Market-1501-attribute and DukeMTMC-attribute (Lin et al., Pattern Recognition 2019): identity-level labels in
`market_attribute.mat` / `duke_attribute.mat`, expanded to the re-id images of each identity.

The file holds one struct per split (`train`, `test`), each a struct of uint8 (1, N) fields plus `image_index`,
the identities' 4-digit ids. The field order differs between train and test (checked on the authors' files), so
fields are read by name, never by position. Values are 1-based codes (1 no / 2 yes; gender 1 male / 2 female;
age 1-4); a card attribute names its field and the code that makes it positive (`reader_options.columns`), so a
multi-valued field (age) becomes one binary attribute per value. Images are the re-id folders' files
(`bounding_box_train`, `bounding_box_test`); the leading field of a file name is its identity, and files of
identities the .mat does not list (Market's 0000 distractors and -1 junk) are left out and counted.

The files break their READMEs' promise in places: identities with no colour marked (or, in Duke's test split,
two), Duke train `top` = 0 for two identities, Market test `downpurple` without a positive. None of that is
repaired: a code outside the field's values becomes 255 (unspecified), and every quirk is counted in the
dataset's notes (`parbench datasets prepare` prints them).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from parbench.cards import Card
from parbench.data.dataset import PARDataset
from parbench.data.readers.mat import cell_str, dig, loadmat
from parbench.errors import ParbenchError
from parbench.labels import UNSPECIFIED


def _identity_labels(struct, path: Path, split: str, columns: dict[str, list]) -> tuple[list[str], np.ndarray, dict]:
    """(identity ids, (ids, K) uint8 labels in card order, per-field values found) of one split's struct."""
    names = struct.dtype.names or ()
    if "image_index" not in names:
        raise ParbenchError(path, f"a field 'image_index' in the {split} struct", f"fields {list(names)[:8]}")
    ids = [cell_str(x) for x in np.asarray(struct["image_index"]).reshape(-1)]
    out = np.zeros((len(ids), len(columns)), np.uint8)
    found = {}
    for j, (attr, (fname, code)) in enumerate(columns.items()):
        if fname not in names:
            raise ParbenchError(path, f"a field '{fname}' in the {split} struct (for attribute '{attr}')", "none")
        raw = np.asarray(struct[fname]).reshape(-1).astype(np.int64)
        if raw.size != len(ids):
            raise ParbenchError(path, f"{split}.{fname}: one value per identity ({len(ids)})", str(raw.size))
        found[fname] = raw
        out[:, j] = raw == int(code)
        out[raw <= 0, j] = UNSPECIFIED  # a code the README does not define (Duke train `top` = 0)
    return ids, out, found


def _quirks(card: Card, split: str, ids: list[str], found: dict[str, np.ndarray], labels: np.ndarray) -> list[str]:
    notes = []
    for fname, raw in found.items():
        bad = np.flatnonzero(raw <= 0)
        if bad.size:
            notes.append(
                f"{split}: '{fname}' is {int(raw[bad[0]])} for {bad.size} identities ({', '.join(ids[i] for i in bad[:4])}); read as unspecified"
            )
    for group, fields in card.reader_options.get("one_of", {}).items():
        marked = sum((found[f] == 2).astype(int) for f in fields if f in found)
        for count, what in ((0, "no"), (2, "two or more")):
            n = int((marked == 0).sum()) if count == 0 else int((marked >= 2).sum())
            if n:
                notes.append(f"{split}: {n} identities with {what} {group} marked")
    for j, a in enumerate(card.attribute_names):
        if not (labels[:, j] == 1).any():
            notes.append(f"{split}: '{a}' has no positive")
    return notes


def _images(root: Path, folder: str, path: Path) -> list[str]:
    d = root / folder
    if not d.is_dir():
        raise ParbenchError(d, f"the re-id image folder '{folder}' under the dataset root", "no such folder")
    return sorted(f for f in os.listdir(d) if f.lower().endswith((".jpg", ".jpeg", ".png")))


def read_reid_attributes(card: Card, root: Path, partition: int = 0) -> PARDataset:
    opts = card.reader_options
    path = root / card.source_files[0]
    mat = loadmat(path)
    var = opts["variable"]
    top = dig(mat, path, f"variable '{var}'", var, 0, 0)
    columns = {a.name: opts["columns"][a.name] for a in card.attributes}
    relpaths, labels, idents, parts, notes = [], [], [], {}, []
    for split, folder in (("train", opts["train_images"]), ("test", opts["test_images"])):
        struct = dig(top, path, f"the '{split}' struct", split, 0, 0)
        ids, lab, found = _identity_labels(struct, path, split, columns)
        notes += _quirks(card, split, ids, found, lab)
        row = {pid: i for i, pid in enumerate(ids)}
        start, skipped = len(relpaths), {}
        for f in _images(root, folder, path):
            pid = f.split("_", 1)[0]
            if pid not in row:  # distractors (0000), junk (-1), identities of the other split
                skipped[pid] = skipped.get(pid, 0) + 1
                continue
            relpaths.append(f"{folder}/{f}")
            labels.append(lab[row[pid]])
            idents.append(int(pid))
        parts[split] = np.arange(start, len(relpaths))
        if skipped:
            kinds = ", ".join(f"{k} ({v})" for k, v in sorted(skipped.items())[:3])
            notes.append(f"{split}: {sum(skipped.values())} images of identities without labels left out, e.g. {kinds}")
        unseen = len(set(ids) - {p.split("/")[-1].split("_", 1)[0] for p in relpaths[start:]})
        if unseen:
            notes.append(f"{split}: {unseen} labelled identities have no image in {folder}/")
    if not relpaths:
        raise ParbenchError(root, "re-id images of the labelled identities", "none")
    return PARDataset(
        name=card.name,
        attributes=card.attribute_names,
        labels=np.stack(labels).astype(np.uint8),
        relpaths=relpaths,
        root=root,
        partitions=parts,
        identities=np.asarray(idents, np.int64),
        card_version=card.version,
        notes=notes,
    )
