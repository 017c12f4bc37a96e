"""Code from outside parbench: methods and readers named by reference, or provided by installed packages.

A reference is `package.module:ATTR` (an importable module) or `path/to/file.py:ATTR` (a file, imported under a
private module name). Installed distributions provide names through entry-point groups (`parbench.methods`,
`parbench.readers`, `parbench.cards`), discovered once per process.

Every object from outside carries an *origin*, which becomes part of a run's identity, so an edited plugin never
reuses an old result: a distribution's name and version plus the content hash of its module's source files; a
file's content hash, and that of the modules beside it that it imports (a file's folder is on the import path
while it loads, as `python file.py` would have it); an importable module outside any distribution, the hash of
its source files.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from parbench.errors import ParbenchError

BUILT_IN = {"kind": "built-in"}
GROUPS = ("parbench.methods", "parbench.readers", "parbench.cards")


def is_reference(name: str) -> bool:
    """`module:ATTR` or `file.py:ATTR` (a Windows drive letter alone is not a module)."""
    head, sep, attr = name.rpartition(":")
    return bool(sep and head and attr and attr.isidentifier() and not (len(head) == 1 and head.isalpha()))


def _sources_sha256(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _module_files(module: Any) -> list[Path]:
    """The source files a module's behaviour comes from: its top-level package's .py files (or the module file)."""
    top = sys.modules.get(module.__name__.split(".")[0], module)
    if getattr(top, "__path__", None):  # a package: every .py below it
        return sorted(p for base in top.__path__ for p in Path(base).rglob("*.py"))
    path = getattr(module, "__file__", None)
    return [Path(path)] if path else []


def _distribution_of(module_name: str) -> tuple[str, str] | None:
    top = module_name.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top)
    if not names:
        return None
    dist = importlib.metadata.distribution(names[0])
    return dist.metadata["Name"], dist.version


def module_origin(module: Any) -> dict:
    """Where an imported module's code comes from (see the module docstring)."""
    files = _module_files(module)
    origin: dict[str, Any] = {"kind": "module", "module": module.__name__}
    dist = _distribution_of(module.__name__)
    if dist:
        origin = {"kind": "distribution", "distribution": dist[0], "version": dist[1], "module": module.__name__}
    if files:
        origin["sha256"] = _sources_sha256(files)
    return origin


def _local_module(folder: Path, name: str) -> list[Path]:
    """The source files of top-level module `name` when it lives in `folder` (a module file or a package)."""
    if (folder / f"{name}.py").is_file():
        return [folder / f"{name}.py"]
    if (folder / name / "__init__.py").is_file():
        return sorted((folder / name).rglob("*.py"))
    return []


def _imported_names(path: Path) -> set[str]:
    """Top-level module names a source file imports anywhere in it (inside functions too: a lazy import counts)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def local_sources(path: Path) -> list[Path]:
    """The files beside a plugin file that decide its behaviour: the modules of its folder it imports, followed
    import by import, plus any module already loaded from that folder (an import by importlib)."""
    folder = path.parent
    found: dict[Path, None] = {}
    todo = [path]
    while todo:
        for name in sorted(_imported_names(todo.pop())):
            for f in _local_module(folder, name):
                if f != path and f not in found:
                    found[f] = None
                    todo.append(f)
    for module in list(sys.modules.values()):
        f = getattr(module, "__file__", None)
        # absolute paths only: a module with a relative __file__ (frozen, or imported from "") is not beside the file
        if not f or not Path(f).is_absolute() or Path(f).suffix != ".py":
            continue
        f = Path(f).resolve()
        if f.parent == folder and f != path and f.is_file():
            found.setdefault(f, None)
    return sorted(found)


def _import_file(path: Path, what: str, ref: str) -> tuple[Any, str]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    name = f"parbench_plugin_{path.stem}_{digest[:12]}"
    if name in sys.modules:
        return sys.modules[name], digest
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ParbenchError(ref, f"a Python file defining the {what}", "a file Python cannot import")
    # the file's folder goes on the import path, as `python file.py` puts it, so helpers beside it import (now,
    # and lazily later, inside its functions)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module, digest


def load_reference(ref: str, what: str, base: Path | None = None) -> tuple[Any, dict]:
    """(object, origin) named by `module:ATTR` or `file.py:ATTR` (a relative file is looked up under `base`
    first, e.g. a suite file's folder). Any failure is one error naming the reference."""
    head, _, attr = ref.rpartition(":")
    try:
        if head.endswith(".py"):
            path = Path(head).expanduser()
            if not path.is_absolute() and base is not None and (base / path).is_file():
                path = base / path
            if not path.is_file():
                raise ParbenchError(ref, f"a Python file defining the {what}", f"no such file {path}")
            module, digest = _import_file(path.resolve(), what, ref)
            origin = {"kind": "file", "file": path.name, "sha256": digest}
            local = local_sources(path.resolve())
            if local:  # helpers beside the file: editing one is another run too
                origin["local_modules"] = [str(f.relative_to(path.resolve().parent)) for f in local]
                origin["local_sha256"] = _sources_sha256(local)
        else:
            module = importlib.import_module(head)
            origin = module_origin(module)
    except ParbenchError:
        raise
    except (Exception, SystemExit) as e:  # the plugin's own import failed: name it, keep the cause for --debug
        raise ParbenchError(f"{what} plugin {ref}", "a module that imports", f"{type(e).__name__}: {e}") from e
    if not hasattr(module, attr):
        public = sorted(n for n in vars(module) if not n.startswith("_"))[:8]
        raise ParbenchError(f"{what} plugin {ref}", f"a name '{attr}' in {head}", f"names {public}")
    return getattr(module, attr), origin


def entry_points(group: str) -> list[tuple[str, str, dict]]:
    """(name, "module:attr", origin) for each entry point of `group` in the installed distributions. Discovered
    once per state of the import path: reading every distribution's metadata costs milliseconds, and a 10,000-run
    suite asks for it per run; installing or removing a package changes a folder's mtime, so it is seen."""
    stamp = []
    for entry in sys.path:
        try:
            stamp.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            stamp.append((entry, None))
    return [(name, value, dict(origin)) for name, value, origin in _entry_points(group, tuple(stamp))]


@functools.lru_cache(maxsize=64)
def _entry_points(group: str, stamp: tuple) -> tuple[tuple[str, str, dict], ...]:
    out = []
    for ep in importlib.metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        origin = {
            "kind": "distribution",
            "distribution": dist.metadata["Name"] if dist else "?",
            "version": dist.version if dist else "?",
        }
        out.append((ep.name, ep.value, origin))
    return tuple(sorted(out))


def entry_point_dirs(group: str) -> list[Path]:
    """Folders that installed distributions provide through `group` (the entry point's value names a package;
    its folder is the one meant), without importing the package."""
    out = []
    for _, value, _ in entry_points(group):
        spec = importlib.util.find_spec(value.split(":")[0])
        if spec is not None and spec.submodule_search_locations:
            out.append(Path(next(iter(spec.submodule_search_locations))))
        elif spec is not None and spec.origin:
            out.append(Path(spec.origin).parent)
    return out


def describe_origin(origin: dict) -> str:
    """One phrase for listings: "built-in", "my-pkg 1.2.0", "file my_method.py"."""
    kind = origin.get("kind")
    if kind == "distribution":
        return f"{origin['distribution']} {origin['version']}"
    if kind == "file":
        return f"file {origin['file']}"
    if kind == "module":
        return f"module {origin['module']}"
    return "built-in"
