"""PromptPAR ViT-L-14 throughput and memory on one GPU (used by gpu_check.sh). Warm-up steps are skipped."""

import sys
import time

import torch

from parbench.backbones import create_backbone
from parbench.cards import load_card
from parbench.engine.config import TrainConfig
from parbench.engine.loss import weighted_bce
from parbench.engine.train import make_optimizer
from promptpar.config import PromptParConfig
from promptpar.method import build


def measure(variant: str, steps: int = 10, warmup: int = 3, batch: int = 16) -> None:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    bb = create_backbone("ViT-L-14", "none", device="cuda")
    model = build(bb, load_card("PETA"), PromptParConfig(variant=variant, fusion_init="random")).to(dev)
    cfg = TrainConfig(optimizer="sgd", lr=8e-3)
    opt = make_optimizer(model.param_groups(cfg), cfg)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    y = torch.randint(0, 2, (batch, model.num_attributes), device=dev)
    pos = torch.full((model.num_attributes,), 0.3, device=dev)
    torch.cuda.reset_peak_memory_stats()
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
        loss = weighted_bce(out["logits"], y, pos) + 0.5 * weighted_bce(out["aux"][0], y, pos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    train_ips = steps * batch / (time.perf_counter() - t0)
    train_mem = torch.cuda.max_memory_allocated() / 2**30
    model.eval()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for i in range(warmup + steps):
            if i == warmup:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            model(x)
    torch.cuda.synchronize()
    eval_ips = steps * batch / (time.perf_counter() - t0)
    eval_mem = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"{torch.cuda.get_device_name(0)} promptpar/{variant} ViT-L-14 bf16 batch {batch}: "
        f"train {train_ips:.1f} img/s (peak {train_mem:.2f} GiB), eval {eval_ips:.1f} img/s (peak {eval_mem:.2f} GiB)"
    )


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("no CUDA device")
    for v in ("reference", "fixed"):
        measure(v)
