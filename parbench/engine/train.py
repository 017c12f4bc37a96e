"""The training loop: one readable path for CPU and GPU, every method.

`fit` runs epochs of `train_epoch`, scores the selection split after each, keeps the best trainable state
(never selecting on test unless asked), checkpoints atomically after every epoch and resumes from there.
Data order is a pure function of (seed, epoch); augmentation draws from torch's global RNG, whose state is
checkpointed, so a killed CPU run resumed from its last epoch ends with the same numbers.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from parbench.atomic import save_torch, write_text
from parbench.engine import dist, memory
from parbench.engine.config import TrainConfig
from parbench.engine.ema import WeightEMA
from parbench.engine.loss import weighted_bce
from parbench.engine.params import param_groups, trainable_state
from parbench.engine.schedule import lr_at
from parbench.errors import Diverged, ParbenchError
from parbench.methods import check_output
from parbench.metrics import PROTOCOLS, pedestrian_metrics
from parbench.torchfile import load_weights_only


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(cfg: TrainConfig) -> torch.device:
    """cfg.device, or auto: CUDA when present (this process's GPU under torchrun), else CPU."""
    return dist.device(cfg.device)


def autocast(device: torch.device, cfg: TrainConfig):
    if device.type == "cuda" and cfg.amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g.setdefault("base_lr", g["lr"])
        g.setdefault("warmup_epochs", cfg.warmup_epochs)
    # on CUDA the fused kernels (one launch for every parameter); on CPU the default loop, bit-for-bit as before
    params = [p for g in groups for p in g["params"]]
    fused = {"fused": True} if params and all(p.is_cuda and p.is_floating_point() for p in params) else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adam":  # coupled L2: weight_decay * w joins the gradient (Rethinking_of_PAR's Adam)
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    raise ParbenchError("optimizer", "sgd, adamw or adam", cfg.optimizer)


def set_epoch_lr(opt: torch.optim.Optimizer, epoch: int, cfg: TrainConfig) -> list[float]:
    for g in opt.param_groups:
        g["lr"] = lr_at(epoch, g["base_lr"], cfg.epochs, g["warmup_epochs"], cfg.warmup_lr_init, cfg.min_lr)
    return [g["lr"] for g in opt.param_groups]


def loader_workers(num_workers: int, device: torch.device | None = None) -> int:
    """The DataLoader workers a run uses: the setting, or (-1, the default) one per core this process may use on
    CUDA, shared among the processes of this machine and at most 16 (decoding is the data path's cost); none on
    CPU, where the model competes with the workers for the same cores."""
    if num_workers >= 0:
        return num_workers
    device = device or dist.device("auto")
    if device.type != "cuda":
        return 0
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(16, per_process - 1))


def _loader_options(num_workers: int) -> dict:
    """Pinned memory on CUDA (so the non_blocking copies overlap compute); workers kept across epochs and each
    4 batches ahead."""
    from parbench.data.torchdata import collate

    opts: dict = {"num_workers": num_workers, "pin_memory": torch.cuda.is_available(), "collate_fn": collate}
    if num_workers > 0:
        opts.update(persistent_workers=True, prefetch_factor=4)
    return opts


def epoch_loader(
    dataset, batch_size: int, seed: int, epoch: int, num_workers: int, shuffle: bool = True, drop_last: bool = False
):
    """Training (shuffle): this process's chunks of the global batches of a permutation fixed by (seed, epoch),
    from a loader that serves the later epochs too (`loader.batch_sampler.set_epoch(e)`: its workers persist).
    Evaluation: this process's shard in dataset order (everything with one process); see engine/dist.py."""
    opts = _loader_options(loader_workers(num_workers))
    if shuffle:
        tag = getattr(dataset, "takes_epoch", False)
        sampler = dist.EpochBatches(len(dataset), batch_size, seed, drop_last=drop_last, tag=tag)
        sampler.set_epoch(epoch)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **opts)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=dist.ShardSampler(len(dataset)), **opts)


