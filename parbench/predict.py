"""`parbench predict`: attribute probabilities and decisions for image files, from a run or a checkpoint.

Each image goes through the run's own evaluation preprocessing (resize, the weights' or the method's
normalisation); a decision is `probability > threshold` (strict, as the metrics), with the protocol's
threshold unless one is given.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from parbench.errors import ParbenchError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Files as given; folders expanded recursively to their images, sorted."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise ParbenchError(p, "an image file or a folder of images", "no such file or folder")
    if not out:
        raise ParbenchError(", ".join(map(str, inputs)), "at least one image", "none found")
    return out


def predict_images(
    checkpoint: str | Path,
    images: list[str | Path],
    protocol: str = "promptpar",
    threshold: float | None = None,
    dataset: str | None = None,
    method: str | None = None,
    backbone: str | None = None,
    pretrained: str | None = None,
    overrides: dict[str, Any] | None = None,
    progress=None,
) -> dict:
    """{"attributes", "threshold", "images": [path...], "probs": (N, K) array} for the given images, through
    the same prediction path (preprocessing, batches, model) as the run's own evaluation."""
    from parbench.data.dataset import PARDataset
    from parbench.engine.evaluate import predict_split
    from parbench.engine.restore import restore
    from parbench.engine.train import pick_device
    from parbench.metrics import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise ParbenchError("--protocol", f"one of {', '.join(PROTOCOLS)}", repr(protocol))
    if threshold is not None and not (0.0 <= threshold <= 1.0):
        raise ParbenchError("--threshold", "a probability in [0, 1]", repr(threshold))
    files = [f.resolve() for f in collect_images(images)]
    r = restore(checkpoint, method, dataset, backbone, pretrained, overrides)
    k = r.card.num_attributes
    ds = PARDataset(
        name="predict",
        attributes=r.card.attribute_names,
        labels=np.zeros((len(files), k), np.uint8),
        relpaths=[str(f.relative_to(f.anchor)) for f in files],
        root=Path(files[0].anchor),
        partitions={"predict": np.arange(len(files))},
    )
    probs, _ = predict_split(r.built, ds, ds.partition("predict"), pick_device(r.built.cfg), progress, use_cache=False)
    thr = PROTOCOLS[protocol].threshold if threshold is None else threshold
    return {
        "attributes": list(r.card.attribute_names),
        "threshold": float(thr),
        "method": r.built.method.name,
        "dataset": r.card.name,
        "images": [str(f) for f in files],
        "probs": probs,
    }


def predict_exported(
    model: str | Path,
    images: list[str | Path],
    protocol: str = "promptpar",
    threshold: float | None = None,
    batch_size: int = 64,
    progress=None,
) -> dict:
    """`predict_images` for an exported file (`parbench export`): the preprocessing and thresholds come from its
    metadata, the images go through the same loading and transform as a run's evaluation, the file computes the
    probabilities (onnxruntime on CPU, or TorchScript)."""
    import torch

    from parbench.backbones import Preprocess
    from parbench.data.dataset import PARDataset
    from parbench.data.torchdata import ImageSplit, collate
    from parbench.data.transforms import build_transform
    from parbench.export import load_exported, read_metadata

    meta = read_metadata(model)
    if protocol not in meta["thresholds"]:
        raise ParbenchError("--protocol", f"one of {', '.join(meta['thresholds'])}", repr(protocol))
    if threshold is not None and not (0.0 <= threshold <= 1.0):
        raise ParbenchError("--threshold", "a probability in [0, 1]", repr(threshold))
    pre = meta["preprocess"]
    pre = Preprocess(**{**pre, "size": tuple(pre["size"]), "mean": tuple(pre["mean"]), "std": tuple(pre["std"])})
    files = [f.resolve() for f in collect_images(images)]
    k = len(meta["attributes"])
    ds = PARDataset(
        name="predict",
        attributes=meta["attributes"],
        labels=np.zeros((len(files), k), np.uint8),
        relpaths=[str(f.relative_to(f.anchor)) for f in files],
        root=Path(files[0].anchor),
        partitions={"predict": np.arange(len(files))},
    )
    split = ImageSplit(ds, ds.partition("predict"), build_transform(pre, False))
    loader = torch.utils.data.DataLoader(split, batch_size=batch_size, shuffle=False, collate_fn=collate)
    task = progress.add_task("predicting", total=len(files)) if progress else None
    out, run = [], load_exported(model)
    for x, _, _ in loader:
        p = np.asarray(run(x.numpy()))
        if p.shape != (len(x), k):  # a file whose outputs are not its metadata's attributes: columns would shift
            raise ParbenchError(
                model,
                f"{len(x)} x {k} probabilities for a batch of {len(x)} (one per attribute its metadata names)",
                f"outputs of shape {tuple(p.shape)}",
            )
        out.append(p)
        if progress:
            progress.advance(task, len(x))
    thr = meta["thresholds"][protocol] if threshold is None else threshold
    return {
        "attributes": meta["attributes"],
        "threshold": float(thr),
        "method": meta["run"]["method"],
        "dataset": meta["run"]["dataset"],
        "images": [str(f) for f in files],
        "probs": np.concatenate(out),
    }


def format_predictions(res: dict, fmt: str) -> str:
    """CSV: one row per image, `<attr>` probability and `<attr>_pred` 0/1 columns. JSON: one object per image."""
    attrs, thr, probs = res["attributes"], res["threshold"], res["probs"]
    if fmt == "json":
        rows = [
            {
                "image": img,
                "probabilities": dict(zip(attrs, map(float, p), strict=True)),
                "attributes": [a for a, v in zip(attrs, p, strict=True) if v > thr],
            }
            for img, p in zip(res["images"], probs, strict=True)
        ]
        doc = {"method": res["method"], "dataset": res["dataset"], "threshold": thr, "predictions": rows}
        return json.dumps(doc, indent=1) + "\n"
    if fmt != "csv":
        raise ParbenchError("--format", "csv or json", repr(fmt))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", *attrs, *(f"{a}_pred" for a in attrs)])
    for img, p in zip(res["images"], probs, strict=True):
        w.writerow([img, *(f"{v:.6f}" for v in p), *(int(v > thr) for v in p)])
    return buf.getvalue()
