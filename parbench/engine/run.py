"""One run: (dataset, method, backbone, seed, recipe) -> a run folder and a record.

The pipeline reads top to bottom: plan (resolve the settings and the run's identity), load the data, build
the model, fit (select the epoch on val, never on test unless asked), evaluate on test, record. The run folder
holds config.toml (resolved), log.jsonl (per epoch), last.pt (resume state, removed at the end), trainable.pt
(what trains, plus a digest of what does not), predictions.npz (test probabilities and labels, so any protocol
can rescore later) and record.json (everything the report needs); a run that diverges writes failed.json.

A run folder is never cleared. Its name carries the identity's key (settings and data content), so runs on
other data or settings get other folders; a finished run is reported as finished and not redone; an
interrupted one (last.pt) must be resumed with --resume or removed by hand; what a failed attempt left moves
to attempt-<time>/.
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parbench import __version__
from parbench.atomic import save_npz, save_torch, write_text
from parbench.cards import Card, load_card
from parbench.data.dataset import PARDataset
from parbench.data.image_cache import split_cache
from parbench.data.prepared import check_partition
from parbench.data.torchdata import ImageSplit
from parbench.data.transforms import build_transform
from parbench.draws import REPORT_BOOT, compute_draws
from parbench.draws import intervals as draw_intervals
from parbench.engine import dist, memory
from parbench.engine.build import Built, build_model
from parbench.engine.config import TrainConfig, config_dict, resolve_config, to_toml
from parbench.engine.evaluate import feature_cache_key, predict_split
from parbench.engine.features import FeatureHead, cached_features
from parbench.engine.loss import positive_ratio
from parbench.engine.open_vocab import expand, heldout_names, scores, seen_view
from parbench.engine.params import trainable_state
from parbench.engine.spec import RunSpec, group_key, identity_key, load_data
from parbench.engine.splits import choose_splits
from parbench.engine.train import History, fit, loader_workers, pick_device, published_protocol
from parbench.errors import Diverged, ParbenchError
from parbench.methods import MethodSpec, get_method, method_where
from parbench.metrics import PROTOCOLS, protocol_metrics, ranking_metrics
from parbench.progress import progress_bar

__all__ = ["RunSpec", "choose_splits", "resolve_config", "run"]


@dataclass
class Plan:
    """A run resolved before any work: settings, identity, and where it writes."""

    spec: RunSpec
    method: MethodSpec
    card: Card
    cfg: TrainConfig
    options: Any
    backbone: str
    identity: dict
    key: str
    run_dir: Path


def plan_run(spec: RunSpec) -> Plan:
    method = get_method(spec.method)
    card = load_card(spec.dataset)
    if not (isinstance(spec.seed, int) and 0 <= spec.seed < 2**32):
        raise ParbenchError("--seed", "an integer in [0, 2^32)", repr(spec.seed))
    check_partition(card, spec.partition, Path(spec.root) if spec.root else None)
    cfg, options = resolve_config(method, spec.overrides, card.name)
    from parbench.engine.open_vocab import check_method

    check_method(method, heldout_names(card, cfg.heldout_attributes))
    if spec.eval_on:  # a cross target that cannot be scored fails now, not after the training
        from parbench.engine.cross import eval_target

        for name in spec.eval_on:
            eval_target(card, name, spec.eval_roots.get(name))
    backbone = spec.backbone or method.default_backbone
    identity = spec.identity()
    key = identity_key(identity)
    run_id = f"{card.name}-{method.name}-{backbone}-s{spec.seed}-{key}".replace("/", "_").replace(":", "_")
    return Plan(spec, method, card, cfg, options, backbone, identity, key, Path(spec.out) / run_id)


def _check_images(ds: PARDataset, parts: list[np.ndarray]) -> None:
    """Every image the run will read exists, checked before training (a stat each: under a second for 100,000),
    so a long run never dies at its last epoch on a missing file."""
    import os

    idx = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    paths = ds.image_paths
    missing = [paths[i] for i in idx.tolist() if not os.path.isfile(paths[i])]
    if missing:
        raise ParbenchError(
            ds.root,
            f"the {len(idx)} image files this run reads",
            f"{len(missing)} missing, e.g. {missing[0]} (parbench datasets prepare lists them all)",
        )


def environment() -> dict:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {
        "parbench": __version__,
        "git": rev,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "gpu": gpu,
        "python": platform.python_version(),
        "host": platform.node(),
    }


# ---------------------------------------------------------------------------------------------- run folder
def _epochs_logged(run_dir: Path) -> int:
    log = run_dir / "log.jsonl"
    return log.read_text().count("\n") if log.is_file() else 0


def open_run_dir(run_dir: Path, resume: bool, main: bool) -> str:
    """'finished', 'resume' or 'fresh'; refuses to overwrite an interrupted run, never deletes anything."""
    if (run_dir / "record.json").is_file():
        return "finished"
    if (run_dir / "last.pt").is_file():
        if resume:
            return "resume"
        raise ParbenchError(
            run_dir,
            "--resume to continue this run, or remove the folder to start it again",
            f"an interrupted run (last finished epoch {_epochs_logged(run_dir)})",
        )
    if main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            leftovers = [p for p in run_dir.iterdir() if not p.name.startswith("attempt-")]
            if leftovers:  # a failed attempt's config, log, failed.json: kept, out of the way
                keep = run_dir / time.strftime("attempt-%Y%m%d-%H%M%S")
                keep.mkdir(exist_ok=True)
                for p in leftovers:
                    p.rename(keep / p.name)
        except OSError as e:
            raise ParbenchError(run_dir, "a writable folder for the run (--out)", e.strerror or str(e)) from None
    return "fresh"


def _saved_draws(run_dir: Path) -> dict | None:
    """The draws a run saved when it finished (none for an older run or `bootstrap = 0`: the report computes
    them when it first needs them)."""
    path = run_dir / "draws.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _finished(plan: Plan, store) -> dict:
    """A run done before: its record (added to the store if it is not there), not a retrained one."""
    path = plan.run_dir / "record.json"
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ParbenchError(path, "a finished run's record (remove the folder to run it again)", str(e)) from None
    if store is not None and not store.has_key(rec.get("key")):
        pred = plan.run_dir / "predictions.npz"
        try:
            with np.load(pred, allow_pickle=False) as z:
                store.add_run(rec, probs=z["probs"], labels=z["labels"], draws=_saved_draws(plan.run_dir))
        except (OSError, ValueError, KeyError) as e:
            raise ParbenchError(pred, "the run's test predictions (numeric arrays)", str(e)) from None
    return {**rec, "reused": True}


# ---------------------------------------------------------------------------------------------- train, test
def _train(
    plan: Plan,
    built: Built,
    ds: PARDataset,
    train_idx,
    select_idx,
    selected_on: str,
    device,
    resume: bool,
    progress,
    test_idx=None,
    cache_info: dict | None = None,
) -> History:
    """fit, with the run's logger (TensorBoard, W&B) following its epochs where one is asked for."""
    from parbench.engine.loggers import open_logger

    cfg = plan.cfg
    pos_ratio = positive_ratio(ds.labels[train_idx], cfg.unspecified)
    tracked = test_idx if cfg.track_test else None
    model, train_set, select_set, test_set = _training_inputs(
        built, ds, train_idx, select_idx, tracked, cfg, plan.spec.seed, device, progress, cache_info
    )
    logger = (
        open_logger(plan.cfg.logger, plan.run_dir, plan.key, plan.run_dir.name, _resolved(plan))
        if dist.is_main()
        else None
    )
    try:
        return fit(
            model,
            train_set,
            select_set,
            pos_ratio,
            cfg,
            plan.spec.seed,
            device,
            selected_on,
            plan.run_dir,
            resume,
            progress,
            method_where(built.method),
            logger.log if logger else None,
            test_set,
        )
    finally:
        if logger is not None:
            logger.close()


