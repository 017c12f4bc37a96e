"""Registration of PromptPAR as a parbench method: build, recipe (the reference's) and parameter groups."""

from __future__ import annotations

from pathlib import Path

from parbench.errors import ParbenchError
from parbench.methods import MethodSpec
from promptpar.config import PromptParConfig
from promptpar.model import PromptPAR


def texts_for(card, cfg: PromptParConfig) -> list[str]:
    """The reference tokenises its own strings (phrases for RAPv1, quirky WIDER sentences)."""
    return (
        card.reference_texts()
        if cfg.resolved().variant == "reference"
        else [a.positive for a in card.attributes]
    )


def build(backbone, card, options: PromptParConfig | None = None) -> PromptPAR:
    cfg = (options or PromptParConfig()).resolved()
    model = PromptPAR(backbone, card.attribute_names, texts_for(card, cfg), cfg)
    if not cfg.use_mm_former:
        return model
    if cfg.vit_b_weights:
        import torch

        path = Path(cfg.vit_b_weights)
        if not path.is_file():
            raise ParbenchError(path, "the ViT-B/16 checkpoint for the fusion block", "no such file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
        model.fusion.load_vit_b(state, str(path))
    elif cfg.fusion_init != "random" and backbone.pretrained != "none":
        raise ParbenchError(
            "promptpar fusion block",
            "--set vit_b_weights=/path/to/jx_vit_base_p16_224-80ecf9dd.pth (ImageNet ViT-B/16, as the reference), "
            "or --set fusion_init=random to train with a random frozen block knowingly",
            "no weights given",
        )
    return model


def import_checkpoint(obj: dict, card, backbone: str | None, overrides: dict, source: str):
    """A reference checkpoint: options from its tensor shapes (then --set), every weight from the file."""
    from parbench.backbones import create_backbone
    from parbench.engine.run import resolve_config
    from promptpar.checkpoint import import_reference, infer_options, is_reference_checkpoint

    if not is_reference_checkpoint(obj):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ParbenchError(source, "a PromptPAR checkpoint ('model_state_dict' + 'clip_model')", str(found))
    inferred = infer_options(obj, source)
    cfg, options = resolve_config(SPEC, {**inferred, "fusion_init": "random", **overrides})
    bb = create_backbone(backbone or SPEC.default_backbone, "none")  # every CLIP weight comes from the file
    model = build(bb, card, options)
    import_reference(model, card, obj, source)
    return model, cfg, options, bb


SPEC = MethodSpec(
    name="promptpar",
    description="PromptPAR: CLIP with region-aware visual/text prompts, ViT-B fusion block, per-attribute heads",
    build=build,
    # The reference recipe: SGD momentum 0.9, fusion/heads lr 8e-3 (warm-up 5), prompts lr 4e-3 (warm-up 10),
    # weight decay 1e-4, cosine to 0.002 lr over 100 epochs, clip 10, batch 16, pad 10 + crop + flip, 0.5 x GL loss.
    recipe={
        "optimizer": "sgd",
        "lr": 8e-3,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "epochs": 100,
        "warmup_epochs": 5,
        "warmup_lr_init": 0.01,
        "min_lr": 0.002,
        "clip_grad": 10.0,
        "batch_size": 16,
        "pad": 10,
        "flip": True,
        "aux_loss_weight": 0.5,
    },  # fmt: skip
    options=PromptParConfig,
    import_checkpoint=import_checkpoint,
)
