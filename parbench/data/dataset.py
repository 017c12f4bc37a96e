"""The canonical in-memory dataset every reader returns and every method consumes.

Labels are uint8 N x K in the card's evaluation order: 0 negative, 1 positive, 255 unspecified/uncertain.
Images are never decoded here; paths are relative to `root` so a prepared dataset can move with its folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from parbench.errors import ParbenchError


@dataclass
class PARDataset:
    name: str
    attributes: list[str]
    labels: np.ndarray  # (N, K) uint8
    relpaths: list[str]  # N image paths relative to root
    root: Path
    partitions: dict[str, np.ndarray]  # split name -> int64 row indices
    identities: np.ndarray | None = None  # (N,) int64 person ids where the dataset has them
    boxes: np.ndarray | None = None  # (N, 4) float32 x, y, w, h crops (WIDER), else None
    # where each box is written, relative to root ("wider_attribute_test.json images[3].targets[1]"): a box that
    # misses its image is an error pointing at the annotation to fix, not only at the image
    box_origins: list[str] | None = None
    # where each image comes from, for per-domain scores: MSP60K's scene, UPAR's source dataset; else None
    domains: list[str] | None = None
    extra_attributes: list[str] = field(default_factory=list)
    extra_labels: np.ndarray | None = None  # (N, E) uint8: non-evaluated columns (colour, extra)
    partition_index: int = 0
    card_version: int = 0
    # what the reader found odd in the files and did not repair (counted, never silent): printed by
    # `parbench datasets prepare`
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.relpaths)
        if self.labels.shape != (n, len(self.attributes)):
            raise ParbenchError(self.name, f"labels of shape ({n}, {len(self.attributes)})", str(self.labels.shape))
        if self.domains is not None and len(self.domains) != n:
            raise ParbenchError(self.name, f"{n} image domains (one per image)", str(len(self.domains)))
        for split, idx in self.partitions.items():
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ParbenchError(self.name, f"split '{split}' indices in [0, {n})", f"{idx.min()}..{idx.max()}")

    def __len__(self) -> int:
        return len(self.relpaths)

    @property
    def num_attributes(self) -> int:
        return len(self.attributes)

    @property
    def image_paths(self) -> list[str]:
        root = str(self.root)
        return [os.path.join(root, p) for p in self.relpaths]

    @property
    def splits(self) -> list[str]:
        return list(self.partitions)

    def partition(self, split: str) -> np.ndarray:
        if split not in self.partitions:
            raise ParbenchError(self.name, f"a split among {', '.join(self.partitions)}", f"'{split}'")
        return self.partitions[split]

    def positive_ratio(self, split: str) -> np.ndarray:
        """Fraction of 1s per attribute in a split (255 counts as not positive)."""
        return (self.labels[self.partition(split)] == 1).mean(0)


def check_relpath(relpath: str, source: str | Path) -> str:
    """Refuse image names that escape the dataset root (absolute paths, `..`)."""
    p = relpath.replace("\\", "/")
    if p.startswith("/") or (len(p) > 1 and p[1] == ":") or ".." in p.split("/"):
        raise ParbenchError(source, "image names inside the dataset root", f"'{relpath}'")
    return p
