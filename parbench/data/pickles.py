"""A restricted unpickler for the index and annotation pickles the PAR references publish.

`dataset_zs_run0.pkl` (Rethinking_of_PAR), `dataset_all.pkl` and PromptPAR's `pad.pkl` are pickles of
EasyDicts holding lists, numpy arrays and ranges. Loading a pickle can run any function it names, so only
the constructors such files need are admitted; anything else is refused before it runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from parbench.errors import ParbenchError


class AttrDict(dict):
    """Stands in for easydict.EasyDict: a dict whose keys are also attributes (no easydict dependency)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setstate__(self, state: dict) -> None:
        self.update(state)


_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_BUILTINS = {"range": range, "list": list, "dict": dict, "tuple": tuple, "set": set, "slice": slice}
_LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1")


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stands in for `_codecs.encode`, which pickle protocol 2 (torch.save's default) uses to carry raw bytes
    (numpy array data, numpy scalars) as latin-1 text. Only that use is admitted: other codecs are refused,
    so a pickle cannot reach any codec machinery through it."""
    if not isinstance(text, str) or str(encoding).lower() not in _LATIN1:
        raise ParbenchError(None, "latin-1 encoded bytes in a protocol-2 pickle", f"_codecs.encode(..., {encoding!r})")
    return text.encode("latin-1", errors="strict")


_TORCH = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"), ("torch", "Size")}


class _Restricted(pickle.Unpickler):
    allow_torch = False

    def __init__(self, file: io.BufferedIOBase, source: Path, **kwargs: Any):
        super().__init__(file, encoding=kwargs.get("encoding", "latin1"))
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if self.allow_torch and (module, name) in _TORCH:
            import importlib

            return getattr(importlib.import_module(module), name)
        if self.allow_torch and module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "easydict" and name == "EasyDict":
            return AttrDict
        if module == "collections" and name == "OrderedDict":
            return dict
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if module == "builtins" and name in _BUILTINS:
            return _BUILTINS[name]
        if (module, name) in _NUMPY:
            mod = np._core if module.startswith("numpy._core") and hasattr(np, "_core") else np.core
            if name in ("ndarray", "dtype"):
                return getattr(np, name)
            sub = "multiarray" if "multiarray" in module else "numeric"
            return getattr(getattr(mod, sub), name)
        raise ParbenchError(
            self.source,
            "a pickle of plain data (dicts, lists, numpy arrays, EasyDict)",
            f"a reference to {module}.{name}, refused before it could run",
        )


def load_pickle(path: str | Path) -> Any:
    """A pickle of plain data (dicts, lists, numpy arrays, EasyDict) through the restricted unpickler: anything
    that would call a function is refused before it runs."""
    path = Path(path)
    if not path.is_file():
        raise ParbenchError(path, "an existing pickle file", "no such file")
    with path.open("rb") as f:
        try:
            return _Restricted(f, path).load()
        except ParbenchError:
            raise
        except Exception as e:  # corrupt or truncated file: one clear message, not a traceback
            raise ParbenchError(path, "a readable pickle", f"{type(e).__name__}: {e}") from None


def load_torch(path: str | Path) -> Any:
    """torch.load through the same restriction, plus tensor rebuilding: for training checkpoints that hold
    EasyDicts next to their tensors (PromptPAR's `result`), which torch's weights_only loader refuses."""
    import types

    import torch

    path = Path(path)
    if not path.is_file():
        raise ParbenchError(path, "an existing checkpoint file", "no such file")

    class Unpickler(_Restricted):
        allow_torch = True

        def __init__(self, file: io.BufferedIOBase, **kwargs: Any):
            super().__init__(file, path, **kwargs)

    module = types.ModuleType("parbench_restricted_pickle")
    module.Unpickler = Unpickler
    module.load = lambda f, **kw: Unpickler(f, **kw).load()
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=module)
    except ParbenchError:
        raise
    except Exception as e:
        from parbench.torchfile import unreadable

        raise ParbenchError(path, "a torch checkpoint", unreadable(path, e)) from None


def get(obj: Any, key: str, source: Path) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ParbenchError(source, f"a key '{key}'", f"keys {found}")
    return obj[key]


def first_if_list(value: Any) -> np.ndarray:
    """The references take element [0] when a partition holds a list of 5 (partition 0)."""
    if isinstance(value, list | tuple):
        value = value[0]
    return np.asarray(value, dtype=np.int64).reshape(-1)
