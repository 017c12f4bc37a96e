"""One run: (dataset, method, backbone, seed, recipe) -> a run folder and a record.

The folder holds config.toml (resolved), log.jsonl (per epoch), last.pt (resume state), trainable.pt (what
trains, a few MB), predictions.npz (test probabilities and labels, so any protocol can rescore later) and
record.json (everything the report needs). The record also goes into the results store when one is given.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parbench import __version__
from parbench.atomic import save_npz, save_torch, write_text
from parbench.backbones import create_backbone
from parbench.cards import Card, load_card
from parbench.data import load_dataset
from parbench.data.dataset import PARDataset
from parbench.data.torchdata import ImageSplit
from parbench.data.transforms import build_transform, describe
from parbench.engine import dist
from parbench.engine.config import TrainConfig, apply_overrides, config_dict, to_toml
from parbench.engine.features import cached_features
from parbench.engine.params import count_params, trainable_state
from parbench.engine.train import epoch_loader, fit, pick_device, predict, seed_everything
from parbench.errors import ParbenchError
from parbench.methods import MethodSpec, get_method
from parbench.metrics import PROTOCOLS, bootstrap_ci, protocol_metrics


@dataclass
class RunSpec:
    dataset: str
    method: str
    backbone: str | None = None
    pretrained: str | None = None
    seed: int = 0
    root: str | None = None
    partition: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)  # --config file, then --set
    out: str = "runs"
    resume: bool = False
    store: str | None = None
    quiet: bool = False
    source: str | None = None  # a reference pickle (dataset_all.pkl / pad.pkl) instead of the original files
    split_file: str | None = None  # a split from `parbench datasets zs-split` instead of the dataset's own

    def key(self) -> str:
        """Identity of a run: dataset, method, backbone, weights, seed, partition and the *resolved* settings
        (so "--set epochs=3" and epochs = 3 in a file are the same run). Suites skip finished keys."""
        cfg, options = resolve_config(get_method(self.method), self.overrides)
        ident = [
            self.dataset,
            self.method,
            self.backbone,
            self.pretrained,
            self.seed,
            self.partition,
            asdict(cfg),
            asdict(options) if options is not None else None,
        ]
        for extra in (self.source, self.split_file):  # other data: another run (absent: keys stay as before)
            if extra:
                ident.append(
                    hashlib.sha256(Path(extra).read_bytes()).hexdigest() if Path(extra).is_file() else extra
                )
        blob = json.dumps(ident, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def resolve_config(method: MethodSpec, overrides: dict[str, Any]) -> tuple[TrainConfig, Any]:
    """Split overrides between the engine's TrainConfig and the method's own options dataclass."""
    train_keys = {f.name for f in fields(TrainConfig)}
    opt_keys = {f.name for f in fields(method.options)} if method.options else set()
    t, o = {}, {}
    for k, v in overrides.items():
        key = k.replace("-", "_")
        (o if key in opt_keys and key not in train_keys else t)[key] = v
    cfg = apply_overrides(TrainConfig(), {**method.recipe, **t}, f"{method.name} settings")
    options = apply_overrides(method.options(), o, f"{method.name} options") if method.options else None
    return cfg, options


def choose_splits(
    card: Card, ds: PARDataset, cfg: TrainConfig, seed: int
) -> tuple[np.ndarray, np.ndarray | None, str]:
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
        raise ParbenchError(
            card.name, "a train split disjoint from val", "train_split=trainval with select_on=val"
        )
    return train, ds.partition(select), select


def _limit(idx: np.ndarray | None, n: int) -> np.ndarray | None:
    return idx if idx is None or not n else idx[:n]


def environment() -> dict:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        rev = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {"parbench": __version__, "git": rev, "torch": torch.__version__, "cuda": torch.version.cuda or "",
            "gpu": gpu, "python": platform.python_version(), "host": platform.node()}  # fmt: skip


def progress_bar(quiet: bool):
    """A rich progress bar on stderr: images done, images/s and ETA."""
    if quiet:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task) -> Text:
            return Text("– img/s" if task.speed is None else f"{task.speed:.1f} img/s")

    cols = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} img"), Speed(),
            TimeRemainingColumn()]  # fmt: skip
    return Progress(*cols, console=Console(stderr=True), transient=True)


def run(spec: RunSpec) -> dict:
    """Train (if the method trains), select, evaluate on test, write the run folder, return the record."""
    t_start = time.perf_counter()
    method = get_method(spec.method)
    card = load_card(spec.dataset)
    cfg, options = resolve_config(method, spec.overrides)
    backbone_name = spec.backbone or method.default_backbone
    dist.init_from_env(cfg.device)  # torchrun: join the process group (no-op for one process)
    main = dist.is_main()
    seed_everything(spec.seed)
    ds = load_dataset(card.name, spec.root, partition=spec.partition, source=spec.source)
    if spec.split_file:
        from parbench.data.audit import apply_split_file

        ds = apply_split_file(ds, spec.split_file)
    device = pick_device(cfg)
    backbone = create_backbone(backbone_name, spec.pretrained, device="cpu")
    model = method.build(backbone, card, options)
    total, trainable = count_params(model)
    if cfg.grad_checkpointing:  # the method's own tower loop first (PromptPAR), else open_clip's
        target = model if hasattr(model, "set_grad_checkpointing") else backbone.model
        target.set_grad_checkpointing(True)

    train_idx, select_idx, selected_on = choose_splits(card, ds, cfg, spec.seed)
    test_idx = ds.partition(card.test_split)
    train_idx, select_idx, test_idx = (_limit(i, cfg.limit) for i in (train_idx, select_idx, test_idx))
    pre = getattr(model, "preprocess", None) or backbone.preprocess
    normalization = getattr(model, "normalization", None) or cfg.normalization
    t_train = build_transform(pre, True, cfg.pad, cfg.flip, normalization)
    t_eval = build_transform(pre, False, normalization=normalization)
    pos_ratio = (ds.labels[train_idx] == 1).mean(0).astype(np.float32)

    run_id = f"{card.name}-{method.name}-{backbone_name}-s{spec.seed}-{spec.key()}".replace("/", "_")
    run_dir = Path(spec.out) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if not spec.resume and main:
        (run_dir / "log.jsonl").unlink(missing_ok=True)
        (run_dir / "last.pt").unlink(missing_ok=True)
    resolved = {"run": {k: v for k, v in asdict(spec).items() if k != "overrides"}, "train": config_dict(cfg)}
    if options is not None:
        resolved["options"] = asdict(options)
    if main:
        write_text(run_dir / "config.toml", to_toml({**resolved["run"], "train": resolved["train"],
                                                  **({"options": resolved["options"]} if options else {})}))  # fmt: skip

    progress = progress_bar(spec.quiet or not main)
    t_fit = time.perf_counter()
    with progress or _Null():
        model.to(device)
        if method.uses_features:
            from parbench.engine.features import FeatureHead

            key = dict(backbone=backbone.describe(), dataset=card.name, card=card.sha256, root=str(ds.root),
                       partition=spec.partition, transform=describe(pre, False, 0, False, normalization))  # fmt: skip
            feats = {s: cached_features(model, ds, idx, t_eval, device, cfg, {**key, "split": s}, progress)
                     for s, idx in (("train", train_idx), ("select", select_idx), ("test", test_idx))
                     if idx is not None}  # fmt: skip
            head = FeatureHead(model)
            hist = fit(head, feats["train"], feats.get("select"), pos_ratio, cfg, spec.seed, device, selected_on,
                       run_dir, spec.resume, progress)  # fmt: skip
            test_loader = epoch_loader(feats["test"], cfg.eval_batch_size, spec.seed, 0, 0, shuffle=False)
            probs, labels = predict(head, test_loader, device, cfg)
        else:
            cache = cfg.cache_images
            if method.trains and cfg.epochs > 0:
                train_set = ImageSplit(ds, train_idx, t_train, cache, aug_seed=spec.seed)
                select_set = ImageSplit(ds, select_idx, t_eval, cache) if select_idx is not None else None
                hist = fit(model, train_set, select_set, pos_ratio, cfg, spec.seed, device, selected_on, run_dir,
                           spec.resume, progress)  # fmt: skip
            else:
                from parbench.engine.train import History

                hist, selected_on = History(selected_on="none (no training)"), "none (no training)"
            test_loader = epoch_loader(ImageSplit(ds, test_idx, t_eval), cfg.eval_batch_size, spec.seed, 0,
                                       cfg.num_workers, shuffle=False)  # fmt: skip
            t_pred = time.perf_counter()
            probs, labels = predict(model, test_loader, device, cfg)
            eval_ips = len(test_idx) / max(time.perf_counter() - t_pred, 1e-9)
    fit_s = time.perf_counter() - t_fit

    metrics = protocol_metrics(labels, probs, cfg.unspecified)
    if not main:  # only rank 0 writes; the others hand back the same metrics without a record
        return {"run_id": run_id, "metrics": metrics, "rank": dist.rank()}
    save_npz(run_dir / "predictions.npz", probs=probs.astype(np.float32), labels=labels, index=test_idx)
    save_torch({"trainable": trainable_state(model), "config": resolved, "attributes": card.attribute_names,
                 "method": method.name, "backbone": backbone.describe()}, run_dir / "trainable.pt")  # fmt: skip
    (run_dir / "last.pt").unlink(missing_ok=True)

    intervals = {}
    if cfg.bootstrap:
        intervals = {name: bootstrap_ci(labels, probs, name, unspecified=cfg.unspecified, n_boot=cfg.bootstrap,
                                        seed=spec.seed) for name in PROTOCOLS}  # fmt: skip
    train_rows = [e for e in hist.epochs]
    ips = [e["images_per_s"] for e in train_rows[1:] or train_rows]  # skip the warm-up epoch when possible
    peak = max((e.get("peak_mem_mb", 0.0) for e in train_rows), default=0.0)
    if device.type == "cuda":
        peak = max(peak, torch.cuda.max_memory_allocated(device) / 2**20)
    record = {
        "run_id": run_id,
        "key": spec.key(),
        "dataset": card.name,
        "card_version": card.version,
        "card_sha256": card.sha256,
        "partition": spec.partition,
        "method": method.name,
        "backbone": backbone_name,
        "pretrained": backbone.pretrained,
        "seed": spec.seed,
        "metrics": metrics,
        "intervals": intervals,
        "attributes": card.attribute_names,
        "groups": {a.name: a.group for a in card.attributes},
        "total_params": total,
        "trainable_params": trainable,
        "trainable_pct": 100.0 * trainable / max(total, 1),
        "selected_on": selected_on,
        "selected_on_test": selected_on == "test",
        "best_epoch": hist.best_epoch,
        "epochs": cfg.epochs,
        "train_images_per_s": float(np.mean(ips)) if ips else 0.0,
        "eval_images_per_s": locals().get("eval_ips", 0.0),
        "peak_mem_mb": peak,
        "fit_s": fit_s,
        "wall_s": time.perf_counter() - t_start,
        "smoke": cfg.smoke,
        "unspecified": cfg.unspecified,
        "n_test": len(test_idx),
        "device": str(device),
        "world_size": dist.world_size(),
        "config": resolved,
        "preprocess": asdict(pre),
        "normalization": normalization,
        "environment": environment(),
        "run_dir": str(run_dir),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_text(run_dir / "record.json", json.dumps(record, indent=1, default=float))
    if spec.store:
        from parbench.store import Store

        Store(spec.store).add_run(record, probs=probs, labels=labels)
    return record


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
