"""Dataset cards: one TOML file per dataset in `datasets/`, parsed into frozen dataclasses.

A card says what a dataset is (evaluated attributes in evaluation order, groups, sentences, splits, source
files, reader, published results); readers and methods take every dataset fact from here. An unknown key,
a missing key or a wrong type is an error naming the file and the key.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from parbench.errors import ParbenchError
from parbench.registry import natural_key


@dataclass(frozen=True)
class Attribute:
    name: str  # name as spelt in the original files (typos kept: "Femal", "action-Pusing")
    group: str  # head, upper, lower, shoes, attachments, age, gender, body, role, action, ...
    positive: str  # sentence for "attribute present" (PromptPAR's where it has one)
    negative: str  # sentence for "attribute absent" (ours), used by zero-shot CLIP
    raw: int = -1  # column in the original label matrix (reader-specific meaning; -1 = none)
    reference_text: str = ""  # what the reference code tokenises when it differs from `positive`
    # other names of the same attribute, for cross-dataset evaluation: the harmonised vocabulary (UPAR's 40 names,
    # and names in their style for attributes UPAR lacks); "~Name" marks the attribute as Name's negation
    # (PETA's personalMale is ~Gender-Female). Not part of a run's identity: a cross record keeps its own mapping.
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Published:
    method: str
    source: str
    protocol: str  # "promptpar", "rethinking" or "unknown"
    ma: float | None = None
    acc: float | None = None
    prec: float | None = None
    rec: float | None = None
    f1: float | None = None
    backbone: str = ""
    note: str = ""


@dataclass(frozen=True)
class Card:
    name: str
    version: int
    reader: str
    description: str
    attributes: tuple[Attribute, ...]
    splits: dict[str, int]  # expected split sizes (partition 0)
    source_files: tuple[str, ...]
    images: str = ""  # image folder relative to the dataset root
    partitions: int = 1
    raw_order: tuple[str, ...] = ()  # attribute names in the file's own order, where references use it
    reader_options: dict[str, Any] = field(default_factory=dict)
    published: tuple[Published, ...] = ()
    citation: str = ""
    # where the attributes' `aliases` come from: the authors' definitions that justify each pairing (and why an
    # attribute that looks alike has none); required by the shipped cards' test wherever an alias is declared
    aliases_source: str = ""
    # named subsets of the attributes, for held-out-attribute runs (`--set heldout_attributes=@NAME`); a run's
    # identity holds the names it resolved to, so these are not part of the card's
    attribute_splits: dict[str, list[str]] = field(default_factory=dict)
    select_split: str = "val"  # split that selects the model; "last" where a dataset has none
    train_split: str = "train"
    test_split: str = "test"
    root: str = ""  # the dataset folder relative to the card file (a card kept beside its data), when none is set
    path: str = ""
    sha256: str = ""  # of the file's bytes
    # of what decides a run's numbers: the card without its published rows, citation, description and aliases
    # (editing those is not another run)
    identity_sha256: str = ""

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]

    @property
    def num_attributes(self) -> int:
        return len(self.attributes)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for a in self.attributes:
            out.setdefault(a.group, []).append(a.name)
        return out

    def reference_texts(self) -> list[str]:
        return [a.reference_text or a.positive for a in self.attributes]


def cards_dir() -> Path:
    """The shipped cards: the source checkout's datasets/ folder, else the installed package data."""
    here = Path(__file__).resolve().parent.parent / "datasets"
    if here.is_dir():
        return here
    import importlib.resources

    return Path(str(importlib.resources.files("parbench_cards")))


def _build(cls: type, data: dict, path: Path, where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ParbenchError(path, f"keys of {where} among {', '.join(sorted(known))}", f"unknown {unknown}")
    try:
        return cls(**data)
    except TypeError as e:
        raise ParbenchError(path, f"a complete {where}", str(e)) from None


_NOT_IDENTITY = ("published", "citation", "description", "aliases_source", "attribute_splits", "path", "sha256")


def _identity_sha256(data: dict) -> str:
    import json
    from dataclasses import asdict

    kept = {k: v for k, v in data.items() if k not in _NOT_IDENTITY}
    kept["attributes"] = [{k: v for k, v in asdict(a).items() if k != "aliases"} for a in data["attributes"]]
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=list).encode()).hexdigest()


