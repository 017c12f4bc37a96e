"""What a run is: `RunSpec` (what the user asked for) and its identity (what decides its numbers).

A run's identity is its *resolved* configuration and its data: dataset card, the content of the annotation
files (and of a reference pickle or split file), partition, method, backbone, the weights' content (a tag, a
file's sha256, or random weights with their seed), every resolved setting and the seed. Two runs with the same
identity are the same run (a finished one is not redone); two that differ in anything but the seed are never
averaged into one leaderboard row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parbench.errors import ParbenchError

if TYPE_CHECKING:
    from parbench.data.dataset import PARDataset


@dataclass
class RunSpec:
    dataset: str
    method: str
    backbone: str | None = None
    pretrained: str | None = None
    seed: int = 0
    root: str | None = None
    partition: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)  # --config file, then --set
    out: str = "runs"
    resume: bool = False
    store: str | None = None
    quiet: bool = False
    source: str | None = None  # a reference pickle (dataset_all.pkl / pad.pkl) instead of the original files
    split_file: str | None = None  # a split from `parbench datasets zs-split` instead of the dataset's own
    # after the run, score the selected model on these datasets' test splits over the shared attributes (one
    # cross record each, `engine.cross`); not part of the identity: the training run is the same run
    eval_on: list[str] = field(default_factory=list)
    eval_roots: dict[str, str] = field(default_factory=dict)  # dataset name -> its root, where not configured
    # after the run, the robustness track (`parbench.robust`): a RobustPlan's fields; not part of the identity
    robust: dict | None = None

    def __post_init__(self) -> None:
        """A card file or a method file named relative to here is kept as an absolute path, so the run's saved
        config finds it again from anywhere (eval, predict, a suite's jobs)."""
        if self.dataset.endswith(".toml") and Path(self.dataset).is_file():
            self.dataset = str(Path(self.dataset).resolve())
        head, sep, attr = self.method.rpartition(":")
        if sep and head.endswith(".py") and Path(head).is_file():
            self.method = f"{Path(head).resolve()}:{attr}"

    def identity(self) -> dict[str, Any]:
        """Everything that decides this run's numbers (see the module docstring)."""
        from parbench.backbones import resolve_pretrained
        from parbench.cards import load_card
        from parbench.engine.config import identity_settings, resolve_config
        from parbench.methods import get_method

        method = get_method(self.method)
        card = load_card(self.dataset)
        cfg, options = resolve_config(method, self.overrides, card.name)
        backbone = self.backbone or method.default_backbone
        ident = {
            "dataset": card.name,
            "card_sha256": card.identity_sha256,
            "data_sha256": data_fingerprint(card, self.root),
            "partition": self.partition,
            "method": method.name,
            "backbone": backbone,
            "weights": weights_identity(backbone, resolve_pretrained(backbone, self.pretrained)),
            "train": identity_settings(cfg),
            "options": asdict(options) if options is not None else None,
            "seed": self.seed,
        }
        if not method.builtin:  # a plugin's distribution and version, or its source's content: edits are new runs
            ident["method_origin"] = method.origin
        files = method.data_files(card, options) if method.data_files else []
        if files:  # a method's own data (VTB's phrases): an edited file is another run
            from parbench.hashing import file_sha256

            ident["method_files"] = {Path(f).name: file_sha256(f) for f in files}
        if cfg.heldout_attributes:  # the names it resolves to: a card's split edited is another run
            from parbench.engine.open_vocab import heldout_names

            ident["heldout"] = heldout_names(card, cfg.heldout_attributes)
        if method.identity_data is not None:  # content beyond files (a prompt set's sentences): edits are new runs
            ident["method_data"] = method.identity_data(card, options)
        for name, path in (("source", self.source), ("split_file", self.split_file)):
            if path:
                if not Path(path).is_file():
                    raise ParbenchError(path, f"an existing {name.replace('_', ' ')}", "no such file")
                from parbench.hashing import file_sha256

                ident[f"{name}_sha256"] = file_sha256(path)
        return ident

    def key(self) -> str:
        return identity_key(self.identity())


def load_data(spec: RunSpec, card) -> PARDataset:
    """The data a run reads: its dataset (or reference pickle) at its root and partition, under its split file."""
    from parbench.data import load_dataset

    ds = load_dataset(card.path or card.name, spec.root, partition=spec.partition, source=spec.source)
    if spec.split_file:
        from parbench.data.audit import apply_split_file

        ds = apply_split_file(ds, spec.split_file)
    return ds


def identity_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def group_key(identity: dict) -> str:
    """The identity without the seed: runs with equal group keys are seeds of one configuration."""
    return identity_key({k: v for k, v in identity.items() if k != "seed"})


def data_fingerprint(card, root: str | Path | None) -> str:
    """sha256 over the content of the dataset's annotation files under its resolved root."""
    from parbench.data.prepared import resolve_root
    from parbench.hashing import files_sha256

    base = resolve_root(card, root)
    return files_sha256([base / f for f in card.source_files])


def weights_identity(backbone: str, pretrained: str) -> str:
    """A tag as is; a weights file by content; the tiny synthetic weights by their recipe; random as 'none'
    (the run's seed, part of the identity, draws them)."""
    if pretrained == "synthetic":
        from parbench.backbones.tiny import TinyPretrainSpec

        return f"synthetic:{TinyPretrainSpec().key()}"
    from parbench.backbones.hf_vlm import folder_of, folder_sha256, is_hf
    from parbench.backbones.keymaps import keymap_sha, split

    if is_hf(backbone) and pretrained == "local" and folder_of(backbone).is_dir():  # the folder's content
        return f"hf:sha256:{folder_sha256(folder_of(backbone))}"
    keymap, path = split(pretrained)
    if keymap and Path(path).is_file():  # another project's layout: the map and the file both decide
        from parbench.hashing import file_sha256

        return f"{keymap}:{keymap_sha(keymap)}:sha256:{file_sha256(path)}"
    if pretrained != "none" and Path(pretrained).is_file():
        from parbench.hashing import file_sha256

        return f"sha256:{file_sha256(pretrained)}"
    return pretrained
