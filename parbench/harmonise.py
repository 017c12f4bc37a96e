"""Which attributes two datasets share: the mapping a cross-dataset evaluation scores on.

Two attributes are the same when one's exact name (case and spelling included) or any of its card `aliases`
equals the other's. Nothing else pairs: not a case-folded name (Market-1501's `age-adult` is not UPAR's
`Age-Adult`: UPAR files Market's teenagers under Age-Adult), not a similar spelling. The aliases are the harmonised
vocabulary (`datasets/harmonised/vocabulary.toml`: UPAR's 40 names where the meaning is UPAR's, names in their style for
attributes UPAR lacks, each with its definition); a card says where its aliases come from (`aliases_source`). An
alias "~Name" marks a negation (PETA's personalMale is ~Gender-Female), so a model trained on one scores the other
as 1 - p. A pair is either declared or dropped, and the mapping (with what was dropped on each side) goes into the
cross record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parbench.cards import Card
from parbench.errors import ParbenchError


@dataclass(frozen=True)
class Pair:
    train: str  # the trained model's attribute (an output column)
    eval: str  # the evaluated dataset's attribute (a label column)
    via: str  # the shared name
    negated: bool = False  # the eval attribute is the train attribute's negation: score 1 - p


@dataclass(frozen=True)
class AttributeMap:
    train_dataset: str
    eval_dataset: str
    pairs: tuple[Pair, ...]
    dropped_train: tuple[str, ...] = field(default=())
    dropped_eval: tuple[str, ...] = field(default=())

    def columns(self, train: Card, eval: Card) -> tuple[list[int], list[int], list[bool]]:
        """(output columns, label columns, negated) in the order of the pairs."""
        ti = {n: i for i, n in enumerate(train.attribute_names)}
        ei = {n: i for i, n in enumerate(eval.attribute_names)}
        return [ti[p.train] for p in self.pairs], [ei[p.eval] for p in self.pairs], [p.negated for p in self.pairs]

    def as_dict(self) -> dict:
        return {
            "pairs": [[p.train, p.eval, p.via, p.negated] for p in self.pairs],
            "dropped_train": list(self.dropped_train),
            "dropped_eval": list(self.dropped_eval),
        }


def vocabulary() -> dict[str, str]:
    """The harmonised terms and their definitions (`datasets/harmonised/vocabulary.toml`)."""
    import tomllib

    from parbench.cards import cards_dir

    path = cards_dir() / "harmonised" / "vocabulary.toml"
    try:
        return dict(tomllib.loads(path.read_text())["terms"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        raise ParbenchError(path, "the harmonised vocabulary: a [terms] table of name = definition", str(e)) from None


def names_of(card: Card) -> dict[str, dict[str, bool]]:
    """Attribute -> {name it answers to, exactly as spelt: negated?}."""
    out: dict[str, dict[str, bool]] = {}
    for a in card.attributes:
        keys = {a.name: False}
        for alias in a.aliases:
            keys[alias.removeprefix("~")] = alias.startswith("~")
        out[a.name] = keys
    return out


def match_attributes(train: Card, eval: Card) -> AttributeMap:
    """The pairs two cards declare shared, in the evaluated card's order. An attribute that would pair with two
    on the other side is an error naming the card to fix: a mapping is one-to-one or it is not a mapping."""
    tnames, enames = names_of(train), names_of(eval)
    pairs: list[Pair] = []
    used: dict[str, str] = {}
    for e, ekeys in enames.items():
        hits = []
        for t, tkeys in tnames.items():
            shared = sorted(set(tkeys) & set(ekeys))
            if shared:
                via = shared[0]
                hits.append(Pair(t, e, via, tkeys[via] != ekeys[via]))
        if len(hits) > 1:
            raise ParbenchError(
                train.path or train.name,
                f"one attribute answering to {eval.name}'s '{e}'",
                f"{len(hits)}: {', '.join(h.train for h in hits)}",
            )
        if hits:
            if hits[0].train in used:
                raise ParbenchError(
                    eval.path or eval.name,
                    f"one attribute answering to {train.name}'s '{hits[0].train}'",
                    f"'{used[hits[0].train]}' and '{e}'",
                )
            used[hits[0].train] = e
            pairs.append(hits[0])
    return AttributeMap(
        train.name,
        eval.name,
        tuple(pairs),
        tuple(n for n in train.attribute_names if n not in used),
        tuple(n for n in eval.attribute_names if n not in {p.eval for p in pairs}),
    )
