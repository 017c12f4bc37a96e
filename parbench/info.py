"""Parameter accounting for any method and backbone without allocating: the model is built on torch's meta
device, so ViT-L/14 PromptPAR (438M parameters) is counted in about a second with no memory."""

from __future__ import annotations

from dataclasses import dataclass

from parbench.errors import ParbenchError


@dataclass(frozen=True)
class _Attr:
    name: str
    positive: str
    negative: str
    reference_text: str = ""
    group: str = ""


@dataclass(frozen=True)
class _SizedCard:
    """A stand-in card when only the number of attributes is known."""

    attributes: tuple
    name: str = "custom"

    @property
    def num_attributes(self) -> int:
        return len(self.attributes)

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def reference_texts(self) -> list[str]:
        return [a.positive for a in self.attributes]


def build_meta(spec, backbone: str, card, options):
    """The method's model on torch's meta device (shapes only, no memory, no weights files)."""
    import torch

    from parbench.backbones import create_backbone
    from parbench.methods import check_backbone

    check_backbone(spec, backbone)
    bb = create_backbone(backbone, "none", meta=True)
    bb.image_tower_params = sum(p.numel() for p in bb.visual.parameters())  # before a method adds to it
    from parbench.engine.build import build_checked

    with torch.device("meta"):
        model = build_checked(spec, bb, card, options)
    return model.eval(), bb


def input_size(model, bb, cfg) -> tuple[int, int]:
    """The (H, W) a run feeds the model: the weights' size unless the method sets its own (256 x 192)."""
    from parbench.data.transforms import resolve_preprocess

    return resolve_preprocess(bb.preprocess, cfg, getattr(model, "preprocess_defaults", None)).size


def forward_flops(model, size: tuple[int, int]) -> int:
    """FLOPs of one image's evaluation forward (multiply-add = 2 FLOPs; matmuls, convolutions and fused
    attention as torch's flop counter counts them). Work a method does once per model (PromptPAR's cached text
    features, zero-shot's text bank) is not per image: the forward runs once to warm such caches first."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.empty(1, 3, *size, device="meta")
    # no parameter requires grad while counting: the counter's module tracker hooks the autograd node of every
    # grad-requiring input, and a view of a parameter (expanded queries, a plugin's) has none to hook
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            model(x)  # warm caches (text features) outside the count
            with FlopCounterMode(display=False) as counter:
                model(x)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return int(counter.get_total_flops())


def method_info(
    method: str, backbone: str | None, dataset: str | None, num_attributes: int | None, overrides: dict
) -> dict:
    """Parameter counts and forward FLOPs of a method's model as a run builds it (the modules it runs; the
    image tower apart). No backbone: the method's default, as `run` takes it."""
    from parbench.cards import load_card
    from parbench.engine.config import resolve_config
    from parbench.engine.params import count_params
    from parbench.methods import get_method

    spec = get_method(method)
    backbone = backbone or spec.default_backbone
    if dataset:
        card = load_card(dataset)
    elif num_attributes:
        card = _SizedCard(
            tuple(_Attr(f"attr{i}", f"attribute {i}", f"no attribute {i}") for i in range(num_attributes))
        )
    else:
        raise ParbenchError("methods info", "--dataset NAME or --num-attributes K", "neither")
    cfg, options = resolve_config(spec, {**overrides, **spec.meta_overrides}, getattr(card, "name", None))
    model, bb = build_meta(spec, backbone, card, options)
    total, trainable = count_params(model)
    tower = bb.image_tower_params
    return {
        "method": spec.name,
        "backbone": backbone,
        "num_attributes": card.num_attributes,
        "dataset": getattr(card, "name", None),
        "total_params": total,
        "trainable_params": trainable,
        "trainable_pct": 100.0 * trainable / max(total, 1),
        "image_tower_params": tower,
        "flops_per_image": forward_flops(model, input_size(model, bb, cfg)) if spec.meta_forward else None,
        "activation": bb.activation,
        "options": overrides,
    }
