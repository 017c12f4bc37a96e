"""Every training knob in one dataclass, with one merge path: defaults < method recipe < --config file <
--set key=value < explicit flags. Unknown keys fail with suggestions; values are checked against the field type.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import tomllib

from parbench.errors import ParbenchError


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # passes over the training split
    batch_size: int = 32  # training batch
    eval_batch_size: int = 64  # evaluation / feature-extraction batch
    optimizer: str = "adamw"  # "sgd" (momentum) or "adamw"
    lr: float = 1e-3  # base learning rate of the head group; methods define other groups relative to it
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    warmup_epochs: int = 0  # linear warm-up from warmup_lr_init * lr (timm CosineLRScheduler semantics)
    warmup_lr_init: float = 0.01  # fraction of lr at epoch 0 of warm-up
    min_lr: float = 0.002  # cosine floor, fraction of lr
    clip_grad: float = 10.0  # gradient-norm clip per parameter group (0 = off)
    aux_loss_weight: float = 0.5  # weight of auxiliary losses a model returns (PromptPAR's GL branch)
    unspecified: str = "negative"  # label 255 in loss and metrics: "negative", "ignore" or "stored"
    pad: int = 10  # train augmentation: pad then random-crop back to the input size
    flip: bool = True  # train augmentation: random horizontal flip
    normalization: str = "backbone"  # "backbone" (the weights' mean/std) or "half" (0.5/0.5, PromptPAR)
    train_split: str = "auto"  # "auto" = the card's train split; e.g. "trainval" to reproduce the references
    select_on: str = "auto"  # "auto" = card; "val", "carve" (seeded val from train), "last" or "test"
    carve_fraction: float = 0.1  # share of the train split held out when select_on = "carve"
    num_workers: int = 0  # DataLoader workers (0 keeps CPU runs bit-for-bit reproducible)
    cache_images: bool = False  # keep decoded images in memory (small datasets)
    device: str = "auto"  # "auto", "cpu", "cuda"
    amp: bool = True  # bf16 autocast on CUDA (fp32 on CPU regardless)
    grad_checkpointing: bool = False  # recompute frozen-tower activations in backward (saves memory)
    max_steps: int = 0  # stop each epoch after this many steps (smoke runs; the record is marked smoke)
    limit: int = 0  # use at most this many images per split (smoke runs; the record is marked smoke)
    bootstrap: int = 1000  # bootstrap resamples for the 95% intervals (0 = off)

    @property
    def smoke(self) -> bool:
        return bool(self.max_steps or self.limit)


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    kind = type(default)
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


def apply_overrides(cfg: Any, overrides: dict[str, Any], source: str) -> Any:
    """Return a copy of a dataclass config with checked overrides."""
    known = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    clean = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ParbenchError(source, f"a known setting{hint}", f"'{key}'")
        clean[key] = _coerce(key, value, known[key], source)
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
