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
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, obj: Any = None) -> Any:
        """Register `obj` (or a lazy "module:attr" string) under `name`; usable as a decorator."""

        def _add(target: Any) -> Any:
            if name in self._entries:
                raise ParbenchError(None, f"{self.kind} '{name}' registered once", "a second registration")
            self._entries[name] = target
            return target

        if obj is None:
            return _add
        return _add(obj)

    def alias(self, old: str, new: str) -> None:
        """Keep an old name working after a rename (old suite files and stored runs still resolve)."""
        self._aliases[old] = new

    def names(self, pattern: str | None = None) -> list[str]:
        names = [n for n in self._entries if pattern is None or fnmatch.fnmatch(n, pattern)]
        return sorted(names, key=natural_key)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def get(self, name: str) -> Any:
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
            module, attr = entry.split(":", 1)
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry


def lazy(module: str, attr: str) -> str:
    return f"{module}:{attr}"


# A method entry resolves to a `parbench.methods.MethodSpec`; modules register themselves lazily below.
methods = Registry("method")
methods.register("linear-probe", lazy("baselines.linear_probe", "SPEC"))
methods.register("finetune", lazy("baselines.finetune", "SPEC"))
methods.register("zeroshot", lazy("baselines.zeroshot", "SPEC"))
methods.register("promptpar", lazy("promptpar.method", "SPEC"))
methods.register("lora", lazy("baselines.lora", "SPEC"))
methods.register("vpt-deep", lazy("baselines.vpt", "SPEC"))
methods.alias("linear_probe", "linear-probe")
methods.alias("zero-shot", "zeroshot")
methods.alias("vpt", "vpt-deep")

# A reader entry resolves to a function (card, root, **options) -> PARDataset.
readers = Registry("reader")
for _name, _attr in [
    ("peta_mat", "read_peta"),
    ("pa100k_mat", "read_pa100k"),
    ("rapv1_mat", "read_rapv1"),
    ("rapv2_mat", "read_rapv2"),
    ("wider_json", "read_wider"),
    ("synthetic_json", "read_synthetic"),
]:
    readers.register(_name, lazy("parbench.data.readers", _attr))
