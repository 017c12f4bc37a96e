"""The `vlm` method: multimodal LLMs from transformers, built offline from their config classes (tiny, random),
saved and loaded as real model folders; the prefix-cached scores equal the naive one-question-per-forward loop's."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from parbench.cards import load_card
from parbench.engine.build import build_model
from parbench.engine.config import resolve_config
from parbench.errors import ParbenchError
from parbench.methods import get_method


def _model(backbone: str, prompt_set: str = "card", card: str = "synthetic"):
    spec = get_method("vlm")
    cfg, options = resolve_config(spec, {"prompt_set": prompt_set}, card)
    return build_model(spec, load_card(card), cfg, options, backbone, None, 0).model


@pytest.mark.parametrize("backbone", ["hf:tiny-llava", "hf:tiny-smolvlm"])
@pytest.mark.parametrize("prompt_set", ["card", "ensemble"])
def test_prefix_cached_scores_equal_the_naive_loop(backbone, prompt_set):
    model = _model(backbone, prompt_set)
    x = torch.randn(3, 3, *model.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cached, naive = model.cached(x), model.naive(x)
    assert cached.shape == (3, model.question_ids.shape[0]) and torch.isfinite(cached).all()
    torch.testing.assert_close(cached, naive, rtol=1e-4, atol=1e-4)
    assert cached.std() > 0  # the images and questions change the answer: no constant
    if prompt_set == "ensemble":  # several questions per attribute, averaged into its logit
        assert model.question_ids.shape[0] > model.num_attributes
    out = model(x)["logits"]
    k = 0
    torch.testing.assert_close(out[:, k], cached[:, model.owner == k].mean(1))


def test_the_logit_is_log_p_yes_minus_log_p_no_of_the_next_token():
    model = _model("hf:tiny-llava")
    x = torch.randn(1, 3, *model.image_size, generator=torch.Generator().manual_seed(2))
    ids = torch.cat([model.prefix_ids, model.question_ids[:1, : int(model.question_len[0])]], dim=1)
    with torch.no_grad():
        lp = model.vlm(input_ids=ids, pixel_values=x).logits[0, -1].log_softmax(-1)
        got = model.cached(x)[0, 0]
    want = torch.logsumexp(lp[model.yes], 0) - torch.logsumexp(lp[model.no], 0)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert len(model.yes) >= 2  # "Yes" and "yes" are both one token of this tokenizer


def test_a_vlm_run_records_its_prompts_and_a_missing_folder_says_where(tmp_path):
    from parbench.engine.run import RunSpec, run

    over = {"limit": 8, "bootstrap": 0, "prompt_set": "photo"}
    rec = run(RunSpec("synthetic", "vlm", backbone="hf:tiny-smolvlm", overrides=over, out=str(tmp_path), quiet=True))
    assert (
        rec["identity"]["method_data"]["prompt_set"] == "photo"
        and len(rec["identity"]["method_data"]["prompt_sha256"]) == 64
    )
    assert rec["identity"]["weights"].startswith("hf:sha256:") and rec["flops_per_image"] is None
    with pytest.raises(ParbenchError, match=r"a transformers model folder .*no config.json in .*nowhere"):
        run(RunSpec("synthetic", "vlm", backbone=f"hf:{tmp_path / 'nowhere'}", overrides=over, out=str(tmp_path)))
