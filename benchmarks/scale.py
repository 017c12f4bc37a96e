"""Paper scale: what every store-, suite- and data-level command costs as runs, shards, grids and images grow.

    python benchmarks/scale.py [--only report,list,export,merge,dry-run,prepare,cache] [--quick] [--json F]

Builds, in a temporary folder, stores and datasets of given sizes and times each command in a process of its own
(wall seconds and that process's peak resident memory), at three sizes, and prints the growth exponent (the slope
of log time against log size: 1 is linear):

- `report`: stores of 500 / 1,000 / 2,000 runs at the standard test sets' real shapes (PA100k 10,000 x 26, PETA
  7,600 x 35, RAPv1 8,317 x 51, RAPv2 16,985 x 54, PETA-ZS 3,933 x 35, RAP-ZS 4,928 x 53, WIDER 29,161 x 14),
  synthetic predictions, the run records' real structure (30-epoch histories, both protocols, per-attribute mA),
  their bootstrap draws stored as runs store them, one cross and one robustness record per run; also the 126-run
  field-baselines grid alone, and 500 runs on 100-image test sets (the cost must not depend on test size once
  draws are stored), and the first report of a store written before draws existed (draws computed once);
- `list`, `export`: `parbench runs list` and `runs export` of the same stores;
- `merge`: `parbench store merge` of 25 / 50 / 100 shard stores of 20 runs each (every row and blob counted
  after);
- `dry-run`: `parbench suite --dry-run` of 2,500 / 5,000 / 10,000-run grids;
- `prepare`: `parbench datasets prepare PA100k` on annotation files of 25,000 / 50,000 / 100,000 rows (1-pixel
  images: decoding is not what is measured);
- `cache`: `datasets prepare --images` filling the decoded-image cache, then every row read back, 500 / 1,000 /
  2,000 images.

Targets (2 cores): the 126-run grid reports in under 20 s and 2 GB; 2,000 runs in under 60 s, exponent <= 1.1;
merge of 100 x 20 runs under 30 s; prepare of 100,000 rows under 60 s and 1 GB.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

# (dataset, test images, attributes): the standard test splits' real shapes
TEST_SETS = [
    ("PA100k", 10000, 26),
    ("PETA", 7600, 35),
    ("RAPv1", 8317, 51),
    ("RAPv2", 16985, 54),
    ("PETA-ZS", 3933, 35),
    ("RAP-ZS", 4928, 53),
    ("WIDER", 29161, 14),
]
METHODS = ["promptpar", "strong-baseline", "vtb"]


# runs a module's or script's main in this process and reports this process's own peak memory on exit
_WRAP = """
import resource, runpy, sys
target, sys.argv = sys.argv[1], sys.argv[1:]
try:
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
    else:
        sys.argv[0] = target
        runpy.run_module(target, run_name="__main__", alter_sys=True)
finally:  # VmHWM: this address space's peak (ru_maxrss would carry the forking parent's over exec)
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")]
    kib = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("PEAK_KIB", kib, file=sys.stderr)