def _training_inputs(
    built: Built, ds: PARDataset, train_idx, select_idx, test_idx, cfg, seed: int, device, progress, cache_info=None
):
    """(model, train set, selection set or None, tracked test set or None): a feature method trains its head on
    cached features (encoded once, on disk), any other method its model on images (through the decoded-image
    cache where the run uses one; `cache_info` says which)."""
    if built.method.uses_features:
        t_eval = build_transform(built.preprocess, False)
        feats = {
            name: cached_features(
                built.model, ds, idx, t_eval, device, cfg, feature_cache_key(built, ds, idx), progress
            )
            for name, idx in (("train", train_idx), ("select", select_idx), ("test", test_idx))
            if idx is not None
        }
        return FeatureHead(built.model), feats["train"], feats.get("select"), feats.get("test")
    pre = built.preprocess
    cache = lambda idx, name: split_cache(ds, idx, pre, cfg, cache_info, name)
    train_set = ImageSplit(
        ds, train_idx, build_transform(pre, True, cfg.pad, cfg.flip), cache(train_idx, "train"), aug_seed=seed
    )
    select_set = test_set = None
    if select_idx is not None:
        select_set = ImageSplit(ds, select_idx, build_transform(pre, False), cache(select_idx, "select"))
    if test_idx is not None:
        test_set = ImageSplit(ds, test_idx, build_transform(pre, False), cache(test_idx, "test"))
    return built.model, train_set, select_set, test_set


