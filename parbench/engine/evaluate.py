"""The one prediction path: a built model's probabilities on samples of a dataset.

`run` (test split), `eval` (a run or a checkpoint) and `predict` (image files) all call `predict_split`, so a
restored run predicts what the run recorded: same preprocessing, same batches, and for feature methods the
same cached features through the same head.
"""

from __future__ import annotations

import numpy as np
import torch

from parbench.data.dataset import PARDataset
from parbench.data.image_cache import images_stamp, split_cache
from parbench.data.torchdata import ImageSplit
from parbench.data.transforms import build_transform, describe
from parbench.engine.build import Built
from parbench.engine.features import FeatureHead, cached_features
from parbench.engine.train import epoch_loader, predict
from parbench.methods import method_where


def feature_cache_key(built: Built, ds: PARDataset, idx: np.ndarray) -> dict:
    """Everything that changes the bytes of a feature matrix: the backbone's identity (weights content, random
    seed, activation), the exact images (and their stamps and boxes) and the eval transform."""
    return {
        "backbone": built.backbone.describe(),
        "root": str(ds.root),
        "images": images_stamp(ds, idx),
        "transform": describe(built.preprocess, False),
    }


def predict_split(
    built: Built,
    ds: PARDataset,
    idx: np.ndarray,
    device: torch.device,
    progress=None,
    use_cache: bool = True,
    info: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) of samples `idx`, in that order. `info["features_cached"]` says whether a
    feature method read its features from the cache (then only the head was timed)."""
    cfg = built.cfg
    transform = build_transform(built.preprocess, False)
    built.model.to(device)
    if built.method.uses_features:
        feats = cached_features(
            built.model,
            ds,
            idx,
            transform,
            device,
            cfg,
            feature_cache_key(built, ds, idx),
            progress,
            use_cache=use_cache,
        )
        if info is not None:
            info["features_cached"] = bool(getattr(feats, "from_cache", False))
        loader = epoch_loader(feats, cfg.eval_batch_size, 0, 0, 0, shuffle=False)
        return predict(FeatureHead(built.model), loader, device, cfg, where=method_where(built.method))
    model = built.model
    if cfg.compile:  # compiled once per built model, reused by every later evaluation of it
        if built.compiled is None:
            built.compiled = torch.compile(built.model)
        model = built.compiled
    cache = split_cache(ds, idx, built.preprocess, cfg, info, "image_cache")
    loader = epoch_loader(
        ImageSplit(ds, idx, transform, cache), cfg.eval_batch_size, 0, 0, cfg.num_workers, shuffle=False
    )
    task = progress.add_task("evaluating", total=len(idx)) if progress else None
    tick = (lambda n: progress.advance(task, n)) if progress else None
    try:
        return predict(model, loader, device, cfg, tick=tick, where=method_where(built.method))
    finally:
        if progress:
            progress.remove_task(task)