"""


def measure(args: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak resident MiB of that process, stdout) of `parbench ARGS` or `script.py ARGS`."""
    cmd = [sys.executable, "-c", _WRAP, *map(str, args)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    peak = next(int(x.split()[1]) for x in reversed(proc.stderr.splitlines()) if x.startswith("PEAK_KIB"))
    return wall, peak / 1024, proc.stdout


def parbench(*args) -> list[str]:
    return ["parbench", *map(str, args)]


def exponent(sizes: list[float], times: list[float]) -> float:
    x, y = np.log(sizes), np.log(np.maximum(times, 1e-6))
    return float(np.polyfit(x, y, 1)[0])


# ---- stores ---------------------------------------------------------------------------------------------------


def _template_record() -> dict:
    """A real run record (a tiny linear probe on the synthetic data), the shape every synthetic record copies."""
    from parbench.engine.run import RunSpec, run

    with tempfile.TemporaryDirectory() as tmp:
        over = {"limit": 32, "epochs": 30, "bootstrap": 0, "batch_size": 32}
        rec = run(RunSpec("synthetic", "linear-probe", backbone="parbench-tiny", overrides=over, out=tmp, quiet=True))
    return json.loads(json.dumps(rec, default=float))


def _predictions(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < rng.uniform(0.05, 0.5, k)).astype(np.uint8)
    probs = np.clip(labels * 0.35 + rng.random((n, k)) * 0.65, 0, 1).astype(np.float32)
    return probs, labels


class StoreBuilder:
    """Rows as `Store.add_run` writes them, for many runs at once: a few distinct prediction sets per test set
    (their draws computed once, as a run computes its own), shared by the runs (what a report reads is the same)."""

    def __init__(self, template: dict, test_sets, variants: int = 2):
        from parbench.draws import compute_draws, test_set_sha
        from parbench.metrics import protocol_metrics, ranking_metrics

        self.template = template
        self.sets = {}
        for ds, n, k in test_sets:
            rows = []
            for v in range(variants):
                probs, labels = _predictions(n, k, hash((ds, v)) % 2**31)
                buf = io.BytesIO()
                np.savez_compressed(buf, probs=probs, labels=labels)
                rows.append(
                    {
                        "metrics": protocol_metrics(labels, probs),
                        "ranking": ranking_metrics(labels, probs),
                        "draws": compute_draws(labels, probs),
                        "sha": test_set_sha(labels),
                        "npz": buf.getvalue(),
                        "n": n,
                        "k": k,
                    }
                )
            self.sets[ds] = rows

    def record(self, i: int, dataset: str, method: str, seed: int, variant: str) -> tuple[dict, dict]:
        t = self.sets[dataset][(i + seed) % len(self.sets[dataset])]
        rec = json.loads(json.dumps(self.template))
        key = f"{i:012x}"
        group = f"{dataset}|{method}|{variant}"
        variant, block = variant.split("@")
        rec.update(
            run_id=f"{dataset}-{method}-{variant}-s{seed}-{key}",
            key=key,
            group_key=group,
            dataset=dataset,
            method=method,
            seed=seed,
            metrics=t["metrics"],
            ranking=t["ranking"],
            attributes=[f"attr{j}" for j in range(t["k"])],
            groups={},
            n_test=t["n"],
            intervals={},
        )
        rec["identity"] = {**rec["identity"], "dataset": dataset, "method": method, "seed": seed}
        rec["identity"]["options"] = {"variant": variant}
        rec["identity"]["train"] = {**rec["identity"]["train"], "lr": 1e-3 * (1 + int(block))}
        return rec, t

    def write(self, path: Path, grid: list[tuple[str, str, int, str]], derived: bool = True) -> None:
        from parbench.store import Store

        store = Store(path)
        runs, metrics, attrs, preds, draws, extra = [], [], [], [], [], []
        for i, (ds, method, seed, variant) in enumerate(grid):
            r, t = self.record(i, ds, method, seed, variant)
            runs.append(
                (
                    r["run_id"],
                    r["key"],
                    ds,
                    method,
                    r["backbone"],
                    r.get("pretrained"),
                    seed,
                    0,
                    0,
                    "val",
                    r["total_params"],
                    r["trainable_params"],
                    r["wall_s"],
                    r.get("train_images_per_s"),
                    r.get("peak_mem_mb"),
                    r["finished"],
                    json.dumps(r),
                    "finished",
                    r["group_key"],
                )
            )
            for proto, m in r["metrics"].items():
                metrics.append((r["run_id"], proto, m["ma"], m["acc"], m["prec"], m["rec"], m["f1"], 0.5, "{}"))
                attrs += [(r["run_id"], proto, a, "", v) for a, v in zip(r["attributes"], m["label_ma"], strict=True)]
            preds.append((r["run_id"], t["npz"]))
            draws += [(r["run_id"], p, d.shape[0], 0, t["sha"], d.tobytes()) for p, d in t["draws"].items()]
            if derived:
                for kind in ("cross", "robust"):
                    d = {
                        "id": f"{r['run_id']}@{kind}",
                        "kind": kind,
                        "run_id": r["run_id"],
                        "run_key": r["key"],
                        "group_key": r["group_key"],
                        "dataset": ds,
                        "method": method,
                        "backbone": r["backbone"],
                        "pretrained": r.get("pretrained"),
                        "seed": seed,
                        "smoke": False,
                        "metrics": r["metrics"],
                        "ranking": r["ranking"],
                        "selected_on_test": False,
                        "n_test": t["n"],
                        "finished": r["finished"],
                    }
                    if kind == "cross":
                        i_ds = [s[0] for s in TEST_SETS].index(ds) if ds in [s[0] for s in TEST_SETS] else 0
                        other = TEST_SETS[(i_ds + 1) % len(TEST_SETS)][0]
                        pairs = [[a, a, a, False] for a in r["attributes"][:5]]
                        d.update(
                            trained_on=ds,
                            evaluated_on=other,
                            eval_split="test",
                            attributes=r["attributes"][:5],
                            mapping={"pairs": pairs, "dropped_train": [], "dropped_eval": []},
                            in_domain={
                                p: {k: m[k] for k in ("ma", "acc", "prec", "rec", "f1")}
                                for p, m in r["metrics"].items()
                            },
                            selected_on=r.get("selected_on"),
                        )
                        d["metrics"] = {
                            p: {k: v for k, v in m.items() if k != "label_ma"} | {"label_ma": m["label_ma"][:5]}
                            for p, m in r["metrics"].items()
                        }
                    else:
                        d.update(
                            perturbation={"kind": "corruption", "name": "fog", "severity": 3},
                            attributes=r["attributes"],
                            groups={},
                            clean={
                                p: {k: v for k, v in m.items() if k != "threshold"} for p, m in r["metrics"].items()
                            },
                            clean_map=r["ranking"].get("map"),
                            reference=None,
                            mce_baseline=None,
                            seconds=1.0,
                        )
                    extra.append((d["id"], kind, r["run_id"], r["key"], json.dumps(d), None))

        def write(con):
            con.executemany(f"INSERT INTO runs VALUES ({','.join('?' * 19)})", runs)
            con.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?)", metrics)
            con.executemany("INSERT INTO attribute_metrics VALUES (?,?,?,?,?)", attrs)
            con.executemany("INSERT INTO predictions VALUES (?,?)", preds)
            con.executemany("INSERT INTO draws VALUES (?,?,?,?,?,?)", draws)
            con.executemany("INSERT INTO derived VALUES (?,?,?,?,?,?)", extra)

        store._write(write)


