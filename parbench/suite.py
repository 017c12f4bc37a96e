"""Suites: a grid of runs (datasets x methods x backbones x seeds) from one TOML file.

    name = "demo"
    datasets = ["synthetic", "synthetic-zs"]
    methods = ["linear-probe", "finetune", "zeroshot", "promptpar"]
    backbones = ["parbench-tiny"]
    pretrained = "none"
    seeds = [0, 1]
    [set]                      # overrides for every run
    epochs = 3
    [methods_set.promptpar]    # overrides for one method
    fusion_dim = 128
    [methods_set.strong-baseline]
    backbone = "timm:resnet50" # a method's own backbone (and pretrained) replaces the suite's for it
    pretrained = "tv_in1k"
    [eval_on]                  # cross-dataset: runs trained on a dataset are also scored on these
    synthetic = ["synthetic-zs"]
    [robust]                   # the robustness track for the runs it selects (datasets, seeds; default all)
    corruptions = ["gaussian_noise", "motion_blur"]
    severities = [1, 3]
    attacks = ["fgsm"]
    eps = ["4/255"]
    mce_baseline = "finetune"

Finished runs (same key in the store) are skipped, so a crashed suite continues where it stopped;
`shard = (k, n)` runs the k-th of n deterministic shares.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parbench.engine.config import load_config_file
from parbench.engine.run import RunSpec
from parbench.errors import ParbenchError

_KEYS = {
    "name",
    "datasets",
    "methods",
    "backbones",
    "pretrained",
    "seeds",
    "set",
    "methods_set",
    "store",
    "out",
    "roots",
    "groups",
    "partition",
    "slurm",
    "variants",
    "eval_on",
    "robust",
}


@dataclass
class Suite:
    name: str
    specs: list[RunSpec]
    store: str  # the suite's store; jobs of a launcher write their own under <out>/stores/
    source: str = ""
    out: str = "runs"  # the suite's folder: run folders, job stores, logs
    job_store: str | None = None  # a launcher job records its runs here instead of in `store`
    slurm: dict[str, Any] = field(default_factory=dict)  # the [slurm] table (see parbench/launch.py)


def _expand(values: list[str], groups: dict[str, list[str]]) -> list[str]:
    out = []
    for v in values:
        out += groups.get(v, [v])
    return out


def _relative_to(method: str, folder: Path) -> str:
    """A `file.py:ATTR` method named relative to the suite file (when the file is there) as an absolute path."""
    head, sep, attr = method.rpartition(":")
    if sep and head.endswith(".py") and not Path(head).is_absolute() and (folder / head).is_file():
        return f"{(folder / head).resolve()}:{attr}"
    return method


def _variants_of(method: str, variants: list[str], path: Path) -> list[str | None]:
    """The suite's `variants` for a method that has a `variant` option (each a run of its own), else [None]."""
    if not variants:
        return [None]
    from dataclasses import fields

    from parbench.methods import get_method

    spec = get_method(method, base=path.parent)
    if spec.options is None or "variant" not in {f.name for f in fields(spec.options)}:
        return [None]
    return list(variants)


