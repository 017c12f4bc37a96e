"""Registration of PromptPAR as a parbench method: build, recipe (the reference's) and parameter groups."""

from __future__ import annotations

from pathlib import Path

from parbench.api import PROMPT_TUNING, MethodSpec, ParbenchError
from promptpar.checkpoint import is_reference_checkpoint
from promptpar.config import PromptParConfig
from promptpar.model import PromptPAR


def texts_for(card, cfg: PromptParConfig) -> list[str]:
    """The reference tokenises its own strings (phrases for RAPv1, quirky WIDER sentences)."""
    return card.reference_texts() if cfg.resolved().variant == "reference" else [a.positive for a in card.attributes]


def build(backbone, card, options: PromptParConfig | None = None) -> PromptPAR:
    cfg = (options or PromptParConfig()).resolved()
    model = PromptPAR(backbone, card.attribute_names, texts_for(card, cfg), cfg)
    if not cfg.use_mm_former:
        return model
    if cfg.vit_b_weights:
        from parbench.api import load_weights_only

        path = Path(cfg.vit_b_weights)
        if not path.is_file():
            raise ParbenchError(path, "the ViT-B/16 checkpoint for the fusion block", "no such file")
        state = load_weights_only(path, "the ViT-B/16 checkpoint for the fusion block (a state dict)")
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
    """A reference checkpoint -> (Built, what was inferred). Options the tensors fix are read off their shapes;
    the ones they cannot fix take the README's training command (then --set); every weight comes from the file,
    and its CLIP is OpenAI's code, so QuickGELU."""
    from dataclasses import asdict

    from parbench.api import build_model, resolve_config
    from promptpar.checkpoint import import_reference, infer_backbone, infer_options

    if not is_reference_checkpoint(obj):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ParbenchError(source, "a PromptPAR checkpoint ('model_state_dict' + 'clip_model')", str(found))
    read = infer_options(obj, source)
    name = infer_backbone(obj, source, backbone)
    defaults = {k: v for k, v in README_DEFAULTS.items() if k not in read and read.get("use_div")}
    cfg, options = resolve_config(SPEC, {**read, **defaults, "fusion_init": "random", **overrides})
    built = build_model(SPEC, card, cfg, options, name, "none", 0, quick_gelu=True)  # every weight: the file's
    import_reference(built.model, card, obj, source)
    taken = asdict(options)
    inferred = {
        "read_off_tensors": read,
        "defaults": {k: taken[k] for k in (*defaults, "fusion_heads", "ag_threshold") if k not in overrides},
        "overrides": overrides,
        "backbone": name,
        "activation": built.backbone.activation,
        "preprocess": asdict(built.preprocess),
    }
    return built, inferred


# What the tensors cannot tell, taken from the reference README's training command
# (`--use_textprompt --use_div --use_vismask --use_GL --use_mm_former`); the parser's own default is off.
# use_vismask only acts together with use_div (without regions there is nothing to mask, there as here).
README_DEFAULTS = {"use_vismask": True}


SPEC = MethodSpec(
    name="promptpar",
    description="PromptPAR: CLIP with region-aware visual/text prompts, ViT-B fusion block, per-attribute heads",
    build=build,
    recipe={**PROMPT_TUNING, "aux_loss_weight": 0.5},  # the reference's, and 0.5 x the GL loss
    options=PromptParConfig,
    import_checkpoint=import_checkpoint,
    accepts_checkpoint=is_reference_checkpoint,
    meta_overrides={"fusion_init": "random"},  # counting needs no ViT-B/16 weights file
    # an unseen attribute: its own sentence's text features; the seen attributes' mean text prompts, head and BNs
    open_vocabulary={
        "axes": {"prompt_text_deep": 2, "agg_bn.*": 0, "fusion.bn.*": 0},
        "lists": ["fusion.weight_layer"],
    },
)
