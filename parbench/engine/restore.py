"""Rebuild a trained model from what a run saved (run folder / trainable.pt) or from a method's foreign
checkpoint (PromptPAR's reference files), for `parbench eval` and `parbench predict`.

A parbench checkpoint holds only what trained (plus BatchNorm statistics), the resolved config and a digest of
everything else. The model is rebuilt through the same `build_model` as the run (same backbone, activation,
seed of random weights), the saved tensors must cover every trainable tensor, and the rebuilt frozen tensors
must match the digest: a weight file changed since the run, or random weights drawn differently, stop the
restore instead of being evaluated as if nothing happened.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parbench.atomic import save_npz
from parbench.cards import load_card
from parbench.engine.build import Built, build_model
from parbench.engine.config import resolve_config
from parbench.errors import ParbenchError
from parbench.methods import get_method, method_for_checkpoint


@dataclass
class Restored:
    built: Built
    source: str  # "parbench" or "reference"
    run: dict = field(default_factory=dict)  # a parbench run's own data settings (root, partition, ...)
    inferred: dict | None = None  # a foreign checkpoint: what was read off its tensors and what defaulted
    # the model's identity: a parbench run's key (its settings and data), or a foreign file's content hash
    key: str = ""

    @property
    def model(self) -> torch.nn.Module:
        return self.built.model

    @property
    def card(self):
        return self.built.card


def _checkpoint_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "trainable.pt"
    if not path.is_file():
        raise ParbenchError(path, "a run folder with trainable.pt, or a checkpoint file", "no such file")
    return path


def load_checkpoint_file(path: Path) -> Any:
    """A parbench trainable.pt loads weights-only (tensors and plain data); anything else goes through the
    restricted unpickler (PromptPAR's files hold EasyDicts of numpy results). Neither can run code."""
    from parbench.data.pickles import load_torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # not weights-only data: the restricted unpickler decides, with its own clear error
        return load_torch(path)


def _restore_run(
    obj: dict,
    path: Path,
    method: str | None,
    dataset: str | None,
    backbone: str | None,
    pretrained: str | None,
    overrides: dict,
) -> Restored:
    run = obj["config"].get("run", {})
    spec = get_method(method or run.get("method") or obj["method"])  # a plugin is found by its reference
    if spec.name != obj["method"]:
        raise ParbenchError(path, f"a checkpoint of method {spec.name}", f"one of {obj['method']}")
    trained_with = (obj.get("identity") or {}).get("method_origin")
    if trained_with and trained_with != spec.origin:  # an edited plugin is another model: never mixed up
        raise ParbenchError(path, f"method {spec.name}'s code as the run trained it ({trained_with})", f"{spec.origin}")
    card = load_card(dataset or run.get("dataset"))
    if list(card.attribute_names) != list(obj["attributes"]):
        raise ParbenchError(path, f"attributes of {card.name} in card order", f"{obj['attributes'][:4]}...")
    saved = {**obj["config"].get("train", {}), **obj["config"].get("options", {})}
    cfg, options = resolve_config(spec, {**saved, **overrides})
    bb = obj["backbone"]
    built = build_model(
        spec,
        card,
        cfg,
        options,
        backbone or bb["name"],
        pretrained or bb["pretrained"],
        int(run.get("seed", 0)),
        quick_gelu=bb.get("activation", "gelu") == "quickgelu",
    )
    from parbench.engine.params import trainable_state

    expected = trainable_state(built.model)
    missing = sorted(k for k in expected if k not in obj["trainable"])
    if missing:
        raise ParbenchError(path, "every trainable tensor of the model", f"missing {', '.join(missing[:12])}")
    built.model.load_state_dict(obj["trainable"], strict=False)
    want = obj.get("frozen_sha256")
    if want and built.frozen_sha256() != want:
        raise ParbenchError(
            path,
            "the frozen weights the run trained with (same backbone weights and seed)",
            f"other weights from {bb['name']} pretrained={pretrained or bb['pretrained']}",
        )
    from parbench.engine.spec import identity_key

    key = identity_key(obj["identity"]) if obj.get("identity") else ""
    return Restored(built, "parbench", run, key=key)


def restore(
    checkpoint: str | Path,
    method: str | None = None,
    dataset: str | None = None,
    backbone: str | None = None,
    pretrained: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Restored:
    """Load a parbench run/checkpoint, or a method's foreign checkpoint, ready for inference on CPU."""
    path = _checkpoint_path(checkpoint)
    obj = load_checkpoint_file(path)
    overrides = dict(overrides or {})
    if isinstance(obj, dict) and "trainable" in obj and "config" in obj:
        r = _restore_run(obj, path, method, dataset, backbone, pretrained, overrides)
    else:
        spec = get_method(method) if method else method_for_checkpoint(obj, str(path))
        if spec.import_checkpoint is None or (spec.accepts_checkpoint and not spec.accepts_checkpoint(obj)):
            raise ParbenchError(path, f"a checkpoint that method {spec.name} can import", "another format")
        if not dataset:
            raise ParbenchError(
                path, "--dataset for a foreign checkpoint (it does not name its attributes)", "no dataset given"
            )
        built, inferred = spec.import_checkpoint(obj, load_card(dataset), backbone, overrides, str(path))
        from parbench.hashing import file_sha256

        r = Restored(built, "reference", {}, inferred, key=file_sha256(path)[:12])
    r.built.model.eval()
    return r


def _data_settings(r: Restored, root, partition, split_file, source) -> tuple[dict, list[str]]:
    """Where to evaluate: what was asked, else the run's own data (its partition, split file, source)."""
    asked = {"root": root, "partition": partition, "split_file": split_file, "source": source}
    out, from_run = {}, []
    for k, v in asked.items():
        if v is None and r.run.get(k) not in (None, "", 0):  # partition 0 is everyone's default: not news
            out[k] = r.run[k]
            from_run.append(k)
        else:
            out[k] = v
    out["partition"] = int(out["partition"] or 0)
    return out, from_run


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    method: str | None = None,
    backbone: str | None = None,
    pretrained: str | None = None,
    overrides: dict[str, Any] | None = None,
    split: str | None = None,
    partition: int | None = None,
    predictions: str | Path | None = None,
    quiet: bool = False,
    split_file: str | None = None,
    source: str | None = None,
) -> dict:
    """Evaluate a restored model on a split (default: the card's test split, on the run's own data), through the
    same prediction path as the run; metrics under both protocols."""
    from parbench.engine.evaluate import predict_split
    from parbench.engine.spec import RunSpec, load_data
    from parbench.engine.train import pick_device
    from parbench.metrics import protocol_metrics
    from parbench.progress import progress_bar

    r = restore(checkpoint, method, dataset, backbone, pretrained, overrides)
    data, from_run = _data_settings(r, root, partition, split_file, source)
    spec = RunSpec(
        dataset=r.card.name,
        method=r.built.method.name,
        root=data["root"],
        partition=data["partition"],
        split_file=data["split_file"],
        source=data["source"],
    )
    ds = load_data(spec, r.card)
    split = split or r.card.test_split
    idx = ds.partition(split)
    cfg = r.built.cfg
    if cfg.limit and r.source == "parbench":  # a smoke run scored the first `limit` images: so does its eval
        idx = idx[: cfg.limit]
    device = pick_device(cfg)
    progress = None if quiet else progress_bar(False)
    t0 = time.perf_counter()
    if progress:
        with progress:
            probs, labels = predict_split(r.built, ds, idx, device, progress)
    else:
        probs, labels = predict_split(r.built, ds, idx, device)
    seconds = time.perf_counter() - t0
    metrics = protocol_metrics(labels, probs, cfg.unspecified)
    if predictions:
        save_npz(predictions, probs=probs.astype(np.float32), labels=labels, index=idx)
    return {
        "checkpoint": str(checkpoint),
        "format": r.source,
        "method": r.built.method.name,
        "dataset": r.card.name,
        "split": split,
        "n": int(len(idx)),
        "attributes": r.card.attribute_names,
        "metrics": metrics,
        "data": {**data, "limit": cfg.limit if r.source == "parbench" else 0},
        "data_from_run": from_run,
        "inferred": r.inferred,
        "activation": r.built.backbone.activation,
        "preprocess": asdict(r.built.preprocess),
        "images_per_s": len(idx) / max(seconds, 1e-9),
        "device": str(device),
    }
