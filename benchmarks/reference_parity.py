"""Does parbench read a checkpoint written by the reference PromptPAR code itself, and predict what it predicts?

    python benchmarks/reference_parity.py --reference /path/to/OpenPAR [--dataset PETA] [--config readme|parser]
                                          [--arch ViT-B-16|ViT-L-14] [--fp16]

The reference's own classes build a model with random weights (reference_promptpar.py), its train.py's save
layout writes the checkpoint (epoch, fusion optimiser state, `model_state_dict`, the whole `clip_model`, an
EasyDict `result` of numpy metrics, by a plain torch.save), and its own evaluation transform feeds a few images
of a small dataset in the original file format. `parbench eval` then imports that file and scores the same
images. Printed: the largest logit difference, whether every decision at 0.45 agrees, and the input tensors'
difference. Exit code 1 if the logits differ by 1e-4 or more, or a decision differs.

`--config parser` trains nothing with the flags off (the reference parser's defaults: no regions, no GL, no
text prompts, a Linear instead of the fusion block); `readme` uses the README's training flags.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import reference_promptpar as refcode  # noqa: E402


def _dataset(root: Path, n: int, seed: int) -> None:
    """A PETA folder in the original format with n pedestrian-shaped images (taller than wide)."""
    from PIL import Image

    from tests.fixtures import originals

    originals.peta(root, n=n, seed=seed)
    (root / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = int(rng.integers(120, 200)), int(rng.integers(40, 90))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{i + 1:05d}.png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="an Event-AHU/OpenPAR checkout (holding PromptPAR/)")
    ap.add_argument("--dataset", default="PETA")
    ap.add_argument("--config", choices=("readme", "parser"), default="readme")
    ap.add_argument("--arch", choices=("ViT-B-16", "ViT-L-14"), default="ViT-B-16")
    ap.add_argument("--fp16", action="store_true", help="fp16 CLIP weights in the file, as a CUDA run saves them")
    ap.add_argument("--images", type=int, default=40, help="dataset size (its test split is scored)")
    args = ap.parse_args()
    if args.dataset != "PETA":
        raise SystemExit("this check builds PETA files; other datasets: see tests/fixtures/originals.py")

    from parbench.cards import load_card
    from parbench.data import load_dataset
    from parbench.data.torchdata import ImageSplit
    from parbench.data.transforms import build_transform
    from parbench.engine.restore import evaluate_checkpoint, restore

    card = load_card(args.dataset)
    flags = refcode.README_FLAGS if args.config == "readme" else []
    ref = refcode.load(args.reference, args.dataset, flags)
    arch = refcode.VIT_B_16 if args.arch == "ViT-B-16" else refcode.VIT_L_14
    clip, model = refcode.build(ref, card.reference_texts(), arch, seed=0, fp16=args.fp16)
    clip_state = {k: v.clone() for k, v in clip.state_dict().items()}  # what its train.py saves (fp16 on CUDA)

    tmp = Path(tempfile.mkdtemp(prefix="parbench-parity-"))
    root = tmp / "PETA"
    root.mkdir()
    _dataset(root, args.images, seed=1)
    ds = load_dataset(card.name, root)
    idx = ds.partition("test")

    # the reference's evaluation: its own transform on the same image files, its model in eval mode, fp32
    # arithmetic on CPU (clip.load does model.float() there; the saved weights keep their precision)
    from dataset.AttrDataset import get_transform  # the reference's module, importable after refcode.load

    _, valid_tsfm = get_transform(ref.args)
    from PIL import Image

    x_ref = torch.stack([valid_tsfm(Image.open(ds.image_paths[i]).convert("RGB")) for i in idx])
    model.eval()
    with torch.no_grad():
        ref_logits = model(x_ref, clip_model=clip.float())[0].float()

    # its train.py's save: fusion SGD state, model_state_dict, the whole clip_model, an EasyDict result
    mm = [
        {"params": [p], "lr": 8e-3, "weight_decay": 1e-4}
        for n, p in model.named_parameters()
        if any(k in n for k in ref.args.mmformer_update_parameters)
    ]
    optimizer = torch.optim.SGD(mm, 8e-3, momentum=0.9, weight_decay=1e-4)
    result = ref.metrics(ds.labels[idx].astype(np.float64), torch.sigmoid(ref_logits).numpy())
    ckpt = tmp / "epoch1.pth"
    torch.save(
        {
            "epoch": 1,
            "optimizer": optimizer.state_dict(),
            "model_state_dict": model.state_dict(),
            "clip_model": clip_state,
            "result": result,
        },
        ckpt,
    )

    res = evaluate_checkpoint(
        ckpt, card.name, str(root), predictions=tmp / "p.npz", quiet=True, overrides={"device": "cpu"}
    )
    r = restore(ckpt, dataset=card.name, overrides={"device": "cpu"})
    tf = build_transform(r.built.preprocess, False)
    x_ours = torch.stack([ImageSplit(ds, idx, tf)[k][0] for k in range(len(idx))])
    with torch.no_grad():
        our_logits = r.model(x_ours)["logits"].float()
    probs = np.load(tmp / "p.npz")["probs"]
    d_logit = float((our_logits - ref_logits).abs().max())
    d_input = float((x_ours - x_ref).abs().max())
    same = bool(((torch.sigmoid(ref_logits).numpy() > 0.45) == (probs > 0.45)).all())
    d_prob = float(np.abs(torch.sigmoid(ref_logits).numpy() - probs).max())
    print(f"config {args.config}, {args.arch}, fp16 file {args.fp16}: {len(idx)} test images x {card.num_attributes}")
    print(f"inferred: {res['inferred']['read_off_tensors']} defaults {res['inferred']['defaults']}")
    print(
        f"max |input difference| {d_input:.2e}; max |logit difference| {d_logit:.2e}; "
        f"max |probability difference| (parbench eval) {d_prob:.2e}; decisions at 0.45 equal: {same}"
    )
    ok = d_logit < 1e-4 and same
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