def _fitted_thresholds(
    built: Built, ds: PARDataset, select_idx, train_idx, labels, probs, device, progress
) -> dict | None:
    """For methods that declare it (zero-shot): decisions at thresholds fitted on the selection split (else the
    train split), never on test, then scored on test under both protocols."""
    if not built.method.fits_thresholds:
        return None
    from parbench.metrics import fit_thresholds, pedestrian_metrics

    split, idx = ("val", select_idx) if select_idx is not None else ("train", train_idx)
    fit_probs, fit_labels = predict_split(built, ds, idx, device, progress)
    per, glob = fit_thresholds(fit_labels, fit_probs, built.cfg.unspecified)
    score = lambda tau: {
        p: pedestrian_metrics(labels, probs, p, tau, built.cfg.unspecified).headline() for p in PROTOCOLS
    }
    return {
        "fit_split": split,
        "n_fit": int(len(idx)),
        "thresholds": per.tolist(),
        "global_threshold": glob,
        "per_attribute": score(per),
        "global": score(glob),
    }


def _limit(idx: np.ndarray | None, n: int) -> np.ndarray | None:
    return idx if idx is None or not n else idx[:n]


def _failed(plan: Plan, built: Built, err: Diverged, store, t_start: float) -> None:
    """A diverged run is recorded as failed (never as a score) and the error goes on to the user."""
    rec = {
        **_record_base(plan, built),
        "status": "failed",
        "error": str(err),
        "failed_epoch": err.epoch,
        "failed_step": err.step,
        "wall_s": time.perf_counter() - t_start,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_text(plan.run_dir / "failed.json", json.dumps(rec, indent=1, default=float))
    (plan.run_dir / "last.pt").unlink(missing_ok=True)  # nothing worth resuming: the same run diverges again
    if store is not None:
        store.add_run(rec)


def _record_base(plan: Plan, built: Built) -> dict:
    spec, card = plan.spec, plan.card
    bb = built.backbone
    return {
        "run_id": plan.run_dir.name,
        "key": plan.key,
        "group_key": group_key(plan.identity),
        "identity": plan.identity,
        "dataset": card.name,
        "card_version": card.version,
        "card_sha256": card.sha256,
        "partition": spec.partition,
        "root": spec.root,
        "source": spec.source,
        "split_file": spec.split_file,
        "method": built.method.name,
        "backbone": plan.backbone,
        "pretrained": bb.pretrained,
        "weights_sha256": bb.weights_sha256,
        "activation": bb.activation,
        "seed": spec.seed,
        "attributes": card.attribute_names,
        "groups": {a.name: a.group for a in card.attributes},
        **built.counts(),
        "epochs": plan.cfg.epochs,
        "smoke": plan.cfg.smoke,
        "unspecified": plan.cfg.unspecified,
        "config": _resolved(plan),
        "preprocess": asdict(built.preprocess),
        "environment": environment(),
        "run_dir": str(plan.run_dir),
        "world_size": dist.world_size(),
    }


def _resolved(plan: Plan) -> dict:
    out = {
        "run": {
            k: v for k, v in asdict(plan.spec).items() if k not in ("overrides", "eval_on", "eval_roots", "robust")
        },
        "train": config_dict(plan.cfg),
    }
    if plan.options is not None:
        out["options"] = asdict(plan.options)
    return out


def _flops(plan: Plan) -> int | None:
    """Forward FLOPs per image of the run's model, counted on the meta device (no memory, no weights); None for
    a method whose model cannot run there."""
    if not plan.method.meta_forward:
        return None
    from parbench.engine.config import resolve_config
    from parbench.info import build_meta, forward_flops, input_size

    cfg, options = resolve_config(plan.method, {**plan.spec.overrides, **plan.method.meta_overrides}, plan.card.name)
    key = json.dumps(
        [plan.method.name, plan.method.origin, plan.backbone, plan.card.num_attributes, plan.card.identity_sha256]
        + [asdict(options) if options is not None else None, asdict(cfg)],
        sort_keys=True,
        default=str,
    )
    if key not in _FLOPS:  # the same model shape counts the same (both seeds, a grid's repeats): counted once
        model, bb = build_meta(plan.method, plan.backbone, plan.card, options)
        _FLOPS[key] = forward_flops(model, input_size(model, bb, cfg))
    return _FLOPS[key]


_FLOPS: dict[str, int | None] = {}


def _open_store(path: str | None):
    if not path:
        return None
    from parbench.store import Store

    return Store(path)


def run(spec: RunSpec) -> dict:
    """Train (if the method trains), select, evaluate on test, write the run folder, return the record."""
    t_start = time.perf_counter()
    plan = plan_run(spec)
    cfg = plan.cfg
    dist.init_from_env(cfg.device)  # torchrun: join the process group (no-op for one process)
    main = dist.is_main()
    store = _open_store(spec.store) if main else None  # a store that cannot be opened fails now, not at the end
    state = open_run_dir(plan.run_dir, spec.resume, main)
    if state == "finished":
        return _cross(plan, _finished(plan, store), store, None)
    ds = load_data(spec, plan.card)
    train_idx, select_idx, selected_on = choose_splits(plan.card, ds, cfg, spec.seed)
    test_idx = ds.partition(plan.card.test_split)
    train_idx, select_idx, test_idx = (_limit(i, cfg.limit) for i in (train_idx, select_idx, test_idx))
    _check_images(ds, [i for i in (train_idx, select_idx, test_idx) if i is not None])
    built = build_model(plan.method, plan.card, cfg, plan.options, plan.backbone, spec.pretrained, spec.seed)
    device = pick_device(cfg)
    if main:
        resolved = _resolved(plan)
        write_text(
            plan.run_dir / "config.toml",
            to_toml(
                {
                    **resolved["run"],
                    "train": resolved["train"],
                    **({"options": resolved["options"]} if plan.options else {}),
                }
            ),
        )

    progress = progress_bar(spec.quiet or not main)
    with progress or contextlib.nullcontext():
        t_fit = time.perf_counter()
        cache_info: dict = {}
        heldout = heldout_names(plan.card, cfg.heldout_attributes)
        if plan.method.trains and cfg.epochs > 0:
            train_built, train_ds = built, ds
            if heldout:  # a model over the seen attributes alone trains; the held-out ones take no part
                seen_card, train_ds, seen_pos = seen_view(plan.card, ds, heldout)
                train_built = build_model(
                    plan.method, seen_card, cfg, plan.options, plan.backbone, spec.pretrained, spec.seed
                )
            try:
                hist = _train(
                    plan,
                    train_built,
                    train_ds,
                    train_idx,
                    select_idx,
                    selected_on,
                    device,
                    state == "resume",
                    progress,
                    test_idx,
                    cache_info,
                )
            except Diverged as e:  # named after the method: a plugin's NaN is the plugin's to fix
                e = Diverged(e.epoch, e.step, e.loss, where=f"{method_where(plan.method)}, training")
                if main:
                    _failed(plan, built, e, store, t_start)
                raise e from None
            if heldout:  # every attribute scored: the unseen ones from the seen ones' heads and their own text
                expand(train_built.model, built.model, seen_pos, plan.method.open_vocabulary)
        else:
            hist, selected_on = History(selected_on="none (no training)"), "none (no training)"
        fit_s = time.perf_counter() - t_fit
        reset_ok = memory.reset_peak(device)
        t_eval, info = time.perf_counter(), {}
        probs, labels = predict_split(built, ds, test_idx, device, progress, info=info)
        eval_s = time.perf_counter() - t_eval
        # thresholds fitted on labels would read the held-out attributes' labels: not with held-out attributes
        fitted = (
            None if heldout else _fitted_thresholds(built, ds, select_idx, train_idx, labels, probs, device, progress)
        )
    peak_eval = memory.peak_mb(device)
    metrics = protocol_metrics(labels, probs, cfg.unspecified)
    if not main:  # only rank 0 writes; the others hand back the same metrics without a record
        return {"run_id": plan.run_dir.name, "metrics": metrics, "rank": dist.rank()}

    save_npz(plan.run_dir / "predictions.npz", probs=probs.astype(np.float32), labels=labels, index=test_idx)
    save_torch(
        {
            "trainable": trainable_state(built.model),
            "frozen_sha256": built.frozen_sha256(),
            "config": _resolved(plan),
            "attributes": plan.card.attribute_names,
            "method": plan.method.name,
            "backbone": built.backbone.describe(),
            "identity": plan.identity,
        },
        plan.run_dir / "trainable.pt",
    )
    (plan.run_dir / "last.pt").unlink(missing_ok=True)
    full_bytes = sum(t.numel() * t.element_size() for t in built.model.state_dict().values())
    # the report's bootstrap draws, once: every run on these test images is scored on the same resamples, so
    # intervals and paired tests need no prediction read again (parbench.draws); `bootstrap` resamples give the
    # record's own intervals (0: neither now; the report computes the draws the first time it needs them)
    draws, intervals = None, {}
    if cfg.bootstrap:
        draws = compute_draws(labels, probs, cfg.unspecified)
        mine = draws if cfg.bootstrap == REPORT_BOOT else compute_draws(labels, probs, cfg.unspecified, cfg.bootstrap)
        intervals = draw_intervals(mine)
        save_npz(plan.run_dir / "draws.npz", **draws)
    rows = hist.epochs
    ips = [e["images_per_s"] for e in rows[1:] or rows]  # skip the warm-up epoch when possible
    base = _record_base(plan, built)
    record = {
        **base,
        "status": "finished",
        "metrics": metrics,
        "intervals": intervals,
        "trainable_pct": 100.0 * base["trainable_params"] / max(base["total_params"], 1),
        "ranking": ranking_metrics(labels, probs, cfg.unspecified),
        "history": hist.epochs,
        # the references' reading (max over epochs on test, per metric): comparable with published numbers,
        # test-selected by construction; the honest numbers above are the same run's val-selected ones
        "published_protocol": published_protocol(hist.epochs),
        "zeroshot_fitted": fitted,
        "open_vocabulary": scores(labels, probs, plan.card.attribute_names, heldout, cfg.unspecified)
        if heldout
        else None,
        "flops_per_image": _flops(plan),
        "checkpoint_bytes": (plan.run_dir / "trainable.pt").stat().st_size,
        "full_checkpoint_bytes": full_bytes,
        "selected_on": selected_on,
        "selected_on_test": selected_on == "test",
        "select_protocol": cfg.select_protocol,
        "best_epoch": hist.best_epoch,
        "train_images_per_s": float(np.mean(ips)) if ips else 0.0,
        "eval_images_per_s": len(test_idx) / max(eval_s, 1e-9),
        "eval_timed": "head on cached features" if info.get("features_cached") else "end to end",
        # which splits were read through the decoded-image cache (file, and how much of it was there already)
        "image_cache": {**cache_info, **({"eval": info["image_cache"]} if "image_cache" in info else {})},
        "data_workers": loader_workers(cfg.num_workers, device),
        "train_timed": "head on cached features" if built.method.uses_features else "end to end",
        "peak_mem_mb": max((e.get("peak_mem_mb", 0.0) for e in rows), default=0.0),
        "peak_eval_mem_mb": peak_eval,
        "peak_mem_kind": memory.kind(device, reset_ok),
        "fit_s": fit_s,
        "eval_s": eval_s,
        "wall_s": time.perf_counter() - t_start,
        "n_test": len(test_idx),
        "device": str(device),
        "dtype": "bf16 autocast" if device.type == "cuda" and cfg.amp else "fp32",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if ds.domains is not None:
        from parbench.metrics import per_domain_metrics

        record["per_domain"] = per_domain_metrics(
            labels, probs, [ds.domains[i] for i in test_idx.tolist()], cfg.unspecified
        )
    write_text(plan.run_dir / "record.json", json.dumps(record, indent=1, default=float))
    if store is not None:
        store.add_run(record, probs=probs, labels=labels, draws=draws)
    return _cross(plan, record, store, built)


def _cross(plan: Plan, record: dict, store, built: Built | None) -> dict:
    """The run's cross-dataset scores (`--eval-on`) and robustness rows (a suite's [robust]), each their own
    records; the run's returned record lists them."""
    if record.get("status", "finished") != "finished" or not dist.is_main():
        return record
    if plan.spec.robust:
        from parbench.robust.evaluate import RobustPlan, robust_evaluate

        record = {**record, "robust": robust_evaluate(plan.run_dir, RobustPlan(**plan.spec.robust), store, None, built)}
    if not plan.spec.eval_on:
        return record
    from parbench.engine.cross import cross_evaluate

    cross = [
        cross_evaluate(plan.run_dir, name, plan.spec.eval_roots.get(name), store, None, built)
        for name in plan.spec.eval_on
    ]
    return {**record, "cross": cross}