def parse_card(path: Path) -> Card:
    raw_bytes = path.read_bytes()
    try:
        data = tomllib.loads(raw_bytes.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ParbenchError(path, "a valid TOML dataset card", str(e)) from None
    data = dict(data)
    attrs = data.pop("attributes", None)
    if not attrs:
        raise ParbenchError(path, "an [[attributes]] array", "none")
    for a in attrs:
        if "aliases" in a:
            if not isinstance(a["aliases"], list) or not all(isinstance(x, str) and x.strip("~") for x in a["aliases"]):
                raise ParbenchError(path, "aliases: a list of attribute names", repr(a["aliases"]))
            a["aliases"] = tuple(a["aliases"])
    data["attributes"] = tuple(_build(Attribute, a, path, "[[attributes]]") for a in attrs)
    data["published"] = tuple(_build(Published, p, path, "[[published]]") for p in data.pop("published", []))
    data["source_files"] = tuple(data.pop("source_files", ()))
    data["raw_order"] = tuple(data.get("raw_order", ()))
    data["path"] = str(path)
    data["sha256"] = hashlib.sha256(raw_bytes).hexdigest()
    data["identity_sha256"] = _identity_sha256(data)
    card = _build(Card, data, path, "a card")
    names = card.attribute_names
    if len(set(names)) != len(names):
        raise ParbenchError(path, "unique attribute names", "duplicates")
    if not isinstance(card.splits, dict) or not all(isinstance(v, int) for v in card.splits.values()):
        raise ParbenchError(path, "[splits] mapping split names to integer sizes", repr(card.splits))
    return card


def search_dirs() -> tuple[Path, ...]:
    """Where cards are looked up by name, in order: the shipped cards, PARBENCH_CARDS, the config's [cards] dirs,
    then the folders installed distributions provide (entry-point group `parbench.cards`: a package whose folder
    holds cards)."""
    from parbench.plugins import entry_point_dirs
    from parbench.settings import card_dirs

    return (cards_dir(), *card_dirs(), *entry_point_dirs("parbench.cards"))


def _card_paths(dirs: tuple[Path, ...]) -> dict[str, Path]:
    """Dataset name (lower case) -> card file; a name taken by an earlier folder is skipped with a warning.
    Read again when a folder changes (a card added, removed or renamed)."""
    for folder in dirs:
        if not folder.is_dir():
            raise ParbenchError(folder, "a folder of dataset cards (PARBENCH_CARDS / [cards] dirs)", "no such folder")
    return _scan(tuple((d, d.stat().st_mtime_ns) for d in dirs))


@cache
def _scan(stamped: tuple[tuple[Path, int], ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder, _ in stamped:
        for p in sorted(folder.glob("*.toml")):
            try:
                name = tomllib.loads(p.read_text()).get("name", p.stem)
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
                raise ParbenchError(p, "a valid TOML dataset card", str(e)) from None
            if str(name).lower() in out:
                import sys

                print(f"warning: {p}: skipped, dataset '{name}' is already {out[str(name).lower()]}", file=sys.stderr)
                continue
            out[str(name).lower()] = p
    return out


def list_cards() -> list[str]:
    return sorted((parse_card(p).name for p in _card_paths(search_dirs()).values()), key=natural_key)


def load_card(name: str) -> Card:
    """Load a card by dataset name (case-insensitive; shipped, or in a card folder), or a card file by path.
    A card file edited in place is read again (the cache is keyed by its size and modification time)."""
    path = _card_path(name, search_dirs())
    st = path.stat()
    return _parse_cached(path, st.st_size, st.st_mtime_ns)


@cache
def _parse_cached(path: Path, size: int, mtime_ns: int) -> Card:
    return parse_card(path)


def _card_path(name: str, dirs: tuple[Path, ...]) -> Path:
    p = Path(name)
    if p.suffix == ".toml":
        if not p.is_file():
            raise ParbenchError(p, "a dataset card file", "no such file")
        return p.resolve()
    paths = _card_paths(dirs)
    key = name.lower()
    if key not in paths:
        import difflib

        close = difflib.get_close_matches(key, list(paths), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        available = ", ".join(sorted((parse_card(q).name for q in paths.values()), key=natural_key))
        raise ParbenchError(
            None, f"a registered dataset (available: {available}; or a card file path)", f"'{name}'.{hint}"
        )
    return paths[key]
