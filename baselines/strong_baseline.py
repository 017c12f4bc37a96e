"""`strong-baseline`: Rethinking_of_PAR's strong baseline (Jia et al., "Rethinking of Pedestrian Attribute
Recognition"), as valencebond/Rethinking_of_PAR (0baa462) trains it.

An ImageNet tower (ResNet-50 by default, torchvision's layout: `timm:resnet50`; any `timm:` name, as their
configs also run Swin-S and ViTs), its pooled feature, one `Linear(D, K)` (their configs' `BN: False`: no
BatchNorm on the logits). Their recipe: Adam with coupled L2 weight decay 5e-4 on every parameter (BatchNorm and
biases included, `BN_WD: True`), lr 1e-4 for tower and head, one gradient-norm clip at 10 over the whole model,
batch 64 with drop_last, 30 epochs, ReduceLROnPlateau(factor 0.1, patience 4) stepped once per epoch on a
split's loss, the exp-weighted BCE; Resize(256, 192) (bilinear), Pad 10, RandomCrop, flip, ImageNet mean/std;
an EMA of the weights (decay 0.9998, every step) where their config enables it (PA100k), and then the EMA model
is what they validate.

`variant=reference` reproduces their selection: train on trainval, step the plateau on the *test* loss and keep
the epoch of best *test* mA (their VAL_SPLIT is 'test'); flagged as test-selected everywhere. `variant=fixed`
(the default) trains on train and selects and steps on val. Their checkpoint saves the raw model under the EMA
key too (`save_ckpt` stores `model.state_dict()` twice), so a released EMA run's file does not hold the model
they evaluated; parbench saves the model it evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from parbench.api import MethodSpec, freeze


@dataclass(frozen=True)
class StrongBaselineOptions:
    variant: str = "fixed"  # "fixed" (select on val) or "reference" (trainval, select and step on test)
    height: int = 256  # input size, their DATASET.HEIGHT x WIDTH
    width: int = 192
    logit_bn: bool = False  # BatchNorm1d on the logits (their CLASSIFIER.BN; off in every pedestrian config)

    CHOICES: ClassVar[dict] = {"variant": ("fixed", "reference")}
    RANGES: ClassVar[dict] = {"height": (16, None), "width": (16, None)}


class StrongBaseline(nn.Module):
    def __init__(self, backbone, num_attributes: int, options: StrongBaselineOptions):
        super().__init__()
        self.visual = freeze(backbone.visual, trainable=True)  # every parameter trains
        self.head = nn.Linear(backbone.embed_dim, num_attributes)
        self.bn = nn.BatchNorm1d(num_attributes) if options.logit_bn else nn.Identity()
        self.num_attributes = num_attributes
        # their transform, whatever the weights' own preprocessing says
        self.preprocess_defaults = {
            "size": (options.height, options.width),
            "normalization": "imagenet",
            "interpolation": "bilinear",
        }

    def forward(self, images: torch.Tensor) -> dict:
        return {"logits": self.bn(self.head(self.visual(images).float()))}  # (B, D) -> (B, K)

    def param_groups(self, cfg) -> list[dict]:
        """Their two groups (LR_FT for the tower, LR_NEW for the head, equal in every config)."""
        head = [*self.head.parameters(), *self.bn.parameters()]
        return [
            {
                "name": "backbone",
                "params": list(self.visual.parameters()),
                "lr": cfg.lr,
                "weight_decay": cfg.weight_decay,
            },
            {"name": "head", "params": head, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        ]


def build(backbone, card, options: StrongBaselineOptions | None = None) -> StrongBaseline:
    return StrongBaseline(backbone, card.num_attributes, options or StrongBaselineOptions())


SPEC = MethodSpec(
    name="strong-baseline",
    description="Rethinking_of_PAR's strong baseline: ImageNet ResNet-50 (any timm tower) + linear head, Adam, plateau",
    build=build,
    recipe={
        "optimizer": "adam",
        "lr": 1e-4,
        "weight_decay": 5e-4,
        "clip_grad": 10.0,
        "clip_grad_scope": "model",
        "batch_size": 64,
        "eval_batch_size": 64,
        "drop_last": True,
        "epochs": 30,
        "warmup_epochs": 0,
        "schedule": "plateau",
        "plateau_factor": 0.1,
        "plateau_patience": 4,
        "pad": 10,
        "flip": True,
        "ema_decay": 0.9998,
        "select_protocol": "rethinking",  # their mA at threshold 0.5 picks the epoch
        # their train.py runs fp32 (no autocast, no GradScaler); bf16 on CUDA only by --set amp=true until a
        # measured comparison (benchmarks/amp_parity.py) shows it changes nothing material
        "amp": False,
    },
    options=StrongBaselineOptions,
    variants={"reference": {"train_split": "trainval", "select_on": "test"}},
    dataset_recipes={"PA100k": {"ema": True}},  # configs/pedes_baseline/pa100k.yaml: EMA.ENABLE True; others off
    default_backbone="timm:resnet50",
    backbones=("timm", "open_clip"),
)