def grid_of(n_runs: int, test_sets=TEST_SETS) -> list[tuple[str, str, int, str]]:
    """n_runs cells of datasets x methods x variants x 3 seeds, then the same with another learning rate, and so
    on: configurations grow with the store (a lab's ablations), so the report's rows grow with its runs. The first
    126 are the field-baselines grid."""
    out, block = [], 0
    while len(out) < n_runs:
        for ds, _, _ in test_sets:
            for m in METHODS:
                for v in ("fixed", "reference"):
                    out += [(ds, m, seed, f"{v}@{block}") for seed in range(3)]
        block += 1
    return out[:n_runs]


def bench_store_commands(tmp: Path, quick: bool, only: set[str]) -> dict:
    template = _template_record()
    real = StoreBuilder(template, TEST_SETS)
    results: dict = {}
    sizes = [125, 250, 500] if quick else [500, 1000, 2000]
    stores = {}
    for n in sizes:
        stores[n] = tmp / f"runs-{n}.sqlite"
        real.write(stores[n], grid_of(n))
    grid126 = tmp / "grid126.sqlite"
    real.write(grid126, grid_of(126))
    if "report" in only:
        w, mem, _ = measure(parbench("report", "--store", grid126, "--out", tmp / "rep126"))
        results["report_126_grid"] = {"runs": 126, "s": w, "peak_mib": mem, "target_s": 20, "target_mib": 2048}
        rows = []
        for n in sizes:
            w, mem, _ = measure(parbench("report", "--store", stores[n], "--out", tmp / f"rep{n}"))
            rows.append({"runs": n, "s": w, "peak_mib": mem})
        results["report"] = {"sizes": rows, "exponent": exponent(sizes, [r["s"] for r in rows])}
        small = StoreBuilder(template, [(ds, 100, k) for ds, _, k in TEST_SETS])
        small_store = tmp / "small.sqlite"
        small.write(small_store, grid_of(sizes[0]))
        w, mem, _ = measure(parbench("report", "--store", small_store, "--out", tmp / "rep-small"))
        results["report_small_test_sets"] = {"runs": sizes[0], "test_images": 100, "s": w, "peak_mib": mem}
        old = tmp / "before-draws.sqlite"
        real.write(old, grid_of(126))
        import sqlite3

        with sqlite3.connect(old) as con:
            con.execute("DELETE FROM draws")  # as a store written before draws existed holds none
        first, _, _ = measure(parbench("report", "--store", old, "--out", tmp / "rep-old1"))
        later, mem, _ = measure(parbench("report", "--store", old, "--out", tmp / "rep-old2"))
        results["report_store_before_draws"] = {"runs": 126, "first_s": first, "later_s": later, "peak_mib": mem}
    for cmd, args in (("list", ("runs", "list", "--json")), ("export", ("runs", "export", "-o"))):
        if cmd not in only:
            continue
        rows = []
        for n in sizes:
            extra = [tmp / f"export-{n}.csv"] if cmd == "export" else []
            w, mem, _ = measure(parbench(*args, *extra, "--store", stores[n]))
            rows.append({"runs": n, "s": w, "peak_mib": mem})
        results[cmd] = {"sizes": rows, "exponent": exponent(sizes, [r["s"] for r in rows])}
    if "merge" in only:
        results["merge"] = bench_merge(tmp, real, [5, 10, 20] if quick else [25, 50, 100])
    return results


