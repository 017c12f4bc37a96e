"""Open-vocabulary attributes: train on some of a card's attributes, score all of them.

`--set heldout_attributes=a,b` (or `@NAME`, a split the card names in `attribute_splits`) holds attributes out of
training: the model is built and trained on the others alone (their labels, heads, prompts and sentences take no
part: a model with fewer attributes is what trains, and selection reads the seen columns only), then a model over
every attribute is built and filled from the trained one by what the method declares (`MethodSpec.open_vocabulary`):
a seen attribute's per-attribute tensors are copied, an unseen one's are the mean of the seen ones' (its head is
the average head; its own text or phrase, built from its sentence, is what tells it apart), everything else is
copied. The test split is scored over every attribute, and the record says mA on the seen and on the unseen ones
apart. A method with no text side has nothing that could tell an unseen attribute from a seen one, and refuses.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re

import numpy as np
import torch

from parbench.data.dataset import PARDataset
from parbench.errors import ParbenchError
from parbench.metrics import HEADLINE, PROTOCOLS, pedestrian_metrics


def heldout_names(card, value: str) -> list[str]:
    """The held-out attribute names in card order, from "a,b" or "@split" (the card's `attribute_splits`)."""
    if not value:
        return []
    if value.startswith("@"):
        split = value[1:]
        if split not in card.attribute_splits:
            named = ", ".join(card.attribute_splits) or "none"
            raise ParbenchError(card.path or card.name, f"an attribute split named '{split}' (splits: {named})", "none")
        names = list(card.attribute_splits[split])
    else:
        names = [x.strip() for x in value.split(",") if x.strip()]
    unknown = [n for n in names if n not in card.attribute_names]
    if unknown:
        raise ParbenchError("heldout_attributes", f"attributes of {card.name}", ", ".join(unknown))
    if len(set(names)) >= card.num_attributes:
        raise ParbenchError("heldout_attributes", f"some of {card.name}'s attributes left to train on", "all held out")
    return [a for a in card.attribute_names if a in set(names)]


def check_method(method, heldout: list[str]) -> None:
    if heldout and method.open_vocabulary is None:
        raise ParbenchError(
            f"method {method.name}",
            "a text side to score attributes it was not trained on (zeroshot, promptpar, vtb, vlm have one)",
            "none: heldout_attributes does not apply",
        )


def seen_view(card, ds: PARDataset, heldout: list[str]):
    """(the card and the dataset over the seen attributes only): what a held-out run trains and selects on."""
    keep = [i for i, a in enumerate(card.attribute_names) if a not in heldout]
    seen_card = dataclasses.replace(card, attributes=tuple(card.attributes[i] for i in keep))
    seen_ds = dataclasses.replace(ds, attributes=[ds.attributes[i] for i in keep], labels=ds.labels[:, keep])
    return seen_card, seen_ds, keep


def _matches(key: str, patterns) -> bool:
    return any(fnmatch.fnmatch(key, p) for p in patterns)


@torch.no_grad()
def expand(seen_model: torch.nn.Module, full_model: torch.nn.Module, seen: list[int], spec: dict) -> None:
    """Fill `full_model` (every attribute) from `seen_model` (trained on the attributes at `seen`), as the method
    declares: `axes` (pattern -> attribute axis) slices, `lists` (module lists, one entry per attribute), `keep`
    (tensors the full model built itself: its own text for every attribute). Anything else is copied, and must
    not depend on the attribute count."""
    src, dst = seen_model.state_dict(), full_model.state_dict()
    seen_set = set(seen)
    unseen = [i for i in range(full_model.num_attributes) if i not in seen_set]
    lists = [re.compile(rf"^{re.escape(p)}\.(\d+)\.(.+)$") for p in spec.get("lists", ())]
    out = {}
    for key, value in dst.items():
        if _matches(key, spec.get("keep", ())):
            out[key] = value
            continue
        hit = next((m for m in (r.match(key) for r in lists) if m), None)
        if hit is not None:  # one module per attribute: the seen one's, or the mean of every seen one's
            prefix, idx, rest = key[: hit.start(1) - 1], int(hit.group(1)), hit.group(2)
            if idx in seen:
                out[key] = src[f"{prefix}.{seen.index(idx)}.{rest}"]
            else:
                out[key] = (
                    torch.stack([src[f"{prefix}.{j}.{rest}"].float() for j in range(len(seen))]).mean(0).to(value.dtype)
                )
            continue
        axis = next((a for p, a in spec.get("axes", {}).items() if fnmatch.fnmatch(key, p)), None)
        if axis is not None and value.dim() > axis:
            t = src[key]
            new = value.clone()
            index = [slice(None)] * value.dim()
            index[axis] = seen
            new[tuple(index)] = t
            if unseen:
                index[axis] = unseen
                mean = t.float().mean(axis, keepdim=True).to(t.dtype)
                new[tuple(index)] = mean.expand_as(new[tuple(index)])
            out[key] = new
            continue
        if key not in src or src[key].shape != value.shape:
            raise ParbenchError(
                f"method {getattr(full_model, 'method_name', type(full_model).__name__)}",
                "an open_vocabulary declaration covering every tensor that depends on the attribute count",
                f"'{key}' ({tuple(value.shape)} over all attributes)",
            )
        out[key] = src[key]
    full_model.load_state_dict(out)


def scores(labels: np.ndarray, probs: np.ndarray, attributes: list[str], heldout: list[str], unspecified: str) -> dict:
    """The record's `open_vocabulary`: per protocol, headline metrics on the seen and on the unseen attributes."""
    unseen = [i for i, a in enumerate(attributes) if a in heldout]
    seen = [i for i in range(len(attributes)) if i not in unseen]
    out: dict = {"heldout": list(heldout), "seen": [attributes[i] for i in seen]}
    for proto in PROTOCOLS:
        out[proto] = {}
        for name, cols in (("seen", seen), ("unseen", unseen)):
            m = pedestrian_metrics(labels[:, cols], probs[:, cols], proto, unspecified=unspecified).headline()
            out[proto][name] = {k: m[k] for k in HEADLINE}
    return out
