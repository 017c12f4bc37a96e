"""Every training knob in one dataclass, with one merge path: defaults < method recipe < --config file <
--set key=value < explicit flags. Unknown keys fail with suggestions; values are checked against the field type.
"""

from __future__ import annotations

import ast
import difflib
import math
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from parbench.errors import ParbenchError


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # passes over the training split
    batch_size: int = 32  # training batch
    eval_batch_size: int = 64  # evaluation / feature-extraction batch
    optimizer: str = "adamw"  # "sgd" (momentum), "adamw" (decoupled decay) or "adam" (coupled L2, Rethinking's)
    lr: float = 1e-3  # base learning rate of the head group; methods define other groups relative to it
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    warmup_epochs: int = 0  # linear warm-up from warmup_lr_init * lr (timm CosineLRScheduler semantics)
    warmup_lr_init: float = 0.01  # fraction of lr at epoch 0 of warm-up
    min_lr: float = 0.002  # cosine floor, fraction of lr
    clip_grad: float = 10.0  # gradient-norm clip (0 = off), per parameter group or over the model (clip_grad_scope)
    clip_grad_scope: str = "group"  # "group" (each group's norm, PromptPAR's) or "model" (one norm, Rethinking's)
    schedule: str = "cosine"  # "cosine" (warm-up, then cosine per epoch) or "plateau" (ReduceLROnPlateau)
    plateau_factor: float = 0.1  # plateau: lr *= factor when the selection split's loss stops falling ...
    plateau_patience: int = 4  # ... for this many epochs (torch's ReduceLROnPlateau, stepped once per epoch)
    drop_last: bool = False  # drop the last, smaller training batch of an epoch (Rethinking's loader)
    ema: bool = False  # keep an exponential moving average of the trained weights; it is what is selected,
    ema_decay: float = 0.9998  # evaluated and saved (updated after every step, timm's ModelEmaV2)
    aux_loss_weight: float = 0.5  # weight of auxiliary losses a model returns (PromptPAR's GL branch)
    unspecified: str = "negative"  # label 255 in loss and metrics: "negative", "ignore" or "stored"
    # attributes held out of training, scored as unseen ("a,b" or "@NAME", a card's attribute split): methods with
    # a text side only (parbench.engine.open_vocab)
    heldout_attributes: str = ""
    pad: int = 10  # train augmentation: pad then random-crop back to the input size
    flip: bool = True  # train augmentation: random horizontal flip
    # "auto" (the method's, else the weights'), "backbone" (the weights' mean/std), "half" (0.5), "imagenet"
    normalization: str = "auto"
    interpolation: str = "auto"  # resize: "auto" (the method's, else the weights'), "bicubic" or "bilinear"
    letterbox: bool = False  # keep the aspect ratio and pad with black to the input size (PromptPAR's Pad_datasets)
    train_split: str = "auto"  # "auto" = the card's train split; e.g. "trainval" to reproduce the references
    select_on: str = "auto"  # "auto" = card; "val", "carve" (seeded val from train), "last" or "test"
    carve_fraction: float = 0.1  # share of the train split held out when select_on = "carve"
    select_protocol: str = "promptpar"  # whose mA picks the best epoch (threshold 0.45 or 0.5); both are reported
    # DataLoader workers: -1 = chosen from the cores on CUDA, none on CPU (engine.train.loader_workers). Not part
    # of a run's identity: augmentation is seeded per image, so any number of workers gives the same numbers
    num_workers: int = -1
    # the decoded-image cache (data/image_cache.py): "auto" = for boxed and letterboxed sources (WIDER), "on",
    # "off"; true/false read as on/off. Same pixels either way, so not part of the identity
    cache_images: str = "auto"
    cache_images_gb: float = 64.0  # bound on the cache folder; the least recently used files go first
    device: str = "auto"  # "auto", "cpu", "cuda"
    amp: bool = True  # bf16 autocast on CUDA (fp32 on CPU regardless)
    grad_checkpointing: bool = False  # recompute frozen-tower activations in backward (saves memory)
    compile: bool = False  # torch.compile the model for evaluation (GPU: pays; CPU: ~+3% after ~1 min compiling)
    max_steps: int = 0  # stop each epoch after this many steps (smoke runs; the record is marked smoke)
    limit: int = 0  # use at most this many images per split (smoke runs; the record is marked smoke)
    bootstrap: int = 1000  # bootstrap resamples for the 95% intervals (0 = off)
    track_test: bool = False  # also score test after every epoch (never to select): the published protocol
    logger: str = "none"  # also log epochs to "tensorboard" or "wandb" (offline unless configured); log.jsonl stays

    @property
    def smoke(self) -> bool:
        return bool(self.max_steps or self.limit)

    # checked when a value is set (method recipe, --config, --set), so a typo stops a run before it starts
    CHOICES: ClassVar[dict] = {
        "optimizer": ("sgd", "adamw", "adam"),
        "clip_grad_scope": ("group", "model"),
        "schedule": ("cosine", "plateau"),
        "unspecified": ("negative", "ignore", "stored"),
        "normalization": ("auto", "backbone", "half", "imagenet"),
        "interpolation": ("auto", "bicubic", "bilinear"),
        "select_on": ("auto", "val", "carve", "last", "test"),
        "select_protocol": ("promptpar", "rethinking"),
        "train_split": ("auto", "train", "trainval"),
        "device": ("auto", "cpu", "cuda"),
        "logger": ("none", "tensorboard", "wandb"),
        "cache_images": ("auto", "on", "off"),
    }
    RANGES: ClassVar[dict] = {  # (low, high), inclusive; None = open
        "epochs": (0, None), "batch_size": (1, None), "eval_batch_size": (1, None), "lr": (0.0, None),
        "weight_decay": (0.0, None), "momentum": (0.0, 1.0), "warmup_epochs": (0, None),
        "warmup_lr_init": (0.0, 1.0), "min_lr": (0.0, 1.0), "clip_grad": (0.0, None),
        "aux_loss_weight": (0.0, None), "pad": (0, None), "carve_fraction": (0.0, 1.0), "num_workers": (-1, None),
        "cache_images_gb": (0.0, None), "max_steps": (0, None), "limit": (0, None), "bootstrap": (0, None),
        "plateau_factor": (0.0, 1.0), "plateau_patience": (0, None), "ema_decay": (0.0, 1.0),
    }  # fmt: skip


