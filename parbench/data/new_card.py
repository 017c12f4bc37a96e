"""`parbench datasets new NAME --from annotations.csv`: a starting card for a dataset in the table format.

The draft takes its attributes from the table's header (every column whose values are all 1 / 0 / empty, in the
file's order), counts the splits, and writes each attribute's positive ratio on the training split beside it.
Groups and sentences are placeholders to edit: the sentences are what zero-shot CLIP and PromptPAR's text
prompts read, so they are worth a minute each.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from parbench.data.readers.table import MISSING, OPTIONS, VALUES, read_rows
from parbench.errors import ParbenchError

_NOT_ATTRIBUTES = {OPTIONS["path_column"], OPTIONS["split_column"], OPTIONS["identity_column"], *OPTIONS["box_columns"]}


def _binary(values: list) -> bool:
    return all(v is None or isinstance(v, bool) or str(v).strip().lower() in (*MISSING, *VALUES) for v in values)


def _q(text: str) -> str:
    return json.dumps(text)  # a TOML basic string is a JSON string


def draft_card(name: str, table: str | Path, card_path: str | Path) -> str:
    """The TOML text of a starting card for `table`, to be saved at `card_path` (its `root` points from there
    to the table's folder)."""
    table, card_path = Path(table), Path(card_path)
    header, rows = read_rows(table)
    if OPTIONS["path_column"] not in header:
        raise ParbenchError(table, f"an image path column '{OPTIONS['path_column']}'", f"columns {header[:8]}")
    if not rows:
        raise ParbenchError(table, "at least one row", "none")
    splits = Counter(str(r.get(OPTIONS["split_column"], "") or "").strip() for _, r in rows)
    if "" in splits:
        raise ParbenchError(
            table,
            f"a '{OPTIONS['split_column']}' column naming each row's split (train / val / test)",
            f"{splits['']} rows without one",
        )
    candidates = [c for c in header if c not in _NOT_ATTRIBUTES]
    attributes = [c for c in candidates if _binary([r.get(c) for _, r in rows])]
    skipped = [c for c in candidates if c not in attributes]
    if not attributes:
        raise ParbenchError(table, "attribute columns of 1 / 0 / empty values", f"none among {candidates[:8]}")
    train = [r for _, r in rows if str(r.get(OPTIONS["split_column"])).strip() == "train"] or [r for _, r in rows]
    root = os.path.relpath(table.resolve().parent, card_path.resolve().parent)
    lines = [
        f"# Dataset card drafted by `parbench datasets new` from {table.name}: edit the groups and sentences.",
        f"name = {_q(name)}",
        "version = 1",
        'reader = "table"',
        f"description = {_q(f'{name}: {len(rows)} images, {len(attributes)} attributes (from {table.name})')}",
        f"source_files = [{_q(table.name)}]",
        f"root = {_q(root)}  # the dataset folder, relative to this card; image paths are relative to it",
        f"select_split = {_q('val' if 'val' in splits else 'last')}",
        "",
        "[splits]",
        *(f"{_q(s)} = {n}" for s, n in sorted(splits.items())),
        "",
    ]
    if skipped:
        lines += [f"# columns that are not 1 / 0 / empty, left out: {', '.join(skipped)}", ""]
    for a in attributes:
        values = [VALUES.get(str(r.get(a, "")).strip().lower()) for r in train]
        known = [v for v in values if v is not None]
        ratio = sum(known) / len(known) if known else 0.0
        lines += [
            "[[attributes]]",
            f"name = {_q(a)}  # positive ratio {ratio:.3f} on {'train' if 'train' in splits else 'all rows'}"
            f", {len(values) - len(known)} unspecified",
            'group = "attribute"  # e.g. head, upper, lower, shoes, attachments, age, gender, action',
            f"positive = {_q(f'a pedestrian with {a}.')}  # edit: what zero-shot and text prompts read",
            f"negative = {_q(f'a pedestrian without {a}.')}",
            "",
        ]
    return "\n".join(lines)


def write_draft_card(name: str, table: str | Path, out: str | Path | None = None, force: bool = False) -> Path:
    """Write the draft beside the table (or at `out`); an existing card is never overwritten unless `force`."""
    from parbench.atomic import write_text
    from parbench.cards import parse_card

    path = Path(out) if out else Path(table).parent / f"{name.lower().replace(' ', '_')}.toml"
    if path.exists() and not force:
        raise ParbenchError(path, "a new card file (--force to overwrite)", "an existing file")
    write_text(path, draft_card(name, table, path))
    parse_card(path)  # the draft is a valid card as written
    return path
