"""`vlm`: a multimodal LLM asked about each attribute, zero-shot (`--backbone hf:/path/to/model-folder`).

Each attribute becomes questions, one per positive sentence of the prompt set (`prompt_set`, the same sets as
zero-shot CLIP: `card`, a set of datasets/prompts/<card>.toml, or `ensemble`), through `question` ("Is this {}?
Answer yes or no." -> "Is this a pedestrian wearing a hat? ..."), in the model's own chat template, after the
image. Its logit is log P(yes) - log P(no) for the first answer token (the probabilities of "Yes"/"yes" and of
"No"/"no" summed over the spellings the tokenizer has as one token), averaged over the attribute's questions; its
probability, sigmoid of that, is P(yes) / (P(yes) + P(no)).

What makes it affordable: every question of an image shares the prefix [chat start, image, ...] up to the question.
The prefix is run once per image (all images of a batch at once), its key/value cache kept, and the questions run
as one batch on copies of that cache (`cache_prefix = true`), rather than image + prefix + question again for each
of the K questions (`cache_prefix = false`, the naive loop; both give the same scores, tested). Supported
architectures: LLaVA-style (`llava`, image as pixel_values (B, 3, H, W)) and Idefics3 / SmolVLM (pixel_values
(B, 1, 3, H, W) with a pixel mask, image splitting off): whatever the installed transformers loads of those.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from parbench.api import MethodSpec, ParbenchError, freeze, in_template, prompt_identity, sentences

ARCHITECTURES = ("llava", "idefics3", "smolvlm")


@dataclass(frozen=True)
class VLMOptions:
    prompt_set: str = "card"  # "card", a set of the prompts file, or "ensemble" (as zero-shot CLIP's)
    prompt_file: str = ""  # a prompts TOML; "" = datasets/prompts/<card>.toml when it exists
    question: str = "Is this {}? Answer yes or no."  # {} = a sentence, lower-cased article ("a pedestrian ...")
    answer_yes: str = "Yes"
    answer_no: str = "No"
    cache_prefix: bool = True  # the image + prefix once per image, questions batched on its cache
    question_batch: int = 256  # question rows per forward on the cached prefix (memory bound)

    RANGES: ClassVar[dict] = {"question_batch": (1, None)}


def _answer_ids(tokenizer, word: str) -> list[int]:
    """Token ids of the answer's spellings that are one token each ("Yes", " Yes", "yes", " yes")."""
    ids = []
    for w in dict.fromkeys([word, " " + word, word.lower(), " " + word.lower()]):
        got = tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(got) == 1 and got[0] != tokenizer.unk_token_id and got[0] not in ids:
            ids.append(got[0])
    if not ids:
        raise ParbenchError("vlm answer", f"'{word}' as one token of the model's tokenizer", "none of its spellings")
    return ids