# Settings added after runs were first stored, with the value that reproduces what those runs did: a run's
# identity leaves them out while they hold it, so stores written before a setting existed still match.
LATER_DEFAULTS: dict[str, Any] = {
    "heldout_attributes": "",
    "clip_grad_scope": "group",
    "schedule": "cosine",
    "plateau_factor": 0.1,
    "plateau_patience": 4,
    "drop_last": False,
    "ema": False,
    "ema_decay": 0.9998,
    "track_test": False,
}


# Settings that cannot change a run's numbers and so are no part of its identity: where its epochs are also logged,
# how many processes decode its images (tests/test_data_path.py checks 0, 1 and 4 give the same numbers).
NOT_IDENTITY = {"logger", "num_workers", "cache_images", "cache_images_gb"}


def identity_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings as a run's identity holds them (see LATER_DEFAULTS and NOT_IDENTITY)."""
    return {
        k: v
        for k, v in asdict(cfg).items()
        if k not in NOT_IDENTITY and not (k in LATER_DEFAULTS and LATER_DEFAULTS[k] == v)
    }


SWITCHES = {"cache_images"}  # "auto" / "on" / "off" settings that also take true / false


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    kind = type(default)
    if name in SWITCHES:  # an on/off setting with an automatic default: true = on
        words = {True: "on", False: "off", "true": "on", "false": "off", "yes": "on", "no": "off"}
        value = words.get(value.strip().lower() if isinstance(value, str) else value, value)
    if isinstance(value, str) and kind is not str:
        words = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}
        if value.strip().lower() in words:
            value = words[value.strip().lower()]
        else:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ParbenchError(source, f"{name} as {kind.__name__}", repr(value)) from None
    if default is None:  # an optional setting (e.g. a fix that follows the variant): any plain value or None
        if value is not None and not isinstance(value, bool | int | float | str):
            raise ParbenchError(source, f"{name} as true/false or a number", repr(value))
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is bool and not isinstance(value, bool):
        raise ParbenchError(source, f"{name} as true/false", repr(value))
    if not isinstance(value, kind):
        raise ParbenchError(source, f"{name} as {kind.__name__}", f"{type(value).__name__} {value!r}")
    return value


def _check_range(name: str, value: Any, cls: type, source: str) -> None:
    """A setting's value against the config class's CHOICES and RANGES (finite numbers only)."""
    choices = getattr(cls, "CHOICES", {}).get(name)
    if choices is not None and value not in choices:
        raise ParbenchError(source, f"{name} one of {', '.join(map(str, choices))}", repr(value))
    if isinstance(value, float) and not math.isfinite(value):
        raise ParbenchError(source, f"{name} a finite number", repr(value))
    bounds = getattr(cls, "RANGES", {}).get(name)
    if bounds is not None and isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = bounds
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            want = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ParbenchError(source, f"{name} {want}", repr(value))


def apply_overrides(cfg: Any, overrides: dict[str, Any], source: str) -> Any:
    """Return a copy of a dataclass config with checked overrides (type, choices, range)."""
    known = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    clean = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ParbenchError(source, f"a known setting{hint}", f"'{key}'")
        clean[key] = _coerce(key, value, known[key], source)
        _check_range(key, clean[key], type(cfg), source)
    return replace(cfg, **clean)


def parse_sets(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ParbenchError("--set", "key=value", repr(item))
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is one error naming it."""
    path = Path(path)
    if not path.is_file():
        raise ParbenchError(path, "a TOML config file", "no such file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ParbenchError(path, "valid TOML", str(e)) from None
    return data


def to_toml(d: dict[str, Any]) -> str:
    """Minimal TOML writer for flat/one-level configs (the resolved config saved with a run)."""
    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, table in tables:
        lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if v is None:
        return '""'
    return json.dumps(str(v))


def config_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg)


def resolve_config(method: Any, overrides: dict[str, Any], dataset: str | None = None) -> tuple[TrainConfig, Any]:
    """The one merge path: TrainConfig defaults < the method's recipe < its variant's recipe (the `variant`
    option's entry in `method.variants`) < its recipe for the dataset (`method.dataset_recipes`, as the method's
    reference configs set them) < overrides (--config file, --set, flags). Keys go to the engine's TrainConfig
    or to the method's options dataclass; an unknown key is an error."""
    train_keys = {f.name for f in fields(TrainConfig)}
    opt_keys = {f.name for f in fields(method.options)} if method.options else set()
    t, o = {}, {}
    for k, v in overrides.items():
        key = k.replace("-", "_")
        (o if key in opt_keys and key not in train_keys else t)[key] = v
    options = apply_overrides(method.options(), o, f"{method.name} options") if method.options else None
    variant = method.variants.get(getattr(options, "variant", None), {})
    per_dataset = method.dataset_recipes.get(dataset, {}) if dataset else {}
    cfg = apply_overrides(TrainConfig(), {**method.recipe, **variant, **per_dataset, **t}, f"{method.name} settings")
    return cfg, options
