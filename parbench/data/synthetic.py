"""Synthetic pedestrians: the embedded default dataset (no download, no --root).

A seeded generator draws simple pedestrian figures whose 12 attributes are visible in the pixels (a hat, long
hair, glasses, sleeves, clothing darkness, skirt or shorts, a backpack, a handbag, a build cue for gender and a
grey-hair-and-stoop cue for age) on varied backgrounds and poses. Images are grouped into identities that keep
their attributes across images, so an identity-disjoint split (`synthetic-zs`) is meaningful.

It writes real PNG files plus `annotation.json`; `read_synthetic` turns that into a `PARDataset` like any
other reader.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parbench.cards import Card
from parbench.data.dataset import PARDataset, check_relpath
from parbench.errors import ParbenchError

ATTRIBUTES = [
    "hat", "long_hair", "glasses", "long_sleeves", "dark_upper", "skirt",
    "shorts", "dark_lower", "backpack", "handbag", "male", "elderly",
]  # fmt: skip
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    identities: int = 160
    images_per_identity: int = 4
    width: int = 80
    height: int = 160
    seed: int = 0

    def key(self) -> str:
        return (
            f"v{FORMAT_VERSION}-id{self.identities}x{self.images_per_identity}-{self.width}x{self.height}-s{self.seed}"
        )


def _sample_identity(rng: np.random.Generator) -> dict[str, int]:
    male = rng.random() < 0.5
    skirt = (not male) and rng.random() < 0.4
    a = {
        "hat": rng.random() < 0.3,
        "long_hair": rng.random() < (0.15 if male else 0.7),
        "glasses": rng.random() < 0.3,
        "long_sleeves": rng.random() < 0.5,
        "dark_upper": rng.random() < 0.5,
        "skirt": skirt,
        "shorts": (not skirt) and rng.random() < 0.25,
        "dark_lower": rng.random() < 0.5,
        "backpack": rng.random() < 0.3,
        "handbag": rng.random() < 0.3,
        "male": male,
        "elderly": rng.random() < 0.25,
    }
    return {k: int(v) for k, v in a.items()}


def _colour(rng: np.random.Generator, dark: bool) -> tuple[int, int, int]:
    base = rng.integers(15, 80) if dark else rng.integers(150, 240)
    tint = rng.integers(-15, 16, size=3)
    return tuple(int(np.clip(base + t, 0, 255)) for t in tint)


def _draw(a: dict[str, int], style: dict, rng: np.random.Generator, w: int, h: int):
    from PIL import Image, ImageDraw

    bg = tuple(int(v) for v in rng.integers(60, 200, size=3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    for _ in range(3):  # background clutter
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        d.rectangle(
            [x0, y0, x0 + int(rng.integers(5, 30)), y0 + int(rng.integers(5, 30))],
            fill=tuple(int(v) for v in rng.integers(40, 220, size=3)),
        )
    s = h / 160 * float(rng.uniform(0.9, 1.05))  # scale
    cx = w / 2 + float(rng.uniform(-6, 6)) * w / 80
    top = float(rng.uniform(4, 12)) * h / 160
    stoop = 5 * s if a["elderly"] else 0.0
    skin = style["skin"]
    shoulder = (17 if a["male"] else 12) * s
    hip = (11 if a["male"] else 14) * s
    head_r = 9 * s
    hx, hy = cx + stoop, top + head_r + 4 * s
    neck_y = hy + head_r
    waist_y = neck_y + 50 * s
    foot_y = min(h - 2, waist_y + 62 * s)
    upper, lower = style["upper"], style["lower"]
    hair = (200, 200, 200) if a["elderly"] else style["hair"]
    if a["backpack"]:  # a pack sticking out behind the torso
        d.rectangle(
            [cx + shoulder - 2 * s, neck_y + 6 * s, cx + shoulder + 9 * s, neck_y + 36 * s],
            fill=style["bag"],
            outline=(0, 0, 0),
        )
        d.line([cx - shoulder + 3 * s, neck_y + 2 * s, cx + shoulder, neck_y + 8 * s], fill=style["bag"], width=3)
    # torso and arms
    d.polygon(
        [
            (cx - shoulder + stoop, neck_y + 2 * s),
            (cx + shoulder + stoop, neck_y + 2 * s),
            (cx + hip, waist_y),
            (cx - hip, waist_y),
        ],
        fill=upper,
    )
    swing = float(rng.uniform(-6, 6)) * s
    for side in (-1, 1):
        sx = cx + side * shoulder + stoop
        ex, ey = sx + side * 5 * s + swing * side, neck_y + 48 * s
        d.line([sx, neck_y + 4 * s, ex, ey], fill=upper if a["long_sleeves"] else skin, width=max(2, int(6 * s)))
        if not a["long_sleeves"]:
            d.line([sx, neck_y + 4 * s, sx + side * 2 * s, neck_y + 16 * s], fill=upper, width=max(2, int(7 * s)))
        if side == 1 and a["handbag"]:
            d.line([ex, ey, ex, ey + 8 * s], fill=(20, 20, 20), width=1)
            d.rectangle([ex - 6 * s, ey + 8 * s, ex + 6 * s, ey + 20 * s], fill=style["handbag"])
    # lower body
    legs_top = waist_y
    if a["skirt"]:
        d.polygon(
            [
                (cx - hip, waist_y),
                (cx + hip, waist_y),
                (cx + hip + 9 * s, waist_y + 30 * s),
                (cx - hip - 9 * s, waist_y + 30 * s),
            ],
            fill=lower,
        )
        legs_top = waist_y + 30 * s
    for side in (-1, 1):
        lx = cx + side * hip * 0.55
        fx = lx + side * float(rng.uniform(0, 6)) * s
        if a["skirt"]:
            d.line([lx, legs_top, fx, foot_y], fill=skin, width=max(2, int(6 * s)))
        elif a["shorts"]:
            knee = waist_y + 22 * s
            d.line([lx, waist_y, lx, knee], fill=lower, width=max(3, int(10 * s)))
            d.line([lx, knee, fx, foot_y], fill=skin, width=max(2, int(6 * s)))
        else:
            d.line([lx, waist_y, fx, foot_y], fill=lower, width=max(3, int(9 * s)))
        d.ellipse([fx - 5 * s, foot_y - 3 * s, fx + 5 * s, foot_y + 2 * s], fill=(30, 30, 30))
    # head, hair, glasses, hat
    if a["long_hair"]:
        d.rectangle([hx - head_r - 1, hy - 2 * s, hx + head_r + 1, hy + head_r + 16 * s], fill=hair)
    d.ellipse([hx - head_r, hy - head_r, hx + head_r, hy + head_r], fill=skin)
    d.chord([hx - head_r, hy - head_r - 1, hx + head_r, hy + head_r * 0.2], 180, 360, fill=hair)
    if a["glasses"]:
        d.rectangle([hx - head_r + 1, hy - 1 * s, hx + head_r - 1, hy + 2.5 * s], fill=(10, 10, 10))
    if a["hat"]:
        d.rectangle(
            [hx - head_r - 4 * s, hy - head_r * 0.55, hx + head_r + 4 * s, hy - head_r * 0.3], fill=style["hat"]
        )
        d.rectangle([hx - head_r * 0.8, hy - head_r - 6 * s, hx + head_r * 0.8, hy - head_r * 0.5], fill=style["hat"])
    arr = np.asarray(img).astype(np.int16)
    arr = arr * float(rng.uniform(0.8, 1.15)) + rng.normal(0, 6, size=arr.shape)  # lighting and sensor noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _splits(rng: np.random.Generator, identity: np.ndarray) -> dict[str, dict[str, list[int]]]:
    n, ids = len(identity), np.unique(identity)
    perm = rng.permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    random = {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}
    pid = rng.permutation(ids)
    a, b = int(0.6 * len(ids)), int(0.8 * len(ids))
    groups = {"train": set(pid[:a].tolist()), "val": set(pid[a:b].tolist()), "test": set(pid[b:].tolist())}
    ident = {s: np.flatnonzero(np.isin(identity, list(g))) for s, g in groups.items()}
    out = {}
    for name, sp in (("random", random), ("identity", ident)):
        sp = {k: np.sort(v) for k, v in sp.items()}
        sp["trainval"] = np.sort(np.concatenate([sp["train"], sp["val"]]))
        out[name] = {k: v.astype(int).tolist() for k, v in sp.items()}
    return out


def generate(root: Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write the dataset under root/<spec key> (atomically: a temp folder, then a rename) and return it."""
    final = Path(root) / spec.key()
    if (final / "annotation.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=final.parent))
    try:
        rng = np.random.default_rng(spec.seed)
        (tmp / "images").mkdir()
        records, identity = [], []
        for pid in range(spec.identities):
            a = _sample_identity(rng)
            style = {
                "skin": tuple(int(v) for v in rng.integers(150, 230, size=3) * np.array([1.0, 0.85, 0.75])),
                "hair": tuple(int(v) for v in rng.integers(10, 90, size=3)),
                "upper": _colour(rng, bool(a["dark_upper"])),
                "lower": _colour(rng, bool(a["dark_lower"])),
                "bag": tuple(int(v) for v in rng.integers(0, 255, size=3)),
                "handbag": tuple(int(v) for v in rng.integers(0, 255, size=3)),
                "hat": tuple(int(v) for v in rng.integers(0, 255, size=3)),
            }
            for _ in range(spec.images_per_identity):
                i = len(records)
                rel = f"images/{i:06d}.png"
                _draw(a, style, rng, spec.width, spec.height).save(tmp / rel)
                records.append({"file": rel, "identity": pid, "labels": [a[k] for k in ATTRIBUTES]})
                identity.append(pid)
        doc = {
            "format": "parbench-synthetic",
            "version": FORMAT_VERSION,
            "spec": spec.__dict__,
            "attributes": ATTRIBUTES,
            "images": records,
            "splits": _splits(rng, np.asarray(identity)),
        }
        (tmp / "annotation.json").write_text(json.dumps(doc))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_synthetic(card: Card, root: Path, partition: int = 0) -> PARDataset:
    path = root / card.source_files[0]
    if not path.is_file():
        raise ParbenchError(path, "a synthetic annotation.json (run `parbench datasets prepare`)", "no such file")
    doc = json.loads(path.read_text())
    if doc.get("format") != "parbench-synthetic":
        raise ParbenchError(path, "format 'parbench-synthetic'", repr(doc.get("format")))
    cols = [doc["attributes"].index(a.name) for a in card.attributes]
    labels = np.asarray([r["labels"] for r in doc["images"]], dtype=np.uint8)[:, cols]
    split = doc["splits"][card.reader_options.get("split", "random")]
    return PARDataset(
        name=card.name,
        attributes=card.attribute_names,
        labels=labels,
        relpaths=[check_relpath(r["file"], path) for r in doc["images"]],
        root=root,
        partitions={k: np.asarray(v, dtype=np.int64) for k, v in split.items()},
        identities=np.asarray([r["identity"] for r in doc["images"]], dtype=np.int64),
        card_version=card.version,
    )