def load_suite(path: str | Path, store: str | None = None, out: str | None = None) -> Suite:
    path = Path(path)
    doc = load_config_file(path)
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise ParbenchError(path, f"suite keys among {', '.join(sorted(_KEYS))}", f"unknown {unknown}")
    for key in ("datasets", "methods"):
        if not isinstance(doc.get(key), list) or not doc[key] or not all(isinstance(x, str) for x in doc[key]):
            raise ParbenchError(path, f"a non-empty list of names '{key}'", repr(doc.get(key)))
    seeds = doc.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
    ):
        raise ParbenchError(path, "seeds as a list of integers, e.g. seeds = [0, 1, 2]", repr(seeds))
    for key in ("set", "methods_set", "roots", "groups", "slurm", "eval_on", "robust"):
        if key in doc and not isinstance(doc[key], dict):
            raise ParbenchError(path, f"[{key}] as a table", repr(doc[key]))
    if not isinstance(doc.get("partition", 0), int):
        raise ParbenchError(path, "partition as an integer", repr(doc.get("partition")))
    groups = doc.get("groups", {})
    datasets = _expand(doc["datasets"], groups)
    backbones = doc.get("backbones", [None])
    pretrained = doc.get("pretrained")
    if isinstance(pretrained, list) and len(pretrained) != len(backbones):
        raise ParbenchError(path, f"pretrained: one value or one per backbone ({len(backbones)})", str(len(pretrained)))
    pre_list = pretrained if isinstance(pretrained, list) else [pretrained] * len(backbones)
    variants = doc.get("variants", [])
    if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
        raise ParbenchError(path, 'variants as a list of names, e.g. variants = ["fixed", "reference"]', repr(variants))
    roots = doc.get("roots", {})
    eval_on = doc.get("eval_on", {})
    from parbench.cards import load_card

    for ds, targets in eval_on.items():
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise ParbenchError(path, f'[eval_on] {ds} = a list of dataset names, e.g. ["PETA"]', repr(targets))
        for t in targets:  # a name that is no dataset fails now, naming the suite, not after the grid trained
            try:
                load_card(t)
            except ParbenchError as e:
                raise ParbenchError(path, f"[eval_on] {ds}: {e.expected}", e.found) from None
    robust, robust_datasets, robust_seeds = _robust_plan(doc.get("robust"), path)
    name = doc.get("name", path.stem)
    run_out = out or doc.get("out", f"runs/{name}")
    specs = []
    for ds in datasets:
        for method in doc["methods"]:
            own = dict(doc.get("methods_set", {}).get(method, {}))
            pairs = _method_backbones(own, method, list(zip(backbones, pre_list, strict=True)), path)
            method_seeds = own.pop("seeds", seeds)
            sweeps = _grid(own.pop("grid", {}), method, path)
            for (bb, pre), variant, sweep in (
                (p, v, g) for p in pairs for v in _variants_of(method, variants, path) for g in sweeps
            ):
                for seed in method_seeds:
                    overrides = {**doc.get("set", {}), **own, **sweep, **({"variant": variant} if variant else {})}
                    specs.append(
                        RunSpec(
                            dataset=ds,
                            method=_relative_to(method, path.parent),
                            backbone=bb,
                            pretrained=pre,
                            seed=int(seed),
                            root=roots.get(ds),
                            partition=int(doc.get("partition", 0)),
                            overrides=overrides,
                            out=run_out,
                            eval_on=list(eval_on.get(ds, [])),
                            eval_roots={t: roots[t] for t in eval_on.get(ds, []) if t in roots},
                            robust=robust
                            if robust is not None
                            and (robust_datasets is None or ds in robust_datasets)
                            and (robust_seeds is None or seed in robust_seeds)
                            else None,
                        )
                    )
    return Suite(
        name=name,
        specs=specs,
        store=store or doc.get("store", f"{run_out}/store.sqlite"),
        source=str(path),
        out=run_out,
        slurm=dict(doc.get("slurm", {})),
    )


def _method_backbones(own: dict, method: str, default: list, path: Path) -> list[tuple[str, str | None]]:
    """The (backbone, pretrained) pairs a method runs on: its own `backbone` (+ `pretrained`), its own
    `backbones` list of [name, pretrained] pairs (a foundation grid's towers), else the suite's."""
    if "pretrained" in own and "backbone" not in own:
        raise ParbenchError(path, f"[methods_set.{method}] pretrained together with its backbone", "no backbone")
    if "backbone" in own:
        return [(own.pop("backbone"), own.pop("pretrained", None))]
    if "backbones" in own:
        pairs = own.pop("backbones")
        if not isinstance(pairs, list) or not all(
            isinstance(x, list) and len(x) == 2 and all(isinstance(y, str) for y in x) for x in pairs
        ):
            raise ParbenchError(
                path,
                f'[methods_set.{method}] backbones = [["ViT-B-16", "openai"], ...] (name, pretrained)',
                repr(pairs),
            )
        return [(b, p) for b, p in pairs]
    return default


def _grid(table: dict, method: str, path: Path) -> list[dict]:
    """[methods_set.X.grid]: settings whose lists are swept, every combination a run (prompt sets)."""
    import itertools

    if not isinstance(table, dict) or not all(isinstance(v, list) and v for v in table.values()):
        raise ParbenchError(path, f"[methods_set.{method}.grid] setting = [values, ...]", repr(table))
    keys = sorted(table)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(table[k] for k in keys))] or [{}]


_ROBUST_KEYS = {"corruptions", "severities", "attacks", "eps", "steps", "mce_baseline", "limit", "datasets", "seeds"}


