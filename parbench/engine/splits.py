"""Which samples a run trains on and which select its epoch: never the test split unless asked."""

from __future__ import annotations

import numpy as np

from parbench.cards import Card
from parbench.data.dataset import PARDataset
from parbench.engine.config import TrainConfig
from parbench.errors import ParbenchError


def choose_splits(card: Card, ds: PARDataset, cfg: TrainConfig, seed: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(train indices, selection indices or None, what selected). Never the test split unless asked."""
    train_split = card.train_split if cfg.train_split == "auto" else cfg.train_split
    select = card.select_split if cfg.select_on == "auto" else cfg.select_on
    train = ds.partition(train_split)
    if select == "carve":
        rng = np.random.default_rng(seed)
        perm = rng.permutation(train)
        n_val = max(1, int(round(cfg.carve_fraction * len(train))))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val]), f"val carved from {train_split} ({n_val})"
    if select == "last":
        return train, None, "last"
    if select == "val" and "val" not in ds.partitions:
        raise ParbenchError(card.name, "a val split (or --set select_on=carve|last)", f"splits {ds.splits}")
    if select == "val" and train_split == "trainval":
        raise ParbenchError(card.name, "a train split disjoint from val", "train_split=trainval with select_on=val")
    return train, ds.partition(select), select
