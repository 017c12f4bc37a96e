"""PromptPAR: reference parameter counts, token layout, mask, regions, gradients per variant."""

import pytest
import torch

from parbench.backbones import create_backbone
from parbench.cards import load_card
from parbench.info import method_info
from promptpar.config import PromptParConfig
from promptpar.layout import make_layout
from promptpar.method import build

REFERENCE_COUNTS = {
    "PETA": (438_114_737, 3_413_424),
    "PA100k": (437_858_948, 3_157_635),
    "RAPv1": (438_569_473, 3_868_160),
    "RAPv2": (438_654_736, 3_953_423),
    "RAP-ZS": (438_626_315, 3_925_002),
    "WIDER": (437_517_896, 2_816_583),
}


@pytest.mark.parametrize("dataset", list(REFERENCE_COUNTS))
def test_reference_parameter_counts(dataset):
    info = method_info("promptpar", "ViT-L-14", dataset, None, {"variant": "reference"})
    assert (info["total_params"], info["trainable_params"]) == REFERENCE_COUNTS[dataset]


def test_fixed_variant_freezes_fusion_norms():
    ref = method_info("promptpar", "ViT-L-14", "PETA", None, {"variant": "reference"})
    fixed = method_info("promptpar", "ViT-L-14", "PETA", None, {"variant": "fixed"})
    assert fixed["total_params"] == ref["total_params"]
    # norm1, norm2 and the final norm of the fusion block, and the 35 head biases in front of BatchNorm
    assert ref["trainable_params"] - fixed["trainable_params"] == 3 * 2 * 768 + 35


def test_layout_matches_reference_indices():
    lay = make_layout(16, 50, True, 4, 2, fixed=False)
    assert lay.length == 311 and lay.prefix == 55
    assert [lay.part_index(k) for k in range(1, 5)] == [11, 22, 33, 44]
    assert lay.prompt_positions()[:10] == list(range(1, 11)) and lay.prompt_positions()[10:12] == [12, 13]
    assert lay.region_rows == ((0, 5), (3, 9), (7, 13), (11, 16))
    assert [(r.start, r.stop - 1) for r in map(lay.region_tokens, range(1, 5))] == [
        (55, 134),
        (103, 198),
        (167, 262),
        (231, 310),
    ]
    assert make_layout(16, 50, True, 4, 2, fixed=True).region_rows == lay.region_rows


def test_mask_rows():
    m = make_layout(16, 50, True, 4, 2, fixed=False).mask()
    seen = lambda r: set(torch.nonzero(m[r]).flatten().tolist())
    assert seen(11) == set(range(11, 22)) | set(range(55, 135))
    assert seen(21) == seen(11)
    assert seen(54) == set(range(44, 55)) | set(range(231, 311))
    assert seen(0) == set(range(311)) and seen(5) == set(range(311)) and seen(200) == set(range(311))


def test_geometry_for_other_grids():
    lay = make_layout(12, 40, True, 3, 2, fixed=True)
    assert lay.region_rows == ((0, 5), (3, 9), (7, 12))
    from parbench.errors import ParbenchError

    with pytest.raises(ParbenchError, match="hard-codes"):
        make_layout(12, 40, True, 3, 2, fixed=False)
    # the reference on a 14-wide grid (ViT-B/16 at 224): its literal offsets 0/48/112/176 and row counts 4/5/5/4
    # times 14, clipped to the 196 patches -- spans that no longer follow rows, as its code builds them
    ref = make_layout(14, 50, True, 4, 2, fixed=False)
    assert ref.spans == ((0, 56), (48, 118), (112, 182), (176, 196))
    m = ref.mask()
    assert set(torch.nonzero(m[44]).flatten().tolist()) == set(range(44, 55)) | set(range(55 + 176, 55 + 196))


def _tiny(variant, **kw):
    torch.manual_seed(0)
    bb = create_backbone("parbench-tiny")
    return build(bb, load_card("synthetic"), PromptParConfig(variant=variant, fusion_dim=32, fusion_heads=2, **kw))


def _step(model):
    model.train()
    out = model(torch.randn(3, 3, 224, 224))
    y = torch.randint(0, 2, out["logits"].shape).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], y)
    loss = loss + 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(out["aux"][0], y)
    loss.backward()


def test_fixed_variant_every_trainable_gets_gradient_and_no_frozen_does():
    model = _tiny("fixed")
    _step(model)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n