def _robust_plan(table: dict | None, path: Path) -> tuple[dict | None, set | None, set | None]:
    """The suite's [robust] table as RobustPlan fields (checked now, not after the grid has trained), and the
    datasets and seeds it is limited to (None: all)."""
    if table is None:
        return None, None, None
    unknown = sorted(set(table) - _ROBUST_KEYS)
    if unknown:
        raise ParbenchError(path, f"[robust] keys among {', '.join(sorted(_ROBUST_KEYS))}", f"unknown {unknown}")
    from parbench.robust.evaluate import RobustPlan, parse_eps

    fields = {k: v for k, v in table.items() if k not in ("datasets", "seeds")}
    for k in ("corruptions", "attacks", "severities"):
        if k in fields:
            fields[k] = tuple(fields[k])
    if "eps" in fields:
        fields["eps"] = tuple(parse_eps(e) for e in fields["eps"])
    try:
        plan = RobustPlan(**fields)  # validates names, severities and radii
    except ParbenchError as e:  # the command line's words ("--corruptions") are the table's keys here
        raise ParbenchError(path, f"[robust] {e.where.removeprefix('--')}: {e.expected}", e.found) from None
    except TypeError as e:
        raise ParbenchError(path, "[robust] values of the right kinds", str(e)) from None
    from dataclasses import asdict

    out = {k: v for k, v in asdict(plan).items() if k != "extra"}
    datasets = set(table["datasets"]) if "datasets" in table else None
    seeds = set(table["seeds"]) if "seeds" in table else None
    return out, datasets, seeds


def shard(specs: list[RunSpec], k: int, n: int, keys: dict[int, str] | None = None) -> list[RunSpec]:
    """The k-th (1-based) of n deterministic shares: round-robin over the sorted run keys (`keys`: id(spec) ->
    key, where the caller has them already)."""
    if not (n >= 1 and 1 <= k <= n):
        raise ParbenchError("--shard", "k/n with 1 <= k <= n", f"{k}/{n}")
    ordered = sorted(specs, key=lambda s: keys[id(s)] if keys else s.key())
    return [s for i, s in enumerate(ordered) if i % n == k - 1]


def job_stores(suite: Suite) -> list[Path]:
    """The stores that launcher jobs wrote (one per shard, under the suite's folder)."""
    return sorted((Path(suite.out) / "stores").glob("shard-*.sqlite"))


def done_keys(suite: Suite) -> set[str]:
    """Identities recorded in the suite's store or in any of its jobs' stores (finished or failed)."""
    from parbench.store import Store

    keys: set[str] = set()
    for path in dict.fromkeys([Path(suite.store), *job_stores(suite)]):
        if path.is_file():
            keys |= Store(path, create=False).keys()
    return keys


def _derived_done(suite: Suite, kind: str, what) -> dict[str, set[str]]:
    """Run key -> `what(record)` of each derived record of `kind` in the suite's stores (its own and its jobs')."""
    from parbench.store import Store

    out: dict[str, set[str]] = {}
    for path in dict.fromkeys([Path(suite.store), *job_stores(suite)]):
        if path.is_file():
            for r in Store(path, create=False).derived(kind):
                out.setdefault(r.get("run_key"), set()).add(what(r))
    return out


def cross_done(suite: Suite) -> dict[str, set[str]]:
    """Run key -> the datasets its cross records were scored on."""
    return _derived_done(suite, "cross", lambda r: r.get("evaluated_on"))


def robust_done(suite: Suite) -> dict[str, set[str]]:
    """Run key -> the perturbations its robustness records cover (as JSON, sorted keys)."""
    import json

    return _derived_done(suite, "robust", lambda r: json.dumps(r.get("perturbation"), sort_keys=True))


def pending(suite: Suite, specs: list[RunSpec], keys: dict[int, str] | None = None) -> list[RunSpec]:
    """Runs not yet recorded, and recorded runs still missing a cross score the suite asks for (a finished run
    is not trained again: its model is restored and scored). `keys`: id(spec) -> key, where already computed."""
    from parbench.cards import load_card

    done = done_keys(suite)
    cross = cross_done(suite) if any(s.eval_on for s in specs) else {}
    robust = robust_done(suite) if any(s.robust for s in specs) else {}
    out = []
    for s in specs:
        key = keys[id(s)] if keys else s.key()
        missing = {load_card(t).name for t in s.eval_on} - cross.get(key, set())
        if s.robust:
            from parbench.robust.evaluate import RobustPlan, perturbations

            missing |= set(perturbations(RobustPlan(**s.robust))) - robust.get(key, set())
        if key not in done or missing:
            out.append(s)
    return out


