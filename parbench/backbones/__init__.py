"""Backbones: an open_clip model name (or `timm:NAME`) plus its weights, built in one place.

`factory.create_backbone` is the only code that builds a backbone: open_clip models itself, timm towers through
`timm_towers`; `weights` reads open_clip weight files, `tiny` makes the tiny test/demo backbone's weights, `base`
holds what they share. Imports run one way: factory -> tiny -> base, factory -> timm_towers -> base,
factory -> weights.
"""

from parbench.backbones.base import (
    DEFAULT_PRETRAINED,
    INTERPOLATIONS,
    OPENAI_MEAN,
    OPENAI_STD,
    TINY,
    Backbone,
    Preprocess,
    activation_of,
    image_tokens,
    list_backbones,
)
from parbench.backbones.factory import backbone_kind, create_backbone, resolve_pretrained
from parbench.backbones.weights import load_weights_file

__all__ = [
    "DEFAULT_PRETRAINED",
    "INTERPOLATIONS",
    "OPENAI_MEAN",
    "OPENAI_STD",
    "TINY",
    "Backbone",
    "Preprocess",
    "activation_of",
    "backbone_kind",
    "create_backbone",
    "image_tokens",
    "list_backbones",
    "load_weights_file",
    "resolve_pretrained",
]
