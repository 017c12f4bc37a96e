"""Small name -> object registries (methods, readers, protocols).

Entries may be lazy "module:attr" strings so that listing never imports torch. Unknown names raise a
`ParbenchError` with close matches and the full list; registering a name twice is an error.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
from typing import Any

from parbench.errors import ParbenchError


def natural_key(text: str) -> list[Any]:
    """Sort key that orders 'rap2' after 'rap10' correctly: digits compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


class Registry:
    """Names -> objects, with where each came from. Built-in entries are registered here (lazily, as
    "module:attr" strings); an entry-point `group` adds those of installed distributions on first use."""

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group
        self._entries: dict[str, Any] = {}
        self._origins: dict[str, dict] = {}
        self._aliases: dict[str, str] = {}
        self._discovered = group is None

    def register(self, name: str, obj: Any = None, origin: dict | None = None) -> Any:
        """Register `obj` (or a lazy "module:attr" string) under `name`; usable as a decorator."""

        def _add(target: Any) -> Any:
            if name in self._entries:
                raise ParbenchError(None, f"{self.kind} '{name}' registered once", "a second registration")
            self._entries[name] = target
            self._origins[name] = origin or {"kind": "built-in"}
            return target

        if obj is None:
            return _add
        return _add(obj)

    def _discover(self) -> None:
        """The group's entry points, once: a name that is already taken is skipped with a warning (the
        built-in keeps it), never silently replaced."""
        if self._discovered:
            return
        self._discovered = True
        from parbench.plugins import entry_points

        for name, value, origin in entry_points(self.group):
            if name in self._entries or name in self._aliases:
                import sys

                print(
                    f"warning: {self.group} entry point '{name}' of {origin['distribution']} skipped: "
                    f"parbench already has a {self.kind} of that name",
                    file=sys.stderr,
                )
                continue
            self.register(name, value, origin)

    def alias(self, old: str, new: str) -> None:
        """Keep an old name working after a rename (old suite files and stored runs still resolve)."""
        self._aliases[old] = new

    def names(self, pattern: str | None = None) -> list[str]:
        self._discover()
        names = [n for n in self._entries if pattern is None or fnmatch.fnmatch(n, pattern)]
        return sorted(names, key=natural_key)

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._entries or name in self._aliases

    def origin(self, name: str) -> dict:
        """Where the entry comes from: {"kind": "built-in"}, or a distribution's name and version (and, once
        loaded, the hash of its module's source files)."""
        self._discover()
        return dict(self._origins[self._aliases.get(name, name)])

    def get(self, name: str) -> Any:
        self._discover()
        name = self._aliases.get(name, name)
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ParbenchError(
                None,
                f"a known {self.kind} (available: {', '.join(self.names())}).{hint}",
                f"'{name}'",
            )
        entry = self._entries[name]
        if isinstance(entry, str) and ":" in entry:
            if self._origins[name]["kind"] == "built-in":
                module, attr = entry.split(":", 1)
                entry = getattr(importlib.import_module(module), attr)
            else:  # a distribution's entry point: a failing import is an error naming the plugin
                from parbench.plugins import load_reference

                entry, loaded = load_reference(entry, self.kind)
                self._origins[name] = {**self._origins[name], **{k: v for k, v in loaded.items() if k == "sha256"}}
            self._entries[name] = entry
        return entry


def lazy(module: str, attr: str) -> str:
    return f"{module}:{attr}"


# A method entry resolves to a `parbench.methods.MethodSpec`; modules register themselves lazily below.
methods = Registry("method", group="parbench.methods")
methods.register("linear-probe", lazy("baselines.linear_probe", "SPEC"))
methods.register("finetune", lazy("baselines.finetune", "SPEC"))
methods.register("zeroshot", lazy("baselines.zeroshot", "SPEC"))
methods.register("promptpar", lazy("promptpar.method", "SPEC"))
methods.register("lora", lazy("baselines.lora", "SPEC"))
methods.register("vpt-deep", lazy("baselines.vpt", "SPEC"))
methods.register("strong-baseline", lazy("baselines.strong_baseline", "SPEC"))
methods.register("vtb", lazy("baselines.vtb", "SPEC"))
methods.register("vlm", lazy("baselines.vlm", "SPEC"))
methods.alias("linear_probe", "linear-probe")
methods.alias("zero-shot", "zeroshot")
methods.alias("vpt", "vpt-deep")

# A reader entry resolves to a function (card, root, **options) -> PARDataset.
readers = Registry("reader", group="parbench.readers")
for _name, _attr in [
    ("peta_mat", "read_peta"),
    ("pa100k_mat", "read_pa100k"),
    ("rapv1_mat", "read_rapv1"),
    ("rapv2_mat", "read_rapv2"),
    ("wider_json", "read_wider"),
    ("synthetic_json", "read_synthetic"),
]:
    readers.register(_name, lazy("parbench.data.readers", _attr))
readers.register("table", lazy("parbench.data.readers.table", "read_table"))
readers.register("msp60k_json", lazy("parbench.data.readers.msp60k", "read_msp60k"))
readers.register("upar_pkl", lazy("parbench.data.readers.upar", "read_upar"))
readers.register("upar_csv", lazy("parbench.data.readers.upar", "read_upar_csv"))
readers.register("reid_attributes_mat", lazy("parbench.data.readers.reid_attributes", "read_reid_attributes"))


def origin_of(obj: Any) -> dict:
    """Where a function's (or class's) code comes from: the origin of the module that defines it."""
    import sys

    from parbench.plugins import module_origin

    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    return module_origin(module) if module is not None else {"kind": "module", "module": "?"}


def register_reader(name: str):
    """Decorator: register a reader function `(card, root, partition=0) -> PARDataset` under `name`, the value
    of a card's `reader` key. Installed packages use the entry-point group `parbench.readers` instead."""

    def add(fn):
        readers.register(name, fn, origin=origin_of(fn))
        return fn

    return add
