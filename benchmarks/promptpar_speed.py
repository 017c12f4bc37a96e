"""PromptPAR training and evaluation speed and training memory: parbench's variants against the reference code.

    python benchmarks/promptpar_speed.py [--reference /path/to/OpenPAR] [--backbone ViT-L-14] [--device cpu]
                                         [--train-batch 4] [--eval-batch 8] [--steps 3] [--warmup 1] [--json F]

Every configuration is built once (random weights, PETA's 35 attributes, the README's flags), then timed
*interleaved*: warm-up step(s), then each timed step runs configuration A, B, C in turn, so a machine that
slows down affects all of them alike; the table shows medians (and the spread) of images/s and ratios against
the reference code (or, without it, against parbench's `variant=reference`).

- train step: forward, both losses (0.5 x GL), backward, gradient clipping per group, optimizer step;
- eval: a no-grad forward in eval mode;
- training memory rise: the peak resident memory during a training step above the memory before it (CPU:
  freed memory handed back with glibc's malloc_trim, then /proc VmHWM reset per step) or the peak CUDA
  allocation above the allocation before it (GPU).

The reference code is whatever checkout --reference points to (Event-AHU/OpenPAR, fetched by whoever runs
this; nothing of it is in parbench), imported through reference_promptpar.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _trim() -> None:
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError):  # not glibc: the measure keeps what the allocator caches
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Meter:
    """Peak memory of one step above the memory before it."""

    def __init__(self, dev: torch.device):
        self.dev = dev

    def start(self) -> float:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated() / 2**20
        from parbench.engine import memory

        _trim()  # hand freed memory back to the OS, so the RSS before the step is what is live
        memory.reset_peak(self.dev)
        return _rss_mb()

    def peak(self) -> float:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        from parbench.engine import memory

        return memory.peak_mb(self.dev)


def parbench_config(variant: str, backbone: str, dev: torch.device, compiled: bool = False) -> dict:
    from parbench.backbones import create_backbone
    from parbench.cards import load_card
    from parbench.engine.config import resolve_config
    from parbench.engine.loss import weighted_bce
    from parbench.engine.train import make_optimizer
    from promptpar.method import SPEC, build

    torch.manual_seed(0)
    card = load_card("PETA")
    cfg, options = resolve_config(SPEC, {"variant": variant, "fusion_init": "random"})
    model = build(create_backbone(backbone, "none"), card, options).to(dev)
    opt = make_optimizer(model.param_groups(cfg), cfg)
    groups = [[p for p in g["params"] if p.requires_grad] for g in opt.param_groups]
    pos = torch.full((card.num_attributes,), 0.3, device=dev)

    def train(x, y):
        model.train()
        out = model(x)
        loss = weighted_bce(out["logits"], y, pos) + 0.5 * weighted_bce(out["aux"][0], y, pos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for ps in groups:
            torch.nn.utils.clip_grad_norm_(ps, 10.0)
        opt.step()

    fast = torch.compile(model) if compiled else model  # as --set compile=true does for evaluation

    @torch.no_grad()
    def evaluate(x):
        model.eval()
        return fast(x)["logits"]

    name = f"parbench variant={variant}" + (", compiled eval" if compiled else "")
    return {"name": name, "train": train, "eval": evaluate}


def reference_config(reference: str, backbone: str, dev: torch.device) -> dict:
    import reference_promptpar as refcode

    from parbench.cards import load_card

    if backbone not in ("ViT-L-14", "ViT-B-16"):
        raise SystemExit("the reference code builds OpenAI CLIP ViT-L/14 or ViT-B/16 here")
    card = load_card("PETA")
    ref = refcode.load(reference, "PETA", refcode.README_FLAGS)
    arch = refcode.VIT_L_14 if backbone == "ViT-L-14" else refcode.VIT_B_16
    clip, model = refcode.build(ref, card.reference_texts(), arch, seed=0, fp16=dev.type == "cuda")
    clip, model = clip.to(dev), model.to(dev)
    args = ref.args
    mm, cl = [], []
    for name, p in model.named_parameters():  # its train.py's selection: one group per parameter
        if any(k in name for k in args.mmformer_update_parameters):
            mm.append({"params": [p], "lr": args.lr, "weight_decay": args.weight_decay})
        else:
            p.requires_grad = False
    for name, p in clip.named_parameters():
        if any(k in name for k in args.clip_update_parameters):
            cl.append({"params": [p], "lr": args.clip_lr, "weight_decay": args.clip_weight_decay})
        else:
            p.requires_grad = False
    opt = torch.optim.SGD(mm, args.lr, momentum=0.9, weight_decay=args.weight_decay)
    popt = torch.optim.SGD(cl, args.clip_lr, momentum=0.9, weight_decay=args.clip_weight_decay)
    criterion = ref.CEL_Sigmoid(torch.full((card.num_attributes,), 0.3).numpy(), attr_idx=card.num_attributes)

    def train(x, y):
        model.train()
        clip.train()
        logits, final = model(x, clip_model=clip)
        loss = criterion(logits, y) + 0.5 * criterion(final, y)
        opt.zero_grad()
        popt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        torch.nn.utils.clip_grad_norm_(clip.parameters(), 10.0)
        opt.step()
        popt.step()

    @torch.no_grad()
    def evaluate(x):
        model.eval()  # its valid_trainer: the fusion model only
        return model(x, clip_model=clip)[0]

    return {"name": "reference code", "train": train, "eval": evaluate}


def measure(configs: list[dict], dev: torch.device, train_batch: int, eval_batch: int, steps: int, warmup: int) -> dict:
    g = torch.Generator().manual_seed(0)
    xt, yt = (
        torch.randn(train_batch, 3, 224, 224, generator=g),
        (torch.rand(train_batch, 35, generator=g) < 0.3).float(),
    )
    xe = torch.randn(eval_batch, 3, 224, 224, generator=g)
    xt, yt, xe = xt.to(dev), yt.to(dev), xe.to(dev)
    meter = Meter(dev)
    out = {c["name"]: {"train_ips": [], "eval_ips": [], "train_mem_mb": []} for c in configs}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for phase, batch in (("train", train_batch), ("eval", eval_batch)):
        for step in range(warmup + steps):
            for c in configs:  # interleaved: A, B, C, A, B, C, ...
                before = meter.start()
                t0 = time.perf_counter()
                c["train"](xt, yt) if phase == "train" else c["eval"](xe)
                sync()
                dt = time.perf_counter() - t0
                if step >= warmup:
                    out[c["name"]][f"{phase}_ips"].append(batch / dt)
                    if phase == "train":
                        out[c["name"]]["train_mem_mb"].append(meter.peak() - before)
                print(
                    f"{phase} step {step + 1}/{warmup + steps} {c['name']}: {batch / dt:.4f} img/s",
                    file=sys.stderr,
                )
    return out


def table(results: dict, baseline: str) -> str:
    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
    spread = {n: {k: (min(v), max(v)) for k, v in r.items()} for n, r in results.items()}
    base = med[baseline]
    lines = ["| configuration | train img/s | eval img/s | training memory rise |", "|---|---|---|---|"]
    for n, m in med.items():
        tr = f"{m['train_ips']:.4g} ({spread[n]['train_ips'][0]:.4g}–{spread[n]['train_ips'][1]:.4g})"
        ev = f"{m['eval_ips']:.4g} ({spread[n]['eval_ips'][0]:.4g}–{spread[n]['eval_ips'][1]:.4g})"
        mem = f"{m['train_mem_mb'] / 1024:.2f} GB"
        if n != baseline:
            tr += f" ×{m['train_ips'] / base['train_ips']:.2f}"
            ev += f" ×{m['eval_ips'] / base['eval_ips']:.2f}"
            mem += f" ×{m['train_mem_mb'] / base['train_mem_mb']:.2f}"
        lines.append(f"| {n} | {tr} | {ev} | {mem} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", help="an Event-AHU/OpenPAR checkout (holding PromptPAR/)")
    ap.add_argument("--backbone", default="ViT-L-14")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--eval-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    ap.add_argument("--compile", action="store_true", help="also time variant=fixed with a compiled eval forward")
    ap.add_argument("--json", help="write the raw numbers here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    configs = []
    if args.reference:
        configs.append(reference_config(args.reference, args.backbone, dev))
    configs += [parbench_config(v, args.backbone, dev) for v in ("reference", "fixed")]
    if args.compile:
        configs.append(parbench_config("fixed", args.backbone, dev, compiled=True))
    results = measure(configs, dev, args.train_batch, args.eval_batch, args.steps, args.warmup)
    print(
        f"{args.backbone}, {dev}, {torch.get_num_threads()} threads, train batch {args.train_batch}, eval batch "
        f"{args.eval_batch}, {args.warmup} warm-up + {args.steps} timed steps each, interleaved; medians (min–max)"
    )
    print(table(results, configs[0]["name"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
