"""`parbench demo`: the main job on the embedded default — synthetic data, tiny backbone, every method,
two seeds, a report — offline on CPU."""

from __future__ import annotations

import shutil
import time
from pathlib import Path


def suites_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "suites"
    if here.is_dir():
        return here
    import importlib.resources

    return Path(str(importlib.resources.files("parbench_suites")))


def run_demo(out_dir: str | Path = "reports/demo", fresh: bool = False, log=print) -> Path:
    from parbench.report.render import render_report
    from parbench.suite import load_suite, run_suite

    out_dir = Path(out_dir)
    if fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    suite = load_suite(suites_dir() / "demo.toml", store=str(out_dir / "store.sqlite"), out=str(out_dir / "runs"))
    t0 = time.perf_counter()

    def done(r: dict) -> None:
        m = r["metrics"]["promptpar"]
        log(
            f"{r['dataset']:13s} {r['method']:13s} seed {r['seed']}: mA {100 * m['ma']:.2f}  F1 {100 * m['f1']:.2f}"
            f"  ({r['wall_s']:.1f} s)"
        )

    run_suite(suite, suite.specs, quiet=True, on_done=done)
    path = render_report(out_dir / "store.sqlite", out_dir, title="parbench demo (synthetic data, tiny backbone)")
    log(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return path
