"""Datasets: cards + readers -> `PARDataset`, with a prepared on-disk form that opens fast.

`load_dataset(name, root)` is the stable entry point. The prepared form (written by `prepare`) is an .npz of
arrays plus a JSON of names and paths, keyed by the card's hash, the partition and the resolved root; it
needs no pickle and opens in well under a second for 100,000 images.
"""

from __future__ import annotations

from parbench.data.dataset import PARDataset
from parbench.data.prepared import load_dataset, prepare_dataset, resolve_root
from parbench.labels import UNSPECIFIED

__all__ = ["UNSPECIFIED", "PARDataset", "Path", "load_dataset", "prepare_dataset", "resolve_root"]