def _loss(out: dict, labels: torch.Tensor, pos_ratio: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    loss = weighted_bce(out["logits"], labels, pos_ratio, cfg.unspecified)
    for aux in out.get("aux", ()):
        loss = loss + cfg.aux_loss_weight * weighted_bce(aux, labels, pos_ratio, cfg.unspecified)
    return loss


SYNC_EVERY = 50  # steps between reads of the on-device loss and divergence flags


def _raise_if_diverged(first_bad: torch.Tensor, bad_value: torch.Tensor, epoch: int) -> None:
    step = int(first_bad)
    if step > 0:
        raise Diverged(epoch, step, float(bad_value))


def train_epoch(
    model,
    loader,
    opt,
    pos_ratio,
    cfg: TrainConfig,
    device,
    tick: Callable | None = None,
    epoch: int = 0,
    where: str = "model",
    after_step: Callable[[], None] | None = None,
) -> dict:
    model.train()
    n_img, steps, t0 = 0, 0, time.perf_counter()
    # the loss sum and the first non-finite step stay on the device: reading them is a host sync, done once per
    # SYNC_EVERY steps and at the end of the epoch, not per step (the check itself still runs every step)
    total = torch.zeros((), dtype=torch.float64, device=device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)
    bad_value = torch.zeros((), dtype=torch.float32, device=device)
    groups = [[p for p in g["params"] if p.requires_grad] for g in opt.param_groups]
    weights = getattr(loader.batch_sampler, "weights", None)
    for step, (images, labels, _) in enumerate(loader):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device, cfg):
            out = model(images)
        check_output(out, len(images), labels.shape[1], where)
        loss = _loss(out, labels, pos_ratio, cfg)
        value = loss.detach()
        new_bad = (~torch.isfinite(value)) & (first_bad < 0)
        first_bad = torch.where(new_bad, torch.full_like(first_bad, step + 1), first_bad)
        bad_value = torch.where(new_bad, value.float(), bad_value)
        if (step + 1) % SYNC_EVERY == 0:
            _raise_if_diverged(first_bad, bad_value, epoch)  # diverged: stop, never score a model of NaNs
        opt.zero_grad(set_to_none=True)
        # this process's share of the global batch (1.0 alone): DDP's gradient mean = the global batch mean
        (loss * (weights[step] if weights else 1.0)).backward()
        if cfg.clip_grad and cfg.clip_grad_scope == "model":  # one norm over every trained parameter
            torch.nn.utils.clip_grad_norm_([p for params in groups for p in params], cfg.clip_grad)
        elif cfg.clip_grad:
            for params in groups:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        opt.step()
        if after_step is not None:
            after_step()
        total += value.double() * len(images)
        n_img += len(images)
        steps += 1
        if tick:
            tick(len(images))
        if cfg.max_steps and steps >= cfg.max_steps:
            break
    _raise_if_diverged(first_bad, bad_value, epoch)
    dt = time.perf_counter() - t0
    return {
        "loss": float(total) / max(n_img, 1),
        "images": n_img,
        "images_per_s": n_img / max(dt, 1e-9),
        "seconds": dt,
    }