def estimate(suite: Suite, specs: list[RunSpec]) -> dict:
    """What running `specs` costs: runs, training images x epochs and test images, and the time that takes at the
    images/s measured by finished runs of the same method and backbone in the suite's store (median over them;
    "unknown" where none has finished). Sizes are the cards' split sizes (or `limit`)."""
    from parbench.cards import load_card
    from parbench.engine.config import resolve_config
    from parbench.methods import get_method

    speeds = _measured_speeds(suite)
    groups: dict[tuple[str, str], dict] = {}
    resolved: dict[tuple, tuple[int, int]] = {}
    for s in specs:
        method = get_method(s.method)
        backbone = s.backbone or method.default_backbone
        memo = (s.method, s.dataset, repr(sorted(s.overrides.items())))
        if memo not in resolved:
            card = load_card(s.dataset)
            cfg, _ = resolve_config(method, s.overrides, card.name)
            split = card.train_split if cfg.train_split == "auto" else cfg.train_split
            sizes = (
                card.splits
                if all(card.splits.get(x) for x in (split, card.test_split))
                else _sizes(card.path or card.name, s.root)
            )
            n_train, n_test = sizes.get(split, 0), sizes.get(card.test_split, 0)
            if cfg.limit:
                n_train, n_test = min(n_train, cfg.limit), min(n_test, cfg.limit)
            epochs = cfg.epochs if method.trains else 0
            resolved[memo] = (n_train * epochs, n_test)
        train_images, test_images = resolved[memo]
        g = groups.setdefault(
            (method.name, backbone),
            {"method": method.name, "backbone": backbone, "runs": 0, "train_images": 0, "test_images": 0},
        )
        g["runs"] += 1
        g["train_images"] += train_images
        g["test_images"] += test_images
    total_s, unknown = 0.0, []
    for (name, backbone), g in groups.items():
        speed = speeds.get((name, backbone))
        if speed is None or not speed[1] or (g["train_images"] and not speed[0]):
            g["seconds"] = None
            unknown.append(f"{name} on {backbone}")
            continue
        g["seconds"] = (g["train_images"] / speed[0] if g["train_images"] else 0.0) + g["test_images"] / speed[1]
        g["train_images_per_s"], g["eval_images_per_s"] = speed
        total_s += g["seconds"]
    return {
        "runs": len(specs),
        "train_images": sum(g["train_images"] for g in groups.values()),
        "test_images": sum(g["test_images"] for g in groups.values()),
        "seconds": None if unknown else total_s,
        "seconds_known": total_s,
        "unknown": unknown,
        "by_method": sorted(groups.values(), key=lambda g: (g["method"], g["backbone"])),
    }


@functools.cache
def _sizes(card: str, root: str | None) -> dict[str, int]:
    """Split sizes read off the dataset where its card states none (a generated or user dataset); {} if it
    cannot be read here (no root): the estimate then counts those images as 0."""
    from parbench.data import load_dataset

    try:
        ds = load_dataset(card, root)
    except ParbenchError:
        return {}
    return {name: int(ds.partition(name).size) for name in ds.splits}


def _measured_speeds(suite: Suite) -> dict[tuple[str, str], tuple[float, float]]:
    """(method, backbone) -> median (train, eval) images/s of the finished runs in the suite's stores."""
    import statistics

    from parbench.store import Store

    seen: dict[tuple[str, str], tuple[list, list]] = {}
    for path in dict.fromkeys([Path(suite.store), *job_stores(suite)]):
        if not path.is_file():
            continue
        for method, backbone, train, text in Store(path, create=False).speeds():
            t, e = seen.setdefault((method, backbone), ([], []))
            if train:
                t.append(train)
            if text:
                e.append(text)
    return {k: (statistics.median(t) if t else 0.0, statistics.median(e) if e else 0.0) for k, (t, e) in seen.items()}


def run_suite(suite: Suite, specs: list[RunSpec], quiet: bool = False, on_done=None) -> list[dict]:
    from parbench.engine.run import run

    records = []
    for spec in pending(suite, specs):
        # resume=True: an interrupted run (its last.pt) continues; a new one starts fresh
        spec.store, spec.quiet, spec.resume = suite.job_store or suite.store, quiet, True
        rec = run(spec)
        records.append(rec)
        if on_done:
            on_done(rec)
    return records
