"""Prompt sets: the sentences text-side methods (zero-shot CLIP, multimodal LLMs) decide attributes with.

`datasets/prompts/<card>.toml` (beside the card; or any file, `prompt_file`) names sets of templates. `card` is
always the card's own sentences and `ensemble` every set's together with the card's. A set's templates wrap each
of an attribute's sentences ("A pedestrian wearing a hat" -> "a photo of a pedestrian wearing a hat."), after its
word replacements (`replace`), with templates of its own per attribute group (`group_templates`); the file's
`[negatives]` give attributes with a natural opposite their negative sentences; a set's `attributes.<name>` its own
sentences. `options` is any object with `prompt_set` and `prompt_file` (a method's options dataclass).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from parbench.engine.config import load_config_file
from parbench.errors import ParbenchError


@dataclass(frozen=True)
class _Card:
    prompt_set: str = "card"
    prompt_file: str = ""


def prompt_file_for(card, options) -> Path | None:
    """--set prompt_file=F, else prompts/<card file's stem>.toml beside the card (shipped or a user's)."""
    if options.prompt_file:
        return Path(options.prompt_file)
    path = Path(card.path).parent / "prompts" / f"{Path(card.path).stem}.toml" if card.path else None
    return path if path is not None and path.is_file() else None


def in_template(text: str) -> str:
    """A card sentence inside a template: "A pedestrian ..." -> "a pedestrian ..." ("a photo of a pedestrian")."""
    return text[:1].lower() + text[1:] if text[:2] in ("A ", "An") else text


def _set_sentences(card, chosen: dict, negatives: dict, path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """One [[set]]: its templates (or per attribute group, `group_templates`) wrap each of an attribute's
    sentences, after the set's word replacements (`replace`); the file's `[negatives]` give attributes with a
    natural opposite their negative sentences; a set's `attributes.<name>` gives its own sentences."""
    templates = chosen.get("templates", ["{}"])
    by_group = chosen.get("group_templates", {})
    replace = chosen.get("replace", {})
    own = chosen.get("attributes", {})
    for t in (templates, *by_group.values()):
        if not isinstance(t, list) or not all(isinstance(x, str) and "{}" in x for x in t):
            raise ParbenchError(path, "templates: a list of strings each holding {}", repr(t))
    unknown = sorted((set(own) | set(negatives)) - set(card.attribute_names))
    if unknown:
        raise ParbenchError(path, f"per-attribute sentences for attributes of {card.name}", f"unknown {unknown}")

    def wrap(ts: list[str], sentences: list[str]) -> list[str]:
        out = []
        for t in ts:
            for x in sentences:
                for old, new in replace.items():
                    x = x.replace(old, new)
                out.append(t.format(in_template(x) if t != "{}" else x))
        return out

    pos, neg = [], []
    for a in card.attributes:
        ts = by_group.get(a.group, templates)
        p = own.get(a.name, {}).get("positive", [a.positive])
        n = own.get(a.name, {}).get("negative", negatives.get(a.name, [a.negative]))
        pos.append(wrap(ts, p))
        neg.append(wrap(ts, n))
    return pos, neg


def prompt_sets(card, options) -> tuple[Path | None, list[str]]:
    """(the prompt file, the names of its sets): what `prompt_set` may name, besides card and ensemble."""
    path = prompt_file_for(card, options)
    if path is None:
        return None, []
    return path, [str(s.get("name")) for s in load_config_file(path).get("set", []) if isinstance(s, dict)]


def sentences(card, options) -> tuple[list[list[str]], list[list[str]]]:
    """(positive, negative) sentence lists per attribute for the chosen prompt set: `card` (the card's own
    sentences), a set of the prompts file, or `ensemble` (every set's sentences and the card's, averaged)."""
    if options.prompt_set == "card":
        return [[a.positive] for a in card.attributes], [[a.negative] for a in card.attributes]
    path = prompt_file_for(card, options)
    if path is None:
        raise ParbenchError(
            f"prompt set '{options.prompt_set}'", f"a prompts file for {card.name} (--set prompt_file=F)", "none"
        )
    doc = load_config_file(path)
    negatives = doc.get("negatives", {})
    if not isinstance(negatives, dict) or not all(isinstance(v, list) for v in negatives.values()):
        raise ParbenchError(path, "[negatives]: attribute = a list of negative sentences", repr(negatives)[:80])
    sets = {s.get("name"): s for s in doc.get("set", []) if isinstance(s, dict)}
    if options.prompt_set == "ensemble":
        chosen = [_set_sentences(card, s, negatives, path) for s in sets.values()]
        chosen.append(sentences(card, _Card()))
        pos = [[x for c in chosen for x in c[0][k]] for k in range(card.num_attributes)]
        neg = [[x for c in chosen for x in c[1][k]] for k in range(card.num_attributes)]
        return pos, neg
    if options.prompt_set not in sets:
        raise ParbenchError(
            path,
            f"a [[set]] named '{options.prompt_set}' (sets: {', '.join(map(str, sets))}; or card, ensemble)",
            "none",
        )
    return _set_sentences(card, sets[options.prompt_set], negatives, path)


def prompt_sha256(card, options) -> str:
    """The content hash of the sentences a prompt set resolves to: what the record keeps, so two runs with the
    same numbers-deciding text share it whatever file it came from."""
    return hashlib.sha256(json.dumps(sentences(card, options)).encode()).hexdigest()


def prompt_identity(card, options) -> dict:
    """What a text-side run's identity holds of its prompts: the set and the content hash of its sentences (an
    edited prompts file is another run)."""
    return {"prompt_set": options.prompt_set, "prompt_sha256": prompt_sha256(card, options)}
