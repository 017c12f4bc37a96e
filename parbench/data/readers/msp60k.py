"""MSP60K (Event-AHU, AAAI 2025): 57 attributes, a random split and cross-scene ("MS") splits.

Read from the JSON annotations the official preprocessing (OpenPAR `PFM-VEPAR/.../msp_withMS.py`) reads:
`random_split.json` ({split: {image: [57 ints]}}) for the random split; `Multi_Sences.json` (the authors'
spelling: {"split": {"split_k": {"trainval": [scene...], "test": [scene...]}}, "image_names": {scene: [image...]}})
with `merged_labels.json` ({image: [57 ints]}) for a cross-scene split, whose images are ordered trainval then
test, scene by scene, as the preprocessing orders them. Splits are taken from the JSON, never from a table in
code (split_3, which the preprocessing loads, is defined in no file we could read). Each image's scene is kept
(the dataset's domains) whenever the scene file is there, so test scores come per scene too; the random split
does not depend on that file (the authors' preprocessing never reads it for that split), so an image it does not
list has the scene "unknown" there.

The EasyDict pickles the preprocessing writes go through the generic reference-pickle reader (`--from-pickle`);
`check_derived` refuses LLM-PAR's template pickles there, whose columns are shifted (see below).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from parbench.cards import Card
from parbench.data.dataset import PARDataset, check_relpath
from parbench.errors import ParbenchError

# LLM-PAR's PAR_Template_Scripts/msp.py names its columns in this order but fills them through an index list that
# holds 9 twice and lacks 19: its "Short sleeves" column holds the Black hair labels (and attr_vectors shift alike)
LLM_PAR_ORDER_START = ("Bald", "Long hair", "Black hair", "Hat", "Glasses", "Mask", "Helmet", "Scarf", "Gloves")


UNKNOWN_SCENE = "unknown"  # an image of the random split the scene file does not list


def _json(path: Path) -> dict:
    if not path.is_file():
        raise ParbenchError(path, "the MSP60K annotation file", "no such file")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ParbenchError(path, "a JSON annotation file", str(e)) from None


def _label_rows(rows: list, names: list[str], path: Path, what: str, k: int) -> np.ndarray:
    for name, row in zip(names, rows, strict=True):
        if not isinstance(row, list) or len(row) != k:
            got = f"{len(row)} labels" if isinstance(row, list) else type(row).__name__
            raise ParbenchError(path, f"{what}: {k} labels per image", f"{got} for '{name}'")
    lab = np.asarray(rows, dtype=np.int64).reshape(len(rows), k)
    values = set(np.unique(lab).tolist())
    if not values <= {0, 1}:
        raise ParbenchError(path, f"{what}: labels 0/1", f"values {sorted(values)[:6]}")
    return lab.astype(np.uint8)


def _scenes(path: Path) -> dict[str, str]:
    """image -> scene, from the scene file's `image_names`."""
    doc = _json(path)
    names = doc.get("image_names")
    if not isinstance(names, dict):
        raise ParbenchError(path, "an 'image_names' object {scene: [image, ...]}", type(names).__name__)
    out = {}
    for scene, images in names.items():
        for im in images:
            if im in out and out[im] != scene:
                raise ParbenchError(path, f"each image in one scene; '{im}'", f"in {out[im]} and {scene}")
            out[im] = scene
    return out


def read_msp60k(card: Card, root: Path, partition: int = 0) -> PARDataset:
    opts = card.reader_options
    k = len(card.raw_order)
    split = opts.get("split", "random")
    scene_path = root / opts.get("scenes", "Multi_Sences.json")
    if split == "random":
        path = root / card.source_files[0]
        doc = _json(path)
        names, labels, parts = [], [], {}
        for s in ("train", "val", "test"):
            block = doc.get(s)
            if not isinstance(block, dict):
                raise ParbenchError(path, f"a '{s}' object {{image: [labels]}}", type(block).__name__)
            parts[s] = np.arange(len(names), len(names) + len(block))
            labels.append(_label_rows(list(block.values()), list(block), path, s, k))
            names += list(block)
        parts["trainval"] = np.concatenate([parts["train"], parts["val"]])
        raw = np.concatenate(labels)
        scenes = _scenes(scene_path) if scene_path.is_file() else None
    else:
        path = root / card.source_files[0]
        doc = _json(path)
        splits = doc.get("split", {})
        if split not in splits:
            raise ParbenchError(path, f"split '{split}' under 'split'", f"splits {', '.join(sorted(splits)) or 'none'}")
        scenes = _scenes(path)
        by_scene = doc["image_names"]
        names, parts = [], {}
        for s in ("trainval", "test"):
            start = len(names)
            for scene in splits[split].get(s, []):
                if scene not in by_scene:
                    raise ParbenchError(path, f"scene '{scene}' of {split}.{s} in 'image_names'", "none")
                names += list(by_scene[scene])
            parts[s] = np.arange(start, len(names))
        label_path = root / card.source_files[1]
        all_labels = _json(label_path)
        missing = [n for n in names if n not in all_labels]
        if missing:
            raise ParbenchError(label_path, f"labels for every image of {split}", f"none for {missing[:3]}")
        raw = _label_rows([all_labels[n] for n in names], names, label_path, split, k)
    where = {n: i for i, n in enumerate(card.raw_order)}
    cols = [where[a.name] for a in card.attributes]
    domains = None
    if scenes is not None:  # the random split never reads the scene file: scenes where it knows them
        domains = [scenes.get(n, UNKNOWN_SCENE) for n in names]
    prefix = f"{card.images}/" if card.images else ""
    return PARDataset(
        name=card.name,
        attributes=card.attribute_names,
        labels=raw[:, cols],
        relpaths=[prefix + check_relpath(n, path) for n in names],
        root=root,
        partitions=parts,
        domains=domains,
        card_version=card.version,
    )


def check_derived(names: list[str], label: np.ndarray, path: Path) -> None:
    """Refuse MSP60K pickles known to be wrong: LLM-PAR's template files (their attribute order, or a Short
    sleeves column equal to the Black hair column on every image, which real labels never are)."""
    why = None
    if tuple(names[: len(LLM_PAR_ORDER_START)]) == LLM_PAR_ORDER_START:
        why = "its attributes are in LLM-PAR's template order"
    elif "Short sleeves" in names and "Black hair" in names and len(label) >= 100:
        a, b = label[:, names.index("Short sleeves")], label[:, names.index("Black hair")]
        if np.array_equal(a, b):
            why = "its 'Short sleeves' column equals its 'Black hair' column on every image"
    if why:
        raise ParbenchError(
            path,
            "an MSP60K pickle with its labels in place (dataset_random.pkl / dataset_ms_split_k.pkl, or the JSON)",
            f"a file from LLM-PAR's PAR_Template_Scripts/msp.py ({why}): its reorder index list repeats 9 and lacks "
            "19, so 'Short sleeves' holds the Black hair labels and attr_vectors are shifted alike",
        )