class VLM(nn.Module):
    def __init__(self, backbone, card, options: VLMOptions):
        super().__init__()
        self.vlm = freeze(backbone.model)
        self.num_attributes = card.num_attributes
        self.options = options
        processor = backbone.tokenizer
        model_type = getattr(self.vlm.config, "model_type", "?")
        if model_type not in ARCHITECTURES:
            raise ParbenchError(f"vlm on {backbone.name}", f"a model of {', '.join(ARCHITECTURES)}", model_type)
        self.model_type = model_type
        self.image_size = tuple(backbone.preprocess.size)
        pos, _ = sentences(card, options)
        questions, owner = [], []
        for k, group in enumerate(pos):
            for s in group:
                questions.append(options.question.format(in_template(s)))
                owner.append(k)
        prefix, suffix = self._template(processor)
        tok = processor.tokenizer
        device = next(self.vlm.parameters()).device  # the meta device when only counting
        with torch.device("cpu"):  # token ids are data, made here whatever device the model is built on
            prefix_ids = self._prefix_ids(processor, prefix)
            q_ids = [tok(" " + q + suffix, add_special_tokens=False)["input_ids"] for q in questions]
            ids = torch.full((len(q_ids), max(map(len, q_ids))), tok.pad_token_id or 0, dtype=torch.long)
            for i, q in enumerate(q_ids):
                ids[i, : len(q)] = torch.tensor(q)
            owner_t = torch.tensor(owner)
            counts = torch.bincount(owner_t, minlength=self.num_attributes).clamp(min=1).float()
        self.register_buffer("prefix_ids", prefix_ids.to(device), persistent=False)  # (1, L)
        self.register_buffer("question_ids", ids.to(device), persistent=False)  # (Q, T), right-padded
        self.register_buffer("question_len", torch.tensor([len(q) for q in q_ids]).to(device), persistent=False)
        self.register_buffer("owner", owner_t.to(device), persistent=False)  # (Q,) attribute of each question
        self.register_buffer("per_attribute", counts.to(device), persistent=False)  # (K,) questions each
        self.yes, self.no = _answer_ids(tok, options.answer_yes), _answer_ids(tok, options.answer_no)
        params = inspect.signature(self.vlm.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers renamed it in 5.x

    @staticmethod
    def _template(processor) -> tuple[str, str]:
        """(text before the question, text after it): the model's chat template around one image and a question,
        with the generation prompt (the assistant's turn starts next)."""
        marker = "PARBENCHQUESTION"
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": marker}]}]
        try:
            text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except (ValueError, AttributeError) as e:
            raise ParbenchError("vlm", "a processor with a chat template", f"{type(e).__name__}: {e}") from None
        before, _, after = text.partition(marker)
        return before.rstrip(), after

    def _prefix_ids(self, processor, prefix: str) -> torch.Tensor:
        """The prefix's token ids with the image placeholder expanded as the processor expands it for an image of
        the model's input size (the same for every image: one size)."""
        from PIL import Image

        blank = Image.new("RGB", (self.image_size[1], self.image_size[0]))
        images = [[blank]] if self.model_type != "llava" else [blank]
        return processor(text=[prefix], images=images, return_tensors="pt")["input_ids"]

    def _pixels(self, images: torch.Tensor) -> dict:
        if self.model_type == "llava":
            return {"pixel_values": images}
        b, _, h, w = images.shape  # Idefics3 / SmolVLM: one (unsplit) image per sample, all of it valid
        return {
            "pixel_values": images[:, None],
            "pixel_attention_mask": torch.ones(b, 1, h, w, dtype=torch.bool, device=images.device),
        }

    def _yes_no(self, logits: torch.Tensor) -> torch.Tensor:
        """log P(yes) - log P(no) from next-token logits (N, V)."""
        lp = logits.float().log_softmax(-1)
        return torch.logsumexp(lp[:, self.yes], -1) - torch.logsumexp(lp[:, self.no], -1)

    def _per_attribute(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, Q) question scores -> (B, K) attribute logits: the mean over each attribute's questions."""
        out = torch.zeros(scores.shape[0], self.num_attributes, device=scores.device)
        out.index_add_(1, self.owner, scores)
        return out / self.per_attribute

    def naive(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Q): every question with its own forward over image + prefix + question."""
        rows = []
        for b in range(images.shape[0]):
            pix = self._pixels(images[b : b + 1])
            row = []
            for q, n in zip(self.question_ids, self.question_len.tolist(), strict=True):
                ids = torch.cat([self.prefix_ids, q[None, :n]], dim=1)  # (1, L + n)
                row.append(self._yes_no(self.vlm(input_ids=ids, **pix).logits[:, -1]))
            rows.append(torch.cat(row))
        return torch.stack(rows)

    def cached(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Q): the prefix once for the batch, then every question on copies of its cache, batched."""
        b = images.shape[0]
        prefix = self.prefix_ids.expand(b, -1)  # (B, L)
        out = self.vlm(input_ids=prefix, use_cache=True, **self._pixels(images))
        cache = out.cache if self.cache_kw == "cache" else out.past_key_values  # the name of the version installed
        q, t = self.question_ids.shape
        length = prefix.shape[1]
        rows = torch.arange(b * q, device=images.device)  # (image, question) pairs, image-major
        out = torch.empty(b * q, device=images.device)
        for lo in range(0, b * q, self.options.question_batch):
            part = rows[lo : lo + self.options.question_batch]
            img, qi = part // q, part % q
            c = _select(cache, img)  # each row's image's prefix cache
            mask = torch.cat(
                [
                    torch.ones(len(part), length, dtype=torch.long, device=images.device),
                    (torch.arange(t, device=images.device)[None] < self.question_len[qi, None]).long(),
                ],
                dim=1,
            )
            logits = self.vlm(
                input_ids=self.question_ids[qi],
                attention_mask=mask,
                cache_position=torch.arange(length, length + t, device=images.device),
                **{self.cache_kw: c},
            ).logits  # (n, T, V)
            out[lo : lo + len(part)] = self._yes_no(logits[torch.arange(len(part)), self.question_len[qi] - 1])
        return out.view(b, q)

    def forward(self, images: torch.Tensor) -> dict:
        scores = self.cached(images) if self.options.cache_prefix else self.naive(images)
        return {"logits": self._per_attribute(scores)}  # (B, K)


def _select(cache, rows: torch.Tensor):
    """A new key/value cache whose row i is row rows[i] of `cache` (a view in the autograd graph, so an attack's
    gradient reaches the pixels through it; a deepcopy would refuse non-leaf tensors)."""
    from transformers import DynamicCache

    layers = (
        [(layer.keys, layer.values) for layer in cache.layers]
        if hasattr(cache, "layers")
        else list(zip(cache.key_cache, cache.value_cache, strict=True))  # transformers 4.x
    )
    out = DynamicCache()
    for i, (k, v) in enumerate(layers):
        out.update(k[rows], v[rows], i)  # (n, heads, L, d)
    return out


def build(backbone, card, options: VLMOptions | None = None) -> VLM:
    return VLM(backbone, card, options or VLMOptions())


def identity_data(card, options: VLMOptions) -> dict:
    return {**prompt_identity(card, options), "question": options.question}


SPEC = MethodSpec(
    name="vlm",
    description="a multimodal LLM asked yes/no per attribute (P(yes) vs P(no)), the image's prefix cached",
    build=build,
    recipe={"epochs": 0},
    options=VLMOptions,
    trains=False,
    default_backbone="hf:tiny-llava",
    backbones=("hf",),
    identity_data=identity_data,
    open_vocabulary={},  # nothing trains: every attribute is its own question
    meta_forward=False,  # transformers checks the image tokens with .item(): no FLOPs counted on meta
)
