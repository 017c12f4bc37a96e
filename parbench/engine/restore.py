"""Rebuild a trained model from what a run saved (run folder / trainable.pt) or from a method's foreign
checkpoint (PromptPAR's reference files), for `parbench eval` and `parbench predict`.

A parbench checkpoint holds only what trained (plus BatchNorm statistics) and the resolved config: the model
is rebuilt from the config, the backbone weights come from where the run took them (or `pretrained`), and the
saved tensors must cover every trainable tensor of the rebuilt model, or nothing is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from parbench.atomic import save_npz
from parbench.backbones import create_backbone
from parbench.cards import Card, load_card
from parbench.engine.config import TrainConfig
from parbench.engine.params import trainable_state
from parbench.errors import ParbenchError
from parbench.methods import get_method


@dataclass
class Restored:
    model: torch.nn.Module
    card: Card
    cfg: TrainConfig
    preprocess: Any  # backbone Preprocess
    normalization: str
    method: str
    source: str  # "parbench" or "reference"


def _checkpoint_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "trainable.pt"
    if not path.is_file():
        raise ParbenchError(path, "a run folder with trainable.pt, or a checkpoint file", "no such file")
    return path


def restore(checkpoint: str | Path, method: str | None = None, dataset: str | None = None,
            backbone: str | None = None, pretrained: str | None = None,
            overrides: dict[str, Any] | None = None) -> Restored:  # fmt: skip
    """Load a parbench run/checkpoint, or (PromptPAR) a reference checkpoint, ready for inference on CPU."""
    from parbench.data.pickles import load_torch
    from parbench.engine.run import resolve_config

    path = _checkpoint_path(checkpoint)
    obj = load_torch(path)
    overrides = dict(overrides or {})
    if isinstance(obj, dict) and "trainable" in obj and "config" in obj:
        name = method or obj["method"]
        if name != obj["method"]:
            raise ParbenchError(path, f"a checkpoint of method {name}", f"one of {obj['method']}")
        spec = get_method(name)
        run = obj["config"].get("run", {})
        card = load_card(dataset or run.get("dataset"))
        if list(card.attribute_names) != list(obj["attributes"]):
            raise ParbenchError(
                path, f"attributes of {card.name} in card order", f"{obj['attributes'][:4]}..."
            )
        saved = {**obj["config"].get("train", {}), **obj["config"].get("options", {})}
        cfg, options = resolve_config(spec, {**saved, **overrides})
        from parbench.engine.train import seed_everything

        seed_everything(
            int(run.get("seed", 0))
        )  # random ('none') backbone weights come back as the run drew them
        bb = create_backbone(backbone or obj["backbone"]["name"], pretrained or obj["backbone"]["pretrained"])
        model = spec.build(bb, card, options)
        expected = trainable_state(model)
        missing = sorted(k for k in expected if k not in obj["trainable"])
        if missing:
            raise ParbenchError(
                path, "every trainable tensor of the model", f"missing {', '.join(missing[:12])}"
            )
        model.load_state_dict(obj["trainable"], strict=False)
        source = "parbench"
    else:
        name = method or "promptpar"
        spec = get_method(name)
        importer = getattr(spec, "import_checkpoint", None)
        if importer is None:
            raise ParbenchError(path, "a parbench checkpoint (trainable.pt of a run)", "another format")
        if not dataset:
            raise ParbenchError(path, "--dataset for a foreign checkpoint (it does not name its attributes)",
                                "no dataset given")  # fmt: skip
        card = load_card(dataset)
        model, cfg, options, bb = importer(obj, card, backbone, overrides, str(path))
        source = "reference"
    model.eval()
    pre = getattr(model, "preprocess", None) or bb.preprocess
    normalization = getattr(model, "normalization", None) or cfg.normalization
    return Restored(model, card, cfg, pre, normalization, name, source)


def evaluate_checkpoint(checkpoint: str | Path, dataset: str | None = None, root: str | None = None,
                        method: str | None = None, backbone: str | None = None, pretrained: str | None = None,
                        overrides: dict[str, Any] | None = None, split: str | None = None, partition: int = 0,
                        predictions: str | Path | None = None, quiet: bool = False) -> dict:  # fmt: skip
    """Evaluate a restored model on a split (default: the card's test split); metrics under both protocols."""
    import time

    import numpy as np

    from parbench.data import load_dataset
    from parbench.data.torchdata import ImageSplit
    from parbench.data.transforms import build_transform
    from parbench.engine.run import progress_bar
    from parbench.engine.train import epoch_loader, pick_device, predict
    from parbench.metrics import protocol_metrics

    r = restore(checkpoint, method, dataset, backbone, pretrained, overrides)
    ds = load_dataset(r.card.name, root, partition=partition)
    split = split or r.card.test_split
    idx = ds.partition(split)
    device = pick_device(r.cfg)
    r.model.to(device)
    loader = epoch_loader(ImageSplit(ds, idx, build_transform(r.preprocess, False, normalization=r.normalization)),
                          r.cfg.eval_batch_size, 0, 0, r.cfg.num_workers, shuffle=False)  # fmt: skip
    t0 = time.perf_counter()
    progress = None if quiet else progress_bar(False)
    if progress:
        with progress:
            task = progress.add_task(f"eval {r.card.name}/{split}", total=len(idx))
            probs, labels = predict(r.model, loader, device, r.cfg, tick=lambda n: progress.advance(task, n))
    else:
        probs, labels = predict(r.model, loader, device, r.cfg)
    seconds = time.perf_counter() - t0
    metrics = protocol_metrics(labels, probs, r.cfg.unspecified)
    if predictions:
        save_npz(predictions, probs=probs.astype(np.float32), labels=labels, index=idx)
    return {"checkpoint": str(checkpoint), "format": r.source, "method": r.method, "dataset": r.card.name,
            "split": split, "n": int(len(idx)), "attributes": r.card.attribute_names, "metrics": metrics,
            "images_per_s": len(idx) / max(seconds, 1e-9), "device": str(device)}  # fmt: skip