@torch.no_grad()
def predict(
    model,
    loader,
    device,
    cfg: TrainConfig,
    tick: Callable | None = None,
    where: str = "model",
    pos_ratio: torch.Tensor | None = None,
    stats: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities and labels, in loader order. Given the training split's `pos_ratio`, `stats["loss"]`
    is the split's loss as the references compute a validation loss: the training loss of each batch, averaged
    over batches (what ReduceLROnPlateau steps on)."""
    model.eval()
    probs, labels, losses = [], [], []
    for images, lab, _ in loader:
        with autocast(device, cfg):
            out = model(images.to(device, non_blocking=True))
        check_output(out, len(images), lab.shape[1], where)
        if pos_ratio is not None:
            losses.append(weighted_bce(out["logits"], lab.to(device), pos_ratio, cfg.unspecified).detach())
        probs.append(torch.sigmoid(out["logits"].float()).cpu().numpy())
        labels.append(lab.numpy())
        if tick:
            tick(len(images))
    k = getattr(model, "num_attributes", 0)
    probs = np.concatenate(probs) if probs else np.zeros((0, k), np.float32)
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():  # NaN logits give NaN probabilities: the model's fault, named before any metric sees them
        raise ParbenchError(
            where,
            "finite logits for every image",
            f"NaN or infinite logits for {int(bad.sum())} of {len(probs)} images (the first at position {int(np.argmax(bad))})",
        )
    labels = np.concatenate(labels).astype(np.uint8) if labels else np.zeros((0, k), np.uint8)
    n = len(loader.dataset)
    if stats is not None and losses:
        stats["loss"] = float(torch.stack(losses).mean())  # one host sync; this process's shard under DDP
    return dist.gather_shards(probs, n), dist.gather_shards(labels, n)


def published_protocol(epochs: list[dict]) -> dict | None:
    """What the references' train.py prints and papers report: per protocol and metric, the maximum over the
    epochs of the test score (`max_ma`, `max_acc`, `max_f1`, ... each possibly from another epoch), with the
    epoch of each; None without per-epoch test scores (`track_test`)."""
    rows = [e for e in epochs if "test" in e]
    if not rows:
        return None
    out: dict = {}
    for proto in rows[0]["test"]:
        out[proto] = {}
        for metric in rows[0]["test"][proto]:
            best = max(rows, key=lambda e: e["test"][proto][metric])  # the first epoch among equals
            out[proto][metric] = best["test"][proto][metric]
            out[proto][f"{metric}_epoch"] = best["epoch"]
    return out


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -1.0
    selected_on: str = "last"


def _rng_state() -> dict:
    """Every RNG's state as tensors and plain numbers: last.pt loads with torch's weights-only loader."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(py_state), py_gauss],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    name, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = s["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def load_resume_state(path: Path) -> dict:
    """last.pt through torch's weights-only loader: tensors and plain data, nothing that can run code."""
    ck = load_weights_only(path, "a parbench resume checkpoint (delete it to start the run again)")
    if not isinstance(ck, dict) or not {"epoch", "trainable", "optimizer", "history", "rng"} <= set(ck):
        raise ParbenchError(
            path,
            "a parbench resume checkpoint",
            f"keys {sorted(ck)[:6] if isinstance(ck, dict) else type(ck).__name__}",
        )
    return ck


def fit(
    model,
    train_set,
    select_set,
    pos_ratio: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    select_on: str,
    run_dir: Path | None = None,
    resume: bool = False,
    progress=None,
    where: str = "model",
    on_epoch: Callable[[dict], None] | None = None,
    test_set=None,
) -> History:
    model.to(device)
    trained = dist.wrap(model, device)  # DDP under torchrun; evaluation uses the bare model on every rank
    write = run_dir is not None and dist.is_main()
    opt = make_optimizer(param_groups(model, cfg), cfg)
    if cfg.schedule == "plateau" and cfg.warmup_epochs:
        raise ParbenchError("settings", "warmup_epochs = 0 with schedule = plateau", str(cfg.warmup_epochs))
    plateau = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience)
        if cfg.schedule == "plateau"
        else None
    )
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema else None
    pos = torch.as_tensor(pos_ratio, device=device)
    hist, start = History(selected_on=select_on), 1
    best_state = None
    ckpt_path = run_dir / "last.pt" if run_dir else None
    if resume and ckpt_path and ckpt_path.is_file():
        ck = load_resume_state(ckpt_path)
        model.load_state_dict(ck["trainable"], strict=False)
        opt.load_state_dict(ck["optimizer"])
        if plateau is not None and ck.get("plateau"):
            plateau.load_state_dict(ck["plateau"])
        if ema is not None and ck.get("ema"):
            ema.load(ck["ema"])
        hist = History(**ck["history"])
        best_state, start = ck["best_state"], ck["epoch"] + 1
        _set_rng_state(ck["rng"])
        if write:  # the log holds exactly the checkpointed epochs (an interrupt can fall between the two)
            write_text(run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in hist.epochs))
    # one loader per split for the whole fit: with workers, they start once, not once per epoch
    loader = epoch_loader(train_set, cfg.batch_size, seed, start, cfg.num_workers, drop_last=cfg.drop_last)
    sl = tl = None
    if select_set is not None and select_on != "last":
        sl = epoch_loader(select_set, cfg.eval_batch_size, seed, 0, cfg.num_workers, shuffle=False)
    if test_set is not None:
        tl = epoch_loader(test_set, cfg.eval_batch_size, seed, 0, cfg.num_workers, shuffle=False)
    for epoch in range(start, cfg.epochs + 1):
        lrs = set_epoch_lr(opt, epoch, cfg) if plateau is None else [g["lr"] for g in opt.param_groups]
        loader.batch_sampler.set_epoch(epoch)
        n_steps = len(loader) if not cfg.max_steps else min(len(loader), cfg.max_steps)
        task = progress.add_task(f"epoch {epoch}/{cfg.epochs}", total=n_steps * cfg.batch_size) if progress else None
        tick = (lambda n, t=task: progress.advance(t, n)) if progress else None
        memory.reset_peak(device)
        update = (lambda: ema.update(model)) if ema is not None else None
        stats = train_epoch(trained, loader, opt, pos, cfg, device, tick, epoch, where, update)
        if progress:
            progress.remove_task(task)
        row = {"epoch": epoch, "lr": lrs, **stats, "peak_mem_mb": memory.peak_mb(device)}
        plateau_loss = stats["loss"]  # without a selection split, the training loss
        if sl is not None:
            with ema.applied(model) if ema is not None else contextlib.nullcontext():  # the EMA is what is selected
                sel: dict = {}
                probs, labels = predict(model, sl, device, cfg, where=where, pos_ratio=pos, stats=sel)
                m = pedestrian_metrics(labels, probs, cfg.select_protocol, unspecified=cfg.unspecified)
                row["select"] = {"split": select_on, "protocol": cfg.select_protocol, **m.headline(), **sel}
                plateau_loss = sel.get("loss", plateau_loss)
                if m.ma > hist.best_score:  # strict: ties keep the earlier epoch
                    hist.best_score, hist.best_epoch, best_state = m.ma, epoch, trainable_state(model)
        if tl is not None:  # the published protocol: test after every epoch, read, never used to select
            with ema.applied(model) if ema is not None else contextlib.nullcontext():
                probs, labels = predict(model, tl, device, cfg, where=where)
            row["test"] = {
                p: pedestrian_metrics(labels, probs, p, unspecified=cfg.unspecified).headline() for p in PROTOCOLS
            }
        if plateau is not None:
            plateau.step(plateau_loss)
        hist.epochs.append(row)
        if write:  # checkpoint first, then the log line: a logged epoch is always a resumable one
            ck = {
                "epoch": epoch,
                "trainable": trainable_state(model),
                "optimizer": opt.state_dict(),
                "history": hist.__dict__,
                "best_state": best_state,
                "rng": _rng_state(),
                "plateau": plateau.state_dict() if plateau is not None else None,
                "ema": ema.state() if ema is not None else None,
            }
            save_torch(ck, ckpt_path)
            with open(run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        if on_epoch is not None:  # a dashboard mirrors the logged epoch
            on_epoch(row)
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    else:
        hist.best_epoch = cfg.epochs
        if ema is not None:  # the last epoch's average, as it was evaluated
            model.load_state_dict(ema.shadow, strict=False)
    return hist