def _reference_text_forward(model):
    """The reference's own text computation, written out here: the prompts appended after the 77 tokens at
    positions 77..79 of every layer, CLIP's causal mask enlarged to 80 x 80, EOT pooling. parbench skips the
    prompts in the reference variant; this is what it claims to be equal to."""
    from parbench.layers import block_forward

    c = model.clip
    tokens = model.tokens
    x = c.token_embedding(tokens) + c.positional_embedding  # (A, 77, W)
    n = model.prompt_text_deep.shape[1]
    L = x.shape[1] + n
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    for layer, blk in enumerate(c.transformer.resblocks):
        p = model.prompt_text_deep[layer].transpose(0, 1)  # (A, n, W)
        x = torch.cat([x[:, :77], p], dim=1)  # (A, 80, W)
        x = block_forward(blk, x, causal)
    x = c.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ c.text_projection


def test_reference_text_prompts_cannot_reach_the_pooled_token():
    model = _tiny("reference")
    with torch.no_grad():
        model.prompt_text_deep.normal_(0, 10.0)  # large prompts: any leak would show
    fed = _reference_text_forward(model)
    torch.testing.assert_close(model.encode_text(), fed, rtol=0, atol=1e-5)  # skipping them changes nothing
    fed.sum().backward()  # and fed as the reference feeds them, they get exactly zero gradient
    assert model.prompt_text_deep.grad is not None and model.prompt_text_deep.grad.abs().max() == 0
    fixed = _tiny("fixed")  # the fix puts them where EOT sees them: they change the features
    with torch.no_grad():
        before = fixed.encode_text()
        fixed.prompt_text_deep.normal_(0, 10.0)
        assert (fixed.encode_text() - before).abs().max() > 1e-3


def test_text_tower_cut_after_the_last_eot_equals_all_77_positions():
    """The fixed variant's text features, computed here over all 77 positions (prompts after SOT, the last n
    positions dropped, EOT shifted by n), equal parbench's, which stop after the longest sentence's EOT."""
    from parbench.layers import block_forward

    model = _tiny("fixed")
    with torch.no_grad():
        model.prompt_text_deep.normal_(0, 1.0)
        c, tokens, n = model.clip, model.tokens, model.prompt_text_deep.shape[1]
        x = c.token_embedding(tokens) + c.positional_embedding  # (A, 77, W)
        causal = torch.ones(77, 77, dtype=torch.bool).tril()
        for layer, blk in enumerate(c.transformer.resblocks):
            p = model.prompt_text_deep[layer].transpose(0, 1)
            x = torch.cat([x[:, :1], p, x[:, 1 if layer == 0 else 1 + n :]], dim=1)[:, :77]
            x = block_forward(blk, x, causal)
        full = c.ln_final(x)[torch.arange(x.shape[0]), (tokens.argmax(-1) + n).clamp(max=76)] @ c.text_projection
        assert int(tokens.argmax(-1).max()) + 1 + n < 40  # the cut is real: far fewer than 77 positions
        torch.testing.assert_close(model.encode_text(), full, rtol=0, atol=1e-5)


def test_reference_variant_trains_the_fusion_norms():
    model = _tiny("reference")
    _step(model)
    assert model.prompt_deep.grad.abs().sum() > 0
    assert model.fusion.blocks[0].norm1.weight.requires_grad  # the reference's substring rule


def test_reference_gl_uses_last_sample_for_the_batch():
    """Changing the part tokens of every sample but the last leaves the reference's GL output unchanged (its
    loop keeps the last sample's local term for the whole batch); the fixed variant's output moves."""
    torch.manual_seed(0)
    C = 16
    all_class = torch.randn(4, 5, C)
    other = all_class.clone()
    other[:3, 1:] = torch.randn(3, 4, C)  # parts of samples 0..2; the global token (index 0) unchanged
    text = torch.randn(6, C)
    for variant in ("reference", "fixed"):
        model = _tiny(variant)
        model.agg_bn = torch.nn.BatchNorm1d(6).eval()  # per-sample normalisation (running statistics)
        model.softmax_model.temperature.data.fill_(0.05)  # sharp: the local max/min terms matter
        with torch.no_grad():
            a, b = model.aggregate(all_class, text), model.aggregate(other, text)
        if variant == "reference":
            torch.testing.assert_close(a, b)
        else:
            assert (a[:3] - b[:3]).abs().max() > 1e-4 and torch.equal(a[3], b[3])


def test_eval_caches_text_features():
    model = _tiny("fixed")
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 224, 224))
        cache = model._text_cache
        model(torch.randn(2, 3, 224, 224))
    assert cache is not None and model._text_cache is cache