def bench_merge(tmp: Path, builder: StoreBuilder, shard_counts: list[int]) -> dict:
    import sqlite3

    rows = []
    for n in shard_counts:
        folder = tmp / f"shards-{n}"
        folder.mkdir()
        grid = grid_of(20 * n)
        for s in range(n):
            builder.write(folder / f"shard-{s}.sqlite", grid[20 * s : 20 * (s + 1)])
        target = tmp / f"merged-{n}.sqlite"
        w, mem, _ = measure(parbench("store", "merge", target, *sorted(folder.glob("*.sqlite"))))
        counts = {}
        with sqlite3.connect(target) as con:
            for table in ("runs", "metrics", "attribute_metrics", "predictions", "draws", "derived"):
                counts[table] = con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            counts["prediction_bytes"] = con.execute("SELECT SUM(LENGTH(npz)) FROM predictions").fetchone()[0]
        expected = {"runs": 20 * n, "predictions": 20 * n, "draws": 40 * n, "derived": 40 * n}
        lost = {k: (counts[k], v) for k, v in expected.items() if counts[k] != v}
        rows.append({"shards": n, "runs": 20 * n, "s": w, "peak_mib": mem, "counts": counts, "lost": lost})
    return {"sizes": rows, "exponent": exponent(shard_counts, [r["s"] for r in rows]), "target_s": 30}


# ---- suites and data --------------------------------------------------------------------------------------------


def bench_dry_run(tmp: Path, quick: bool) -> dict:
    rows = []
    sizes = [500, 1000, 2000] if quick else [2500, 5000, 10000]
    for n in sizes:
        seeds = n // (2 * 5)
        suite = tmp / f"grid-{n}.toml"
        suite.write_text(
            f'name = "grid{n}"\ndatasets = ["synthetic", "synthetic-zs"]\n'
            'methods = ["linear-probe", "finetune", "zeroshot", "promptpar", "lora"]\nbackbones = ["parbench-tiny"]\n'
            f"seeds = {list(range(seeds))}\n"
        )
        w, mem, _ = measure(parbench("suite", suite, "--dry-run", "--store", tmp / "none.sqlite"))
        rows.append({"runs": n, "s": w, "peak_mib": mem})
    return {"sizes": rows, "exponent": exponent(sizes, [r["s"] for r in rows])}


