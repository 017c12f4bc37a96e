"""End-to-end throughput on real-format images against the model alone: does the data path keep up?

    python benchmarks/end_to_end.py [--device cpu|cuda] [--images 512] [--scenes 96] [--methods finetune,...]
                                    [--backbone parbench-tiny] [--batch 32] [--workers -1] [--json F]

Builds real-format fixtures in a temporary folder: a PA100k-style `annotation.mat` with JPEGs at pedestrian-crop
sizes (about 100 x 250, the sizes PA100k / PETA / RAP crops come in), and WIDER-style JSONs with 1024 x 683
scene JPEGs holding several person boxes each. Then, per method and source, through parbench's own code
(`fit` for a training epoch, `predict_split` for an evaluation pass, with the run's defaults: workers, pinned
memory, the decoded-image cache where it is on):

- model-only images/s: the same loop over tensors already decoded (a `FeatureSplit` of random images), so
  the only difference is the data path;
- end-to-end images/s of a training epoch and of an evaluation pass, and their ratio to model-only;
- the loader's wait per step (time spent in `next(loader)`), and GPU utilisation where `pynvml` reports it;
- decoding per core: Pillow (full decode, and `Image.draft` for a scene decoded far above the input size)
  against `torchvision.io.decode_jpeg` (CPU, and batched on the GPU);
- the decoded-image cache on WIDER: first pass (decode, crop, resize, write) and later passes (read).

On CPU the default model is the tiny backbone; on CUDA pass `--backbone ViT-L-14 --methods promptpar,
finetune,linear-probe` (random weights). Figures are medians of `--repeats` passes after a warm-up pass.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]


def build_fixtures(base: Path, n_images: int, n_scenes: int, seed: int = 0) -> dict[str, Path]:
    """PA100k-style crops and WIDER-style scenes, in the originals' file formats."""
    import scipy.io
    from PIL import Image

    from parbench.cards import load_card

    rng = np.random.default_rng(seed)
    pa = base / "PA100k"
    (pa / "data").mkdir(parents=True)
    card = load_card("PA100k")
    cell = lambda names: np.array([[n] for n in names], dtype=object)
    sizes = (n_images, max(8, n_images // 8), n_images)
    out, start = {"attributes": cell(list(card.raw_order))}, 0
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        names = [f"{i + 1:06d}.jpg" for i in range(start, start + n)]
        for name in names:
            w, h = int(rng.integers(80, 120)), int(rng.integers(220, 280))
            img = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)  # smooth texture, JPEG-like size
            Image.fromarray(img).resize((w, h), Image.BILINEAR).save(pa / "data" / name, quality=90)
        out[f"{split}_images_name"] = cell(names)
        out[f"{split}_label"] = (rng.random((n, 26)) < 0.3).astype(np.uint8)
        start += n
    scipy.io.savemat(pa / "annotation.mat", out)

    wider = base / "WIDER"
    names = list(load_card("WIDER").reader_options.get("attribute_names", [])) or [
        a.name for a in load_card("WIDER").attributes
    ]
    for fname, subs, count in (
        ("wider_attribute_trainval.json", ["train", "val"], n_scenes),
        ("wider_attribute_test.json", ["test"], n_scenes),
    ):
        images = []
        for i in range(count):
            sub = subs[i % len(subs)]
            rel = f"{sub}/0--Parade/{sub}_{i}.jpg"
            (wider / "Image" / sub / "0--Parade").mkdir(parents=True, exist_ok=True)
            img = rng.integers(0, 255, (683 // 8, 1024 // 8, 3), dtype=np.uint8)
            Image.fromarray(img).resize((1024, 683), Image.BILINEAR).save(wider / "Image" / rel, quality=90)
            targets = []
            for _ in range(4):  # several people per scene
                x, y = float(rng.integers(0, 900)), float(rng.integers(0, 400))
                box = [x, y, float(rng.integers(60, 120)), float(rng.integers(150, 280))]
                targets.append({"attribute": rng.choice([1, -1], size=14).tolist(), "bbox": box})
            images.append({"file_name": rel, "scene_id": 0, "targets": targets})
        doc = {
            "images": images,
            "attribute_id_map": {str(i): n for i, n in enumerate(names)},
            "scene_id_map": {"0": "Parade"},
        }
        (wider / fname).write_text(json.dumps(doc))
    return {"PA100k": pa, "WIDER": wider}


class Waits:
    """Wraps a loader: the time each `next()` takes (the GPU / the model waiting for data)."""

    def __init__(self, loader):
        self.loader, self.waits = loader, []
        self.batch_sampler = getattr(loader, "batch_sampler", None)
        self.dataset = loader.dataset

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - t)
            yield batch


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _gpu_util() -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return float(pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(0)).gpu)
    except Exception:  # no pynvml / no NVIDIA driver: not reported
        return None


def measure_method(method: str, source: str, root: Path, args, dev) -> dict:
    from parbench.data.image_cache import split_cache
    from parbench.data.torchdata import ImageSplit
    from parbench.data.transforms import build_transform
    from parbench.engine.build import build_model
    from parbench.engine.evaluate import predict_split
    from parbench.engine.features import FeatureSplit
    from parbench.engine.params import param_groups
    from parbench.engine.run import plan_run
    from parbench.engine.spec import RunSpec, load_data
    from parbench.engine.train import epoch_loader, loader_workers, make_optimizer, train_epoch

    over = {"batch_size": args.batch, "eval_batch_size": args.batch, "num_workers": args.workers, "epochs": 1}
    over["cache_images"] = args.cache
    spec = RunSpec(
        dataset=source, method=method, backbone=args.backbone, pretrained="none", root=str(root), overrides=over
    )
    plan = plan_run(spec)
    built = build_model(plan.method, plan.card, plan.cfg, plan.options, plan.backbone, "none", 0)
    cfg, pre = built.cfg, built.preprocess
    ds = load_data(spec, plan.card)
    train_idx = ds.partition(plan.card.train_split)[: args.images]
    test_idx = ds.partition(plan.card.test_split)[: args.images]
    model = built.model.to(dev)
    pos = torch.full((ds.num_attributes,), 0.3, device=dev)
    h, w = pre.size
    row = {
        "method": method,
        "source": source,
        "images": len(train_idx),
        "workers": loader_workers(cfg.num_workers, dev),
    }

    def timed(fn) -> float:
        fn()  # warm-up (also fills the decoded-image cache on its first pass)
        times = []
        for _ in range(args.repeats):
            _sync(dev)
            t = time.perf_counter()
            fn()
            _sync(dev)
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    if plan.method.trains and not plan.method.uses_features:
        opt = make_optimizer(param_groups(model, cfg), cfg)
        images = torch.randn(len(train_idx), 3, h, w)
        labels = torch.from_numpy((ds.labels[train_idx] == 1).astype(np.int64))
        fake = FeatureSplit(images, labels, torch.arange(len(train_idx)))
        model_loader = epoch_loader(fake, cfg.batch_size, 0, 1, 0)
        t_model = timed(lambda: train_epoch(model, model_loader, opt, pos, cfg, dev))
        tset = ImageSplit(
            ds, train_idx, build_transform(pre, True, cfg.pad, cfg.flip), split_cache(ds, train_idx, pre, cfg), 0
        )
        loader = Waits(epoch_loader(tset, cfg.batch_size, 0, 1, cfg.num_workers))
        util = []

        def epoch():
            train_epoch(model, loader, opt, pos, cfg, dev)
            util.append(_gpu_util())

        t_e2e = timed(epoch)
        row.update(
            train_model_only_ips=len(train_idx) / t_model,
            train_end_to_end_ips=len(train_idx) / t_e2e,
            train_ratio=t_model / t_e2e,
            train_wait_ms_per_step=1000 * statistics.median(loader.waits),
            gpu_util=next((u for u in util if u is not None), None),
        )
    model.eval()
    with torch.no_grad():
        if plan.method.uses_features:  # feature caching: encoding is the cost; time it without the disk cache
            from parbench.engine.features import encode_split

            enc = lambda: encode_split(model, ds, test_idx, build_transform(pre, False), dev, cfg)
            x = torch.randn(args.batch, 3, h, w, device=dev)
            t_model = timed(lambda: [model.encode(x) for _ in range(max(1, len(test_idx) // args.batch))])
            t_e2e = timed(enc)
            n_model = args.batch * max(1, len(test_idx) // args.batch)
            row.update(encode_model_only_ips=n_model / t_model, encode_end_to_end_ips=len(test_idx) / t_e2e)
            row["encode_ratio"] = row["encode_end_to_end_ips"] / row["encode_model_only_ips"]
        else:  # the same prediction loop (batches, sigmoid, gathering) over images already decoded
            from parbench.engine.train import predict

            labels = torch.from_numpy((ds.labels[test_idx] == 1).astype(np.int64))
            fake = FeatureSplit(torch.randn(len(test_idx), 3, h, w), labels, torch.arange(len(test_idx)))
            fake_loader = epoch_loader(fake, cfg.eval_batch_size, 0, 0, 0, shuffle=False)
            t_model = timed(lambda: predict(model, fake_loader, dev, cfg))
            t_e2e = timed(lambda: predict_split(built, ds, test_idx, dev, use_cache=False))
            row.update(
                eval_model_only_ips=len(test_idx) / t_model,
                eval_end_to_end_ips=len(test_idx) / t_e2e,
            )
            row["eval_ratio"] = row["eval_end_to_end_ips"] / row["eval_model_only_ips"]
    return row


def decode_rates(roots: dict[str, Path], dev, n: int = 64) -> list[dict]:
    """Images/s per core for each decoder, on crops and on scenes decoded for a 224-high input."""
    from PIL import Image
    from torchvision.io import decode_jpeg, read_file

    torch.set_num_threads(1)
    out = []
    for source, pattern in (
        ("PA100k crops", roots["PA100k"].glob("data/*.jpg")),
        ("WIDER scenes", roots["WIDER"].rglob("*.jpg")),
    ):
        files = sorted(pattern)[:n]
        datas = [read_file(str(f)) for f in files]

        def pil(files=files):
            for f in files:
                with Image.open(f) as im:
                    im.convert("RGB")

        def pil_draft(files=files):
            for f in files:
                with Image.open(f) as im:
                    im.draft("RGB", (im.width // 4, im.height // 4))  # the scale a 224-high crop needs at most
                    im.convert("RGB")

        def tv_cpu(datas=datas):
            for d in datas:
                decode_jpeg(d)

        cases = [("Pillow", pil), ("Pillow + draft (1/4)", pil_draft), ("torchvision decode_jpeg (CPU)", tv_cpu)]
        if dev.type == "cuda":
            cases.append(
                (
                    "torchvision decode_jpeg (GPU, batched)",
                    lambda datas=datas: (decode_jpeg(datas, device="cuda"), torch.cuda.synchronize()),
                )
            )
        for name, fn in cases:
            fn()
            t = time.perf_counter()
            fn()
            out.append({"source": source, "decoder": name, "images_per_s": len(files) / (time.perf_counter() - t)})
    torch.set_num_threads(os.cpu_count() or 1)
    return out


def cache_rates(root: Path, args) -> dict:
    """WIDER through the decoded-image cache: first pass (decode + crop + resize + write), then reads."""
    from parbench.backbones import Preprocess
    from parbench.data import load_dataset
    from parbench.data.image_cache import open_cache
    from parbench.data.torchdata import ImageSplit
    from parbench.data.transforms import build_transform

    ds = load_dataset("WIDER", root, use_prepared=False)
    idx = ds.partition("test")
    pre = Preprocess(size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic")
    t = build_transform(pre, False)
    cache, _ = open_cache(ds, idx, pre, 64.0)
    cache.path.unlink(missing_ok=True)  # a first pass is a first pass: not the file an earlier row filled
    cache, _ = open_cache(ds, idx, pre, 64.0)
    rates = {}
    for name, split in (
        ("uncached", ImageSplit(ds, idx, t)),
        ("first pass", ImageSplit(ds, idx, t, cache)),
        ("later pass", ImageSplit(ds, idx, t, cache)),
    ):
        t0 = time.perf_counter()
        for k in range(len(idx)):
            split[k]
        rates[name] = len(idx) / (time.perf_counter() - t0)
    cache.path.unlink(missing_ok=True)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backbone", default="parbench-tiny")
    ap.add_argument("--methods", default="finetune,linear-probe")
    ap.add_argument("--sources", default="PA100k,WIDER")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--scenes", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cache", default="auto", choices=("auto", "on", "off"), help="the runs' cache_images")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = torch.device(args.device)
    os.environ.setdefault("PARBENCH_CACHE", tempfile.mkdtemp(prefix="parbench-bench-cache-"))
    with tempfile.TemporaryDirectory() as tmp:
        roots = build_fixtures(Path(tmp), args.images, args.scenes)
        rows = [
            measure_method(m, s, roots[s], args, dev) for s in args.sources.split(",") for m in args.methods.split(",")
        ]
        decode = decode_rates(roots, dev)
        cache = cache_rates(roots["WIDER"], args)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"# end to end vs model only ({dev}, {args.backbone}, batch {args.batch}, {cores} cores, cache_images={args.cache})"
    )
    print(
        "| method | source | workers | train model-only | train end-to-end | ratio | wait/step | eval or encode model-only | end-to-end | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        tr = (
            (
                "{:.0f}".format(r["train_model_only_ips"]),
                "{:.0f}".format(r["train_end_to_end_ips"]),
                "{:.0%}".format(r["train_ratio"]),
                "{:.1f} ms".format(r["train_wait_ms_per_step"]),
            )
            if "train_ratio" in r
            else ("–",) * 4
        )
        kind = "eval" if "eval_ratio" in r else "encode"
        ev = (
            "{:.0f}".format(r[f"{kind}_model_only_ips"]),
            "{:.0f}".format(r[f"{kind}_end_to_end_ips"]),
            "{:.0%}".format(r[f"{kind}_ratio"]),
        )
        print(
            f"| {r['method']} | {r['source']} | {r['workers']} | "
            + " | ".join(tr)
            + f" | {kind}: "
            + " | ".join(ev)
            + " |"
        )
    print("\n# decoding, images/s on one core")
    for d in decode:
        print(f"{d['source']:14s} {d['decoder']:40s} {d['images_per_s']:8.0f}")
    print("\n# WIDER person crops through the decoded-image cache, images/s (one process)")
    for k, v in cache.items():
        print(f"{k:12s} {v:8.0f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "decode": decode, "cache": cache, "cores": cores}, indent=1)
        )


if __name__ == "__main__":
    main()
