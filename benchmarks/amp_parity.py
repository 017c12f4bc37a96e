"""Does bf16 autocast change a method's numbers materially? fp32 against bf16 runs, seed by seed, on CUDA.

    python benchmarks/amp_parity.py [--methods strong-baseline,vtb] [--seeds 0,1,2] [--epochs 3] [--json F]

The strong baseline's and VTB's authors train in fp32, so both methods run fp32 by default; a fixed variant may
turn bf16 on (`--set amp=true`) once this comparison says it changes nothing material. Per method and seed it
trains the same run twice through parbench's own engine (`parbench.engine.run`, synthetic data, the method's
default tower with random weights), once with `amp=false` and once with `amp=true`, and prints the test mA under
both protocols, the bf16 - fp32 difference per seed, and the seed-to-seed standard deviation of the fp32 runs: a
difference well inside that spread is not material. On a machine without CUDA autocast is never used (the engine
runs fp32 on CPU whatever `amp` says), so the script says so and stops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="strong-baseline,vtb")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: parbench never autocasts on CPU, so fp32 and bf16 runs would be the same runs")
        return
    from parbench.engine.run import RunSpec, run

    seeds = [int(s) for s in args.seeds.split(",")]
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            rows = []
            for seed in seeds:
                row = {"seed": seed}
                for amp in (False, True):
                    spec = RunSpec(
                        dataset="synthetic",
                        method=method,
                        pretrained="none",
                        seed=seed,
                        overrides={"epochs": args.epochs, "amp": amp, "bootstrap": 0},
                        out=f"{tmp}/{method}-{amp}",
                        quiet=True,
                    )
                    rec = run(spec)
                    row["bf16" if amp else "fp32"] = {p: rec["metrics"][p]["ma"] for p in rec["metrics"]}
                rows.append(row)
            spread = {p: statistics.pstdev(r["fp32"][p] for r in rows) for p in rows[0]["fp32"]}
            out[method] = {"runs": rows, "fp32_seed_std": spread}
            for r in rows:
                diff = " ".join(f"{p} {100 * (r['bf16'][p] - r['fp32'][p]):+.2f}" for p in r["fp32"])
                print(f"{method} seed {r['seed']}: bf16 - fp32 mA (points): {diff}")
            print(
                f"{method} fp32 seed-to-seed std (points): " + " ".join(f"{p} {100 * v:.2f}" for p, v in spread.items())
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
