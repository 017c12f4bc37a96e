"""Import Event-AHU/OpenPAR's PromptPAR code from a checkout that whoever runs a benchmark fetched themselves
(`--reference DIR`, the folder holding PromptPAR/); nothing of it is part of parbench.

The reference cannot be imported as a library as it stands: clip/model.py and models/base_block.py parse the
process's command line at import time (the architecture is whatever flags the process was started with),
clip/model.py imports `turtle` (tkinter) and dataset/AttrDataset.py `cv2` for nothing, and the code hard-codes "cuda" devices and an absolute
path to the ViT-B/16 weights. `load()` works around each from the outside, without editing a file: sys.argv
holds the dataset and flags while its modules import, stub `turtle` / `cv2` modules stand in, "cuda" is mapped to
the CPU when there is no GPU, and the fusion block keeps its random initialisation unless a ViT-B/16 file is
given.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import torch

# parbench card name -> the reference's dataset argument
DATASET_ARG = {"PETA": "PETA", "PA100k": "PA100k", "RAPv1": "RAPV1", "RAPv2": "RAPV2", "WIDER": "WIDER",
               "PETA-ZS": "PETAzs", "RAP-ZS": "RAPzs"}  # fmt: skip
README_FLAGS = ["--use_textprompt", "--use_div", "--use_vismask", "--use_GL", "--use_mm_former"]


def _cpu_for_cuda() -> None:
    """The reference calls .cuda() and .to("cuda") unconditionally: on a machine without a GPU, stay on CPU."""
    if torch.cuda.is_available() or getattr(torch.Tensor, "_parbench_cpu_patch", False):
        return
    to, module_to = torch.Tensor.to, torch.nn.Module.to

    def tensor_to(self, *args, **kw):
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        if isinstance(kw.get("device"), str) and kw["device"].startswith("cuda"):
            kw["device"] = "cpu"
        return to(self, *args, **kw)

    def module_to_cpu(self, *args, **kw):
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        return module_to(self, *args, **kw)

    torch.Tensor.to = tensor_to
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.to = module_to_cpu
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor._parbench_cpu_patch = True


def load(reference_dir: str | Path, dataset: str, flags: list[str], vit_b: str | None = None) -> types.SimpleNamespace:
    """The reference's modules, imported for `dataset` (a parbench card name) with `flags` (its CLI flags).

    Returns a namespace with `clip_model` (its clip/model.py), `base_block`, `CEL_Sigmoid`, `metrics` (its
    get_pedestrian_metrics) and `args`. One configuration per process: its modules read the flags once."""
    root = Path(reference_dir)
    code = root / "PromptPAR" if (root / "PromptPAR").is_dir() else root
    if not (code / "clip" / "model.py").is_file():
        raise SystemExit(f"{reference_dir}: expected an Event-AHU/OpenPAR checkout (PromptPAR/clip/model.py)")
    if "clip.model" in sys.modules:
        raise RuntimeError("the reference is imported once per process (its flags are read at import)")
    sys.modules.setdefault("turtle", types.SimpleNamespace(Turtle=object))
    try:  # dataset/AttrDataset.py imports cv2 for commented-out code only
        importlib.import_module("cv2")
    except ImportError:
        sys.modules["cv2"] = types.SimpleNamespace()
    _cpu_for_cuda()
    sys.path.insert(0, str(code))
    argv = sys.argv
    sys.argv = ["reference", DATASET_ARG.get(dataset, dataset), *flags]
    try:
        clip_model = importlib.import_module("clip.model")
        clip_pkg = importlib.import_module("clip.clip")
        vit = importlib.import_module("models.vit")
        if vit_b is None:
            vit.ViT.load_param = lambda self, path: None  # random fusion block: the absolute path is not there
        base_block = importlib.import_module("models.base_block")
        loss = importlib.import_module("loss.CE_loss")
        function = importlib.import_module("tools.function")
        args = clip_model.args
    finally:
        sys.argv = argv
    if vit_b is not None:
        init = base_block.TransformerClassifier.__init__
        defaults = list(init.__defaults__)
        defaults[-1] = vit_b
        init.__defaults__ = tuple(defaults)
    return types.SimpleNamespace(
        clip_model=clip_model,
        clip=clip_pkg,
        base_block=base_block,
        CEL_Sigmoid=loss.CEL_Sigmoid,
        metrics=function.get_pedestrian_metrics,
        args=args,
        argv=["reference", DATASET_ARG.get(dataset, dataset), *flags],
    )


def build(ref: types.SimpleNamespace, attributes: list[str], arch: dict, seed: int = 0, fp16: bool = False):
    """A reference CLIP (random weights, its own class) and its TransformerClassifier, as its train.py builds
    them. `arch`: OpenAI CLIP dimensions (embed_dim, image_resolution, vision_layers, vision_width,
    vision_patch_size, context_length, vocab_size, transformer_width, transformer_heads, transformer_layers).
    `fp16`: convert the weights as its build_model does (what a CUDA run trains and saves)."""
    torch.manual_seed(seed)
    argv, sys.argv = sys.argv, ref.argv  # its CLIP class parses the command line again in __init__
    try:
        clip = ref.clip_model.CLIP(**arch)
    finally:
        sys.argv = argv
    with torch.no_grad():  # OpenAI's init leaves LayerNorms at 1/0 and biases at 0: make every tensor count
        for name, p in clip.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias") or "ln_" in name:
                p.normal_(0, 0.02)
    if fp16:
        ref.clip_model.convert_weights(clip)
    model = ref.base_block.TransformerClassifier(clip, len(attributes), attributes)
    with torch.no_grad():
        for bn in [model.bn] + ([clip.agg_bn] if hasattr(clip, "agg_bn") else []):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
    return clip, model


VIT_L_14 = dict(
    embed_dim=768,
    image_resolution=224,
    vision_layers=24,
    vision_width=1024,
    vision_patch_size=14,
    context_length=77,
    vocab_size=49408,
    transformer_width=768,
    transformer_heads=12,
    transformer_layers=12,
)
VIT_B_16 = dict(
    embed_dim=512,
    image_resolution=224,
    vision_layers=12,
    vision_width=768,
    vision_patch_size=16,
    context_length=77,
    vocab_size=49408,
    transformer_width=512,
    transformer_heads=8,
    transformer_layers=12,
)