def _pa100k_rows(root: Path, n: int) -> None:
    """annotation.mat with n rows (80/10/10) and an image file per row (1 pixel: existence is what prepare checks)."""
    from tests.fixtures import originals

    sizes = (n * 8 // 10, n // 10, n - n * 8 // 10 - n // 10)
    originals.pa100k(root, sizes=sizes)
    (root / "data").mkdir(exist_ok=True)
    for i in range(n):
        (root / "data" / f"{i + 1:06d}.jpg").touch()


def bench_prepare(tmp: Path, quick: bool) -> dict:
    rows = []
    sizes = [5000, 10000, 20000] if quick else [25000, 50000, 100000]
    for n in sizes:
        root = tmp / f"pa100k-{n}"
        root.mkdir()
        _pa100k_rows(root, n)
        env = {"PARBENCH_CACHE": str(tmp / f"cache-{n}")}
        w, mem, _ = measure(parbench("datasets", "prepare", "PA100k", "--root", root, "--json"), env)
        rows.append({"rows": n, "s": w, "peak_mib": mem})
    return {"sizes": rows, "exponent": exponent(sizes, [r["s"] for r in rows]), "target_s": 60, "target_mib": 1024}


def _read_cache(root: str) -> None:
    """Read every cached row of the prepared splits back (the gather a cached evaluation batch does)."""
    from parbench.data.image_cache import split_cache
    from parbench.engine.image_prep import replace_cache, run_preprocess
    from parbench.engine.run import RunSpec
    from parbench.engine.spec import load_data

    spec = RunSpec("PA100k", "linear-probe", backbone="parbench-tiny", root=root)
    pre, plan = run_preprocess(spec)
    ds = load_data(spec, plan.card)
    t0, rows = time.perf_counter(), 0
    for name in ("train", "val", "test"):
        idx = ds.partition(name)
        cache = split_cache(ds, idx, pre, replace_cache(plan.cfg))
        for lo in range(0, len(idx), 256):
            got = cache.rows_if_filled(np.arange(lo, min(lo + 256, len(idx))))
            assert got is not None, "a row the fill left empty"
            rows += len(got)
    print(json.dumps({"rows": rows, "s": time.perf_counter() - t0}))


def bench_cache(tmp: Path, quick: bool) -> dict:
    from tests.fixtures import originals

    rows = []
    sizes = [200, 400, 800] if quick else [2000, 4000, 8000]
    for n in sizes:
        root = tmp / f"cache-data-{n}"
        root.mkdir()
        sizes3 = (n * 8 // 10, n // 10, n - n * 8 // 10 - n // 10)
        originals.pa100k(root, sizes=sizes3, images=True)
        env = {"PARBENCH_CACHE": str(tmp / f"imgcache-{n}")}
        fill, mem, _ = measure(
            parbench(
                "datasets",
                "prepare",
                "PA100k",
                "--root",
                root,
                "--images",
                "--method",
                "linear-probe",
                "--backbone",
                "parbench-tiny",
                "--json",
            ),
            env,
        )
        _, _, out = measure([__file__, "_read_cache", str(root)], env)
        read = json.loads(out.strip().splitlines()[-1])
        rows.append(
            {
                "images": n,
                "fill_s": fill,
                "fill_images_per_s": n / fill,
                "read_s": read["s"],
                "read_images_per_s": n / max(read["s"], 1e-9),
                "peak_mib": mem,
            }
        )
    return {
        "sizes": rows,
        "exponent_fill": exponent(sizes, [r["fill_s"] for r in rows]),
        "exponent_read": exponent(sizes, [r["read_s"] for r in rows]),
    }


# ---- main -------------------------------------------------------------------------------------------------------


def _print(results: dict) -> None:
    for name, res in results.items():
        if "sizes" in res:
            for row in res["sizes"]:
                print(f"{name:24s} " + "  ".join(f"{k} {_fmt(v)}" for k, v in row.items() if k not in ("counts",)))
            expo = {k: v for k, v in res.items() if k.startswith("exponent")}
            print(f"{name:24s} growth exponent " + ", ".join(f"{k} {v:.2f}" for k, v in expo.items()))
        else:
            print(f"{name:24s} " + "  ".join(f"{k} {_fmt(v)}" for k, v in res.items()))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_read_cache":
        return _read_cache(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="report,list,export,merge,dry-run,prepare,cache")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a check that it runs, not the figures)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    only = set(args.only.split(","))
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if only & {"report", "list", "export", "merge"}:
            results.update(bench_store_commands(tmp, args.quick, only))
        if "dry-run" in only:
            results["dry_run"] = bench_dry_run(tmp, args.quick)
        if "prepare" in only:
            results["prepare"] = bench_prepare(tmp, args.quick)
        if "cache" in only:
            results["cache"] = bench_cache(tmp, args.quick)
    _print(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return None


if __name__ == "__main__":
    main()
