"""`--pretrained synthetic`: the tiny backbone's CLIP-style pretraining on disjoint synthetic data."""

import torch

from parbench.backbones import create_backbone
from parbench.backbones.tiny import PHRASES, TinyPretrainSpec, ensure_weights, pretrain

SMALL = TinyPretrainSpec(identities=8, images_per_identity=2, epochs=2, batch_size=8, data_seed=77)


def test_pretraining_is_deterministic_and_loads_as_a_checkpoint_file():
    a, b = pretrain(SMALL), pretrain(SMALL)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert len(a["history"]) == 2 and all(0 <= h["pair_acc"] <= 1 for h in a["history"])
    path = ensure_weights(SMALL)
    assert path.is_file() and ensure_weights(SMALL) == path  # cached: the second call trains nothing
    bb = create_backbone("parbench-tiny", str(path))
    assert torch.equal(bb.model.visual.conv1.weight, a["state_dict"]["visual.conv1.weight"])
    assert bb.pretrained == str(path)


def test_captions_never_use_the_cards_sentences():
    from parbench.cards import load_card

    card_text = {s.lower() for a in load_card("synthetic").attributes for s in (a.positive, a.negative)}
    phrases = {p for pos, neg in PHRASES.values() for p in (*pos, *neg)}
    assert not phrases & card_text and not {f"a pedestrian: {p}" for p in phrases} & card_text
    assert set(PHRASES) == {a.name for a in load_card("synthetic").attributes}


def test_zeroshot_text_bank_is_keyed_by_weights_content_and_seed(tmp_path):
    import shutil

    from baselines.zeroshot import ZeroShotOptions, cached_text_bank, sentences, text_bank
    from parbench.cards import load_card

    card = load_card("synthetic")
    path = tmp_path / "w.pt"
    shutil.copy(ensure_weights(SMALL), path)
    bb = create_backbone("parbench-tiny", str(path))
    first = cached_text_bank(bb, card)
    assert torch.equal(cached_text_bank(bb, card), first)  # read back from disk
    assert torch.allclose(first, text_bank(bb.model, bb.tokenizer, *sentences(card, ZeroShotOptions())))
    # the same path, other content: a new bank, not the stale one
    other = pretrain(TinyPretrainSpec(identities=8, images_per_identity=2, epochs=1, batch_size=8, data_seed=78))
    torch.save({"state_dict": other["state_dict"]}, path)
    bb2 = create_backbone("parbench-tiny", str(path))
    assert torch.allclose(
        cached_text_bank(bb2, card), text_bank(bb2.model, bb2.tokenizer, *sentences(card, ZeroShotOptions()))
    )
    assert not torch.allclose(cached_text_bank(bb2, card), first)
    # random weights: each seed its own bank (seed 1 after seed 0 never reuses seed 0's)
    r0, r1 = (create_backbone("parbench-tiny", "none", seed=s) for s in (0, 1))
    b0, b1 = cached_text_bank(r0, card), cached_text_bank(r1, card)
    assert torch.allclose(
        b1, text_bank(r1.model, r1.tokenizer, *sentences(card, ZeroShotOptions()))
    ) and not torch.allclose(b0, b1)


def test_short_text_encoding_equals_open_clips():
    from parbench.backbones.tiny import encode_text_short

    bb = create_backbone("parbench-tiny", "none")
    tokens = bb.tokenizer(["a pedestrian: has a hat on", "a pedestrian: no glasses, short sleeves, a woman"])
    with torch.no_grad():
        torch.testing.assert_close(encode_text_short(bb.model, tokens), bb.model.encode_text(tokens))
