"""What a method declares: how to build its model, its default recipe, and which parameters train.

Methods never own training loops: the engine (parbench/engine) does. A method model's `forward(images)`
returns a dict with "logits" (B x K) and optionally "aux" (list of B x K logits for auxiliary losses).
Feature-based methods (linear probe) also expose `encode(images)` and `head(features)`. A model holds only the
modules it runs (a baseline that never uses CLIP's text tower does not keep it), so counting its parameters
counts what the method costs.

Methods come from the built-in registry, from installed distributions (entry-point group `parbench.methods`),
or by reference (`package.module:SPEC`, `path/to/file.py:SPEC`); all go through `get_method`, which checks the
declaration (recipe keys and values, options, backbones) and attaches where the method came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parbench.errors import ParbenchError
from parbench.registry import methods


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    build: Callable[..., Any]  # (backbone, card, options) -> nn.Module with requires_grad set
    recipe: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides (the method's defaults)
    options: type | None = None  # dataclass of method-specific options (--set reaches them too)
    uses_features: bool = False  # train on cached frozen features (encode once, then head)
    trains: bool = True  # False: evaluation only (zero-shot)
    # also report decisions at thresholds fitted on the train/val split (never test), beside the fixed one
    fits_thresholds: bool = False
    # (checkpoint dict, card, backbone name | None, overrides, source) -> (Built, report of what was inferred):
    # reads a method's own foreign checkpoint format (PromptPAR's reference files) for eval / predict
    import_checkpoint: Callable[..., Any] | None = None
    # (loaded checkpoint object) -> bool: whether import_checkpoint reads this file
    accepts_checkpoint: Callable[[Any], bool] | None = None
    # settings that let the model be built on torch's meta device for counting (no weights files needed)
    meta_overrides: dict[str, Any] = field(default_factory=dict)
    default_backbone: str = "ViT-L-14"
    # TrainConfig settings per value of the `variant` option (a reference variant's split and selection)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # TrainConfig settings per dataset name, where the method's reference configs differ by dataset
    dataset_recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (card, options) -> files whose content decides the numbers beyond the card and the settings (a phrase or
    # prompt file): their sha256 joins the run's identity
    data_files: Callable[..., list] | None = None
    # (card, options) -> dict of further content that decides the numbers (zero-shot: the resolved prompt
    # sentences' hash): it joins the run's identity, and with it the record, as `method_data`
    identity_data: Callable[..., dict] | None = None
    # None: no text side (held-out attributes refused). A dict: the method can score attributes it was not trained
    # on: `axes` {state-dict pattern: attribute axis}, `lists` [module lists, one entry per attribute], `keep`
    # [tensors the model over every attribute builds itself] (parbench.engine.open_vocab); {} when nothing trains
    open_vocabulary: dict | None = None
    # False where the model cannot run on torch's meta device (a transformers VLM checks token ids with .item()):
    # its forward FLOPs are not counted (records and `methods info` say none)
    meta_forward: bool = True
    # the backbone libraries the method runs on: "open_clip" (image and text towers), "timm" (image towers); a
    # method that reaches into CLIP's text tower or its transformer's internals is open_clip only
    backbones: tuple[str, ...] = ("open_clip",)
    # where the method's code comes from (set by `get_method`, never by the method): part of a plugin run's identity
    origin: dict[str, Any] = field(default_factory=lambda: {"kind": "built-in"}, compare=False)

    @property
    def builtin(self) -> bool:
        return self.origin.get("kind") == "built-in"


BACKBONE_KINDS = ("open_clip", "timm", "hf")


def check_backbone(spec: MethodSpec, backbone: str) -> None:
    """Refuse, before anything is built, a backbone of a library the method does not run on."""
    from parbench.backbones import backbone_kind

    kind = backbone_kind(backbone)
    if kind not in spec.backbones:
        names = {"open_clip": "an open_clip model name", "timm": "timm:NAME", "hf": "hf:/path/to/model-folder"}
        need = " or ".join(names[k] for k in spec.backbones)
        raise ParbenchError(f"method {spec.name}", f"a backbone it runs on ({need})", f"'{backbone}' ({kind})")


def plain_method(
    name: str,
    build: Callable[..., Any],
    description: str = "",
    recipe: dict | None = None,
    options: type | None = None,
    backbones: tuple[str, ...] = ("open_clip", "timm"),
) -> MethodSpec:
    """A method from a plain model: `build(backbone, card, options)` returns any nn.Module that maps images
    (B, 3, H, W) to K logits (B, K), with `requires_grad` set on what trains; parbench wraps its output as the
    model contract wants ({"logits": ...}) and trains it with `recipe` (TrainConfig settings)."""

    def wrapped(backbone, card, opts=None):
        import torch.nn as nn

        from parbench.layers import LogitsModel

        net = build(backbone, card, opts)
        if not isinstance(net, nn.Module):  # the engine names the plugin and where it comes from
            raise TypeError(f"plain_method's build returned {type(net).__name__}, not an nn.Module")
        return LogitsModel(net)

    return MethodSpec(
        name=name,
        description=description or f"{name} (a plain logits model)",
        build=wrapped,
        recipe=dict(recipe or {}),
        options=options,
        backbones=tuple(backbones),
    )


def check_spec(spec: Any, where: str) -> None:
    """A method declaration as the engine needs it; anything else is one error naming the plugin."""
    from parbench.engine.config import TrainConfig, apply_overrides

    if not isinstance(spec, MethodSpec):
        raise ParbenchError(where, "a parbench.api.MethodSpec", type(spec).__name__)
    if not isinstance(spec.name, str) or not spec.name.strip():
        raise ParbenchError(where, "a MethodSpec with a name", repr(spec.name))
    if not callable(spec.build):
        raise ParbenchError(where, "build: a function (backbone, card, options) -> nn.Module", repr(spec.build))
    for hook in ("data_files", "identity_data", "import_checkpoint", "accepts_checkpoint"):
        if getattr(spec, hook) is not None and not callable(getattr(spec, hook)):
            raise ParbenchError(where, f"{hook}: a function or None", repr(getattr(spec, hook)))
    if not isinstance(spec.recipe, dict):
        raise ParbenchError(where, "recipe: a dict of TrainConfig settings", type(spec.recipe).__name__)
    apply_overrides(TrainConfig(), spec.recipe, f"{where} recipe")  # unknown keys and bad values fail here
    for kind, table in (("variants", spec.variants), ("dataset_recipes", spec.dataset_recipes)):
        for name, recipe in table.items():
            apply_overrides(TrainConfig(), {**spec.recipe, **recipe}, f"{where} {kind}[{name!r}]")
    if spec.options is not None:
        if not (isinstance(spec.options, type) and dataclasses.is_dataclass(spec.options)):
            raise ParbenchError(where, "options: a dataclass type (or None)", repr(spec.options))
        try:
            spec.options()
        except TypeError as e:
            raise ParbenchError(where, "options whose every field has a default", str(e)) from None
    unknown = [k for k in spec.backbones if k not in BACKBONE_KINDS]
    if unknown or not spec.backbones:
        raise ParbenchError(where, f"backbones among {', '.join(BACKBONE_KINDS)}", repr(spec.backbones))


def register_method(spec: Any) -> Any:
    """Register a `MethodSpec` under its name from Python (a notebook, a script that calls the engine), so
    `RunSpec(method=spec.name)` finds it; its origin (module, distribution, source hash) joins the run identity.
    Installed packages use the entry-point group `parbench.methods` instead; both are checked the same way."""
    from parbench.registry import origin_of

    check_spec(spec, f"method {getattr(spec, 'name', spec)!r}")
    methods.register(spec.name, spec, origin=origin_of(spec.build))
    return spec


def get_method(name: str, base: str | Path | None = None) -> MethodSpec:
    """A method by registered name (built in or from an installed distribution) or by reference
    (`module:ATTR`, `file.py:ATTR`; a relative file is looked for under `base` first, e.g. a suite's folder)."""
    from parbench.plugins import is_reference, load_reference

    if not is_reference(name):
        spec = methods.get(name)
        origin = methods.origin(name)
        if origin["kind"] == "built-in":
            return spec
        from parbench.plugins import describe_origin

        where = f"method plugin '{name}' ({describe_origin(origin)})"
        check_spec(spec, where)
        if spec.name != name:
            raise ParbenchError(where, f"a MethodSpec named '{name}', as its entry point", f"'{spec.name}'")
        return dataclasses.replace(spec, origin=origin)
    # loaded each time: a file is imported once per content (an edited file is a new module), a module once
    obj, origin = load_reference(name, "method", Path(base) if base else None)
    where = f"method plugin {name}"
    check_spec(obj, where)
    if obj.name in methods:
        raise ParbenchError(
            where, f"a method name of its own ('{obj.name}' is already a method of parbench)", f"name '{obj.name}'"
        )
    return dataclasses.replace(obj, origin=origin)


def list_methods(pattern: str | None = None) -> list[str]:
    return methods.names(pattern)


def method_where(spec: MethodSpec) -> str:
    """How errors name a method: its name, and where it came from when it is not built in."""
    if spec.builtin:
        return f"method {spec.name}"
    from parbench.plugins import describe_origin

    return f"method plugin {spec.name} ({describe_origin(spec.origin)})"


def method_rows(names: list[str]) -> list[dict]:
    """One row per method for listings: name, description, backbones and origin. A plugin that fails to load
    is listed with its error rather than hiding the others."""
    from parbench.plugins import describe_origin

    rows = []
    for n in names:
        origin = methods.origin(n)
        try:
            spec = get_method(n)
            origin, description, backbones = spec.origin, spec.description, list(spec.backbones)
        except ParbenchError as e:
            description, backbones = f"cannot be loaded: {e}", []
        rows.append(
            {
                "name": n,
                "description": description,
                "backbones": backbones,
                "origin": origin,
                "origin_text": describe_origin(origin),
            }
        )
    return rows


def check_output(out: Any, batch: int, num_attributes: int, where: str) -> None:
    """The model contract: forward(images) -> {"logits": B x K, "aux": [B x K, ...] (optional)}. Checked on
    every forward the engine makes (a dict lookup and two shapes), so a plugin that breaks it stops with one
    error naming the method, not a shape error deep in the loss."""
    import torch

    want = f"forward(images) -> {{'logits': {batch} x {num_attributes} tensor}}"
    if not isinstance(out, dict) or not isinstance(out.get("logits"), torch.Tensor):
        found = f"dict with keys {sorted(out)}" if isinstance(out, dict) else type(out).__name__
        raise ParbenchError(where, want, found)
    if tuple(out["logits"].shape) != (batch, num_attributes):
        raise ParbenchError(where, want, f"logits of shape {tuple(out['logits'].shape)}")
    for i, aux in enumerate(out.get("aux", ())):
        if not isinstance(aux, torch.Tensor) or tuple(aux.shape) != (batch, num_attributes):
            found = tuple(aux.shape) if isinstance(aux, torch.Tensor) else type(aux).__name__
            raise ParbenchError(where, f"aux[{i}] of shape {batch} x {num_attributes}", str(found))


def method_for_checkpoint(obj: Any, source: str) -> MethodSpec:
    """The registered method whose importer reads this foreign checkpoint."""
    for name in list_methods():
        spec = get_method(name)
        if spec.accepts_checkpoint is not None and spec.accepts_checkpoint(obj):
            return spec
    found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise ParbenchError(
        source, "a parbench checkpoint (a run's trainable.pt) or a PromptPAR reference checkpoint", f"keys {found}"
    )
