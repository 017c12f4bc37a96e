"""Tiny random chat VLMs for tests, benchmarks and the demo: `hf:tiny-llava` and `hf:tiny-smolvlm` are folders
written once into parbench's cache, exactly as `save_pretrained` writes a real model (config, safetensors weights,
processor with tokenizer, image processor and chat template), built from transformers' own config classes with
random weights from a fixed seed; nothing is downloaded. The tokenizer is a word-level one of our own over the
words PAR questions use (anything else is <unk>): the models are random, what they exercise is the loading,
prompting and scoring path of real ones.
"""

from __future__ import annotations

from pathlib import Path

WORDS = [
    "a",
    "an",
    "the",
    "is",
    "are",
    "this",
    "that",
    "of",
    "in",
    "on",
    "with",
    "without",
    "wearing",
    "carrying",
    "holding",
    "person",
    "pedestrian",
    "man",
    "woman",
    "photo",
    "image",
    "picture",
    "does",
    "do",
    "shown",
    "show",
    "yes",
    "no",
    "Yes",
    "No",
    "answer",
    "question",
    "or",
    "and",
    "not",
    "who",
    "whose",
    "upper",
    "lower",
    "body",
    "clothing",
    "wear",
    "hat",
    "glasses",
    "sunglasses",
    "long",
    "short",
    "hair",
    "sleeves",
    "sleeve",
    "skirt",
    "dress",
    "shorts",
    "trousers",
    "jeans",
    "pants",
    "dark",
    "light",
    "black",
    "white",
    "red",
    "blue",
    "green",
    "backpack",
    "bag",
    "handbag",
    "shoulder",
    "plastic",
    "shoes",
    "boots",
    "male",
    "female",
    "old",
    "young",
    "elderly",
    "child",
    "adult",
    "age",
    "gender",
    "jacket",
    "coat",
    "shirt",
    "t-shirt",
    "logo",
    "stripe",
    "plaid",
    "formal",
    "casual",
    "?",
    ".",
    ",",
]
TINY = {"tiny-llava": "llava", "tiny-smolvlm": "idefics3"}
SIZE = 32  # image side: 4 x 4 patches of 8 pixels


def is_tiny(name: str) -> bool:
    return name in TINY


def folder(name: str) -> Path:
    """The tiny model's folder, written on first use (the same bytes every time: a fixed seed)."""
    from parbench.settings import cache_dir

    path = cache_dir() / "vlm" / f"{name}-v1"
    if not (path / "config.json").is_file():
        _write(name, path)
    return path


def _tokenizer(specials: list[str]):
    import transformers as t
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *specials, *dict.fromkeys(WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace("?", " ?")
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = t.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.add_special_tokens({"additional_special_tokens": specials})
    return fast, vocab


def _write(name: str, path: Path) -> None:
    import tempfile

    import torch
    import transformers as t

    t.utils.logging.disable_progress_bar()
    kind = TINY[name]
    text = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=SIZE, patch_size=8
    )
    if kind == "llava":
        tok, vocab = _tokenizer(["<image>"])
        template = (
            "{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
            "{% else %}{{ c['text'] }}{% endif %}{% endfor %} ASSISTANT:{% endfor %}"
        )
        cfg = t.LlavaConfig(
            vision_config=t.CLIPVisionConfig(**vision),
            text_config=t.LlamaConfig(**text, vocab_size=len(vocab) + 1, pad_token_id=0),
            image_token_index=vocab["<image>"],
            image_seq_length=(SIZE // 8) ** 2,
            vision_feature_layer=-1,
        )
        torch.manual_seed(0)
        model = t.LlavaForConditionalGeneration(cfg)
        ip = t.CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
        proc = t.LlavaProcessor(
            image_processor=ip,
            tokenizer=tok,
            patch_size=8,
            num_additional_image_tokens=1,
            vision_feature_select_strategy="default",
            chat_template=template,
        )
    else:
        specials = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
        tok, vocab = _tokenizer(specials)
        template = (
            "{% for m in messages %}User:{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
            "{% else %} {{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance> Assistant:{% endfor %}"
        )
        cfg = t.Idefics3Config(
            vision_config=t.Idefics3VisionConfig(**vision),
            text_config=t.LlamaConfig(**text, vocab_size=len(vocab) + 1, pad_token_id=0),
            image_token_id=vocab["<image>"],
            scale_factor=2,
        )
        torch.manual_seed(0)
        model = t.Idefics3ForConditionalGeneration(cfg)
        ip = t.Idefics3ImageProcessor(
            do_image_splitting=False, size={"longest_edge": SIZE}, max_image_size={"longest_edge": SIZE}
        )
        proc = t.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=template)
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))  # written whole, then moved into place
    try:
        model.save_pretrained(tmp)
        proc.save_pretrained(tmp)
        tmp.rename(path)
    except OSError:
        if not (path / "config.json").is_file():  # another process won the race: theirs is the same model
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
