"""parbench's public API: what a method, a reader or a backbone from outside the project imports.

Every name here is stable; `tests/test_api.py` lists them, so removing or renaming one fails. The methods that
ship with parbench (`promptpar/`, `baselines/`) import the framework only through this module, as a plugin would.

A method is a `MethodSpec`; parbench finds it by name (built in, or an installed distribution's entry point in
the group `parbench.methods`) or by reference (`--method package.module:SPEC`, `--method path/to/file.py:SPEC`).
Its model follows one contract: `forward(images)` returns `{"logits": (B, K) tensor}` and, optionally,
`"aux": [(B, K) tensor, ...]` (auxiliary logits, weighted by the recipe's `aux_loss_weight`); it holds only the
modules it runs, with `requires_grad` set on what trains; `param_groups(cfg)` (optional) sets learning rates per
group; a feature method (`uses_features=True`) also has `encode(images) -> (B, D)` and `head(features) -> logits`.
The engine owns every loop. A reader is a function `(card, root, partition=0) -> PARDataset`, registered by name
(entry-point group `parbench.readers`) and named by a card's `reader` key.
"""

from __future__ import annotations

from dataclasses import fields

from parbench.atomic import save_torch
from parbench.backbones import Backbone, Preprocess, create_backbone, image_tokens
from parbench.cards import Attribute, Card, load_card
from parbench.data.dataset import PARDataset, check_relpath
from parbench.data.pickles import load_pickle, load_torch
from parbench.engine.build import build_model
from parbench.engine.config import TrainConfig, load_config_file, resolve_config
from parbench.engine.loss import weighted_bce
from parbench.engine.params import count_params, freeze, param_groups
from parbench.errors import ParbenchError
from parbench.labels import NEGATIVE, POSITIVE, UNSPECIFIED
from parbench.layers import LogitsModel, block_forward, prompt_init
from parbench.methods import MethodSpec, check_output, plain_method, register_method
from parbench.prompts import in_template, prompt_identity, prompt_sets, prompt_sha256, sentences
from parbench.recipes import PROMPT_TUNING, TOWER_TUNING
from parbench.registry import register_reader
from parbench.settings import cache_dir
from parbench.torchfile import load_weights_only

#: Every setting a recipe (`MethodSpec.recipe`) may set: the fields of `TrainConfig`, the engine's knobs.
RECIPE_KEYS: frozenset[str] = frozenset(f.name for f in fields(TrainConfig))

__all__ = [
    "NEGATIVE",
    "POSITIVE",
    "PROMPT_TUNING",
    "RECIPE_KEYS",
    "TOWER_TUNING",
    "UNSPECIFIED",
    "Attribute",
    "Backbone",
    "Card",
    "LogitsModel",
    "MethodSpec",
    "PARDataset",
    "ParbenchError",
    "Preprocess",
    "TrainConfig",
    "block_forward",
    "build_model",
    "cache_dir",
    "check_output",
    "check_relpath",
    "count_params",
    "create_backbone",
    "freeze",
    "image_tokens",
    "in_template",
    "load_card",
    "load_config_file",
    "load_pickle",
    "load_torch",
    "load_weights_only",
    "param_groups",
    "plain_method",
    "prompt_identity",
    "prompt_init",
    "prompt_sets",
    "prompt_sha256",
    "register_method",
    "register_reader",
    "resolve_config",
    "save_torch",
    "sentences",
    "weighted_bce",
]
