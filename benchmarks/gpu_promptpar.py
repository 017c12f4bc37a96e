"""PromptPAR (and full fine-tuning for scale) train-step and eval throughput and peak memory on one device.

Used by gpu_check.sh. Random weights (no downloads), bf16 autocast on CUDA, batch 16 by default; warm-up
steps are not timed. `--backbone parbench-tiny --device cpu` runs the same code as a dry run on a laptop.
"""

from __future__ import annotations

import argparse
import time

import torch

from parbench.backbones import create_backbone
from parbench.cards import load_card
from parbench.engine.config import TrainConfig
from parbench.engine.loss import weighted_bce
from parbench.engine.train import make_optimizer
from parbench.methods import get_method


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _peak(dev: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")


def _reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def measure(
    method: str,
    backbone: str,
    dev: torch.device,
    batch: int,
    steps: int,
    warmup: int,
    options: dict | None = None,
    ckpt: bool = False,
    label: str = "",
) -> dict:
    torch.manual_seed(0)
    spec = get_method(method)
    bb = create_backbone(backbone, "none", device="cpu")
    opts = spec.options(**(options or {})) if spec.options else None
    model = spec.build(bb, load_card("PETA"), opts).to(dev)
    if ckpt:
        (model if hasattr(model, "set_grad_checkpointing") else bb.model).set_grad_checkpointing(True)
    cfg = TrainConfig(**{k: v for k, v in spec.recipe.items() if k in ("optimizer", "lr", "weight_decay")})
    opt = make_optimizer(model.param_groups(cfg), cfg)
    A = model.num_attributes
    x = torch.randn(batch, 3, 224, 224, device=dev)
    y = torch.randint(0, 2, (batch, A), device=dev).float()
    pos = torch.full((A,), 0.3, device=dev)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    _reset(dev)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(dev)
            t0 = time.perf_counter()
        with torch.autocast(**amp):
            out = model(x)
        loss = weighted_bce(out["logits"].float(), y, pos)
        if "aux" in out:
            loss = loss + 0.5 * weighted_bce(out["aux"][0].float(), y, pos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 10.0)
        opt.step()
    _sync(dev)
    train_ips, train_mem = steps * batch / (time.perf_counter() - t0), _peak(dev)
    model.eval()
    _reset(dev)
    with torch.no_grad(), torch.autocast(**amp):
        for i in range(warmup + steps):
            if i == warmup:
                _sync(dev)
                t0 = time.perf_counter()
            model(x)
    _sync(dev)
    eval_ips, eval_mem = steps * batch / (time.perf_counter() - t0), _peak(dev)
    row = dict(label=label or method, train_ips=train_ips, train_gib=train_mem, eval_ips=eval_ips, eval_gib=eval_mem)
    print(
        f"{row['label']:<34} train {train_ips:7.1f} img/s  peak {train_mem:6.2f} GiB   "
        f"eval {eval_ips:7.1f} img/s  peak {eval_mem:6.2f} GiB",
        flush=True,
    )
    del model, opt, bb
    return row


def consistency(dev: torch.device) -> None:
    """The tiny PromptPAR (both variants) on CPU fp32 vs the device in fp32 and in bf16 autocast."""
    from parbench.cards import load_card

    for variant in ("reference", "fixed"):
        torch.manual_seed(0)
        bb = create_backbone("parbench-tiny", "none", device="cpu")
        opts = get_method("promptpar").options(variant=variant, fusion_dim=64, fusion_heads=2)
        model = get_method("promptpar").build(bb, load_card("synthetic"), opts).eval()
        x = torch.randn(4, 3, 224, 224)
        with torch.no_grad():
            ref = model(x)["logits"]
            model.to(dev)
            fp32 = model(x.to(dev))["logits"].float().cpu()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                bf16 = model(x.to(dev))["logits"].float().cpu()
        print(
            f"consistency promptpar/{variant} tiny: max |cpu - {dev.type} fp32| = {(ref - fp32).abs().max():.2e}, "
            f"max |cpu - {dev.type} bf16| = {(ref - bf16).abs().max():.2e} (logits scale {ref.abs().mean():.2f})",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="ViT-L-14")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # for the consistency check; on for the timings
        print(torch.cuda.get_device_name(0), "torch", torch.__version__)
    print(f"{a.backbone}, batch {a.batch}, {a.steps} timed steps after {a.warmup} warm-up, PETA (35 attributes)")
    consistency(dev)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    common = (a.backbone, dev, a.batch, a.steps, a.warmup)
    ran = dict(fusion_init="random")
    measure("promptpar", *common, {**ran, "variant": "reference"}, label="promptpar reference")
    measure("promptpar", *common, {**ran, "variant": "fixed"}, label="promptpar fixed")
    measure("promptpar", *common, {**ran, "variant": "fixed"}, ckpt=True, label="promptpar fixed + grad ckpt")
    measure("promptpar", *common, {**ran, "variant": "fixed", "tune": "full"}, label="promptpar fixed, tune=full")
    measure("finetune", *common, label="finetune (full)")


if __name__ == "__main__":
    main()
