"""Reader of WIDER Attribute's original JSON annotations: one sample per person box.

Boxes are kept as (x, y, w, h) and cropped when the image is loaded (clipped to the image bounds). Label coding
1 / -1 / 0 (positive / negative / unspecified) becomes 1 / 0 / 255. The trainval JSON's `train/` and `val/`
images give a natural train/val split; the test JSON gives test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from parbench.cards import Card
from parbench.data.dataset import PARDataset, check_relpath
from parbench.errors import ParbenchError
from parbench.labels import UNSPECIFIED

CODES = {1: 1, -1: 0, 0: UNSPECIFIED}


def _read_json(root: Path, annotation: str, k: int) -> tuple[list[str], list[list[float]], list[list[int]], list[str]]:
    """(image names, boxes, labels, where each target is written) of one annotation file under root."""
    path = root / annotation
    if not path.is_file():
        raise ParbenchError(path, "the original WIDER Attribute annotation JSON", "no such file")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ParbenchError(path, "valid JSON", str(e)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise ParbenchError(path, "a top-level object with an 'images' list", type(doc).__name__)
    files, boxes, labels, origins = [], [], [], []
    for i, img in enumerate(doc["images"]):
        try:
            name = check_relpath(str(img["file_name"]), path)
            targets = img["targets"]
        except (KeyError, TypeError):
            raise ParbenchError(path, f"images[{i}] with 'file_name' and 'targets'", repr(img)[:80]) from None
        for j, t in enumerate(targets):
            attr, bbox = t.get("attribute"), t.get("bbox")
            if not isinstance(attr, list) or len(attr) != k or any(a not in CODES for a in attr):
                raise ParbenchError(path, f"images[{i}].targets[{j}].attribute: {k} values in 1/-1/0", repr(attr))
            ok = isinstance(bbox, list) and len(bbox) == 4
            ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
            ok = ok and all(math.isfinite(v) for v in bbox) and bbox[2] > 0 and bbox[3] > 0
            if not ok:
                raise ParbenchError(
                    path,
                    f"images[{i}].targets[{j}].bbox [x, y, w, h] as finite numbers, w and h > 0",
                    repr(bbox),
                )
            files.append(name)
            boxes.append([float(v) for v in bbox])
            labels.append([CODES[a] for a in attr])
            origins.append(f"{annotation} images[{i}].targets[{j}]")
    return files, boxes, labels, origins


def read_wider(card: Card, root: Path, partition: int = 0) -> PARDataset:
    k = card.num_attributes
    tv = _read_json(root, card.source_files[0], k)
    te = _read_json(root, card.source_files[1], k)
    files, boxes, labels = tv[0] + te[0], tv[1] + te[1], tv[2] + te[2]
    n_tv = len(tv[0])
    parts = {"trainval": np.arange(n_tv), "test": np.arange(n_tv, len(files))}
    train = [i for i, f in enumerate(tv[0]) if f.startswith("train/")]
    val = [i for i, f in enumerate(tv[0]) if f.startswith("val/")]
    if train and val:
        parts["train"], parts["val"] = np.array(train), np.array(val)
    cols = [a.raw for a in card.attributes]
    lab = np.asarray(labels, dtype=np.uint8).reshape(-1, k)[:, cols]
    return PARDataset(
        name=card.name,
        attributes=card.attribute_names,
        labels=lab,
        relpaths=[f"{card.images}/{f}" for f in files],
        root=root,
        partitions={s: np.asarray(v, dtype=np.int64) for s, v in parts.items()},
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        box_origins=tv[3] + te[3],
        partition_index=partition,
        card_version=card.version,
    )
