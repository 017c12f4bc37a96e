"""The worked example, end to end from its own package: `examples/parbench-example` installed (its dist-info
on the path, as pip writes it) adds a method and a table-format dataset without any change to parbench; its
method runs on a timm and an open_clip tower, beside a built-in method, and the report shows both."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from parbench.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "parbench-example"
FAST = {"limit": 48, "epochs": 1, "batch_size": 16, "eval_batch_size": 48, "bootstrap": 0}


def _install(site: Path) -> dict:
    """What `pip install examples/parbench-example` leaves for importlib.metadata: a dist-info with the entry
    points of the example's own pyproject.toml (read from it, not restated here)."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    info = site / f"parbench_example-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, entries in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in entries.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    (info / "top_level.txt").write_text("parbench_example\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLE / "src"), str(ROOT)])}


def _street(tmp_path: Path) -> Path:
    """The example card's dataset: an annotation table beside the images (the synthetic pedestrians here)."""
    syn = load_dataset("synthetic")
    root = tmp_path / "street"
    root.mkdir()
    (root / "images").symlink_to(Path(syn.root) / "images")
    cols = ["hat", "backpack", "long_hair", "skirt"]
    j = [syn.attributes.index(c) for c in cols]
    split_of = {int(i): s for s in ("train", "val", "test") for i in syn.partition(s)}
    lines = ["image,split,person," + ",".join(cols)]
    for i in range(len(syn)):
        lines.append(
            f"{syn.relpaths[i]},{split_of[i]},{syn.identities[i]}," + ",".join(str(syn.labels[i, k]) for k in j)
        )
    (root / "street.csv").write_text("\n".join(lines) + "\n")
    return root


def _cli(env, *args):
    proc = subprocess.run(
        [sys.executable, "-m", "parbench", *map(str, args)], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_the_example_plugin_runs_end_to_end_from_its_own_package(tmp_path):
    env = _install(tmp_path / "site")
    rows = {r["name"]: r for r in json.loads(_cli(env, "methods", "list", "--json"))}
    assert rows["attr-query"]["origin_text"] == "parbench-example 0.1.0"
    assert "street" in {d["name"] for d in json.loads(_cli(env, "datasets", "list", "--json"))}
    root, store = _street(tmp_path), tmp_path / "store.sqlite"
    sets = [x for k, v in FAST.items() for x in ("--set", f"{k}={v}")]
    for method, backbone in (
        ("attr-query", "timm:test_vit"),
        ("attr-query", "parbench-tiny"),
        ("linear-probe", "parbench-tiny"),
    ):
        rec = json.loads(
            _cli(
                env,
                "run",
                "--dataset",
                "street",
                "--root",
                root,
                "--method",
                method,
                "--backbone",
                backbone,
                "--pretrained",
                "none",
                "--store",
                store,
                "--out",
                tmp_path / "runs",
                "--json",
                *sets,
            )
        )
        assert rec["dataset"] == "street" and rec["attributes"] == ["hat", "backpack", "long_hair", "skirt"]
        assert rec["n_test"] == 48 and 0.0 <= rec["metrics"]["promptpar"]["ma"] <= 1.0
        if method == "attr-query":
            origin = rec["identity"]["method_origin"]
            assert origin["distribution"] == "parbench-example" and origin["version"] == "0.1.0"
            width = 64  # both tiny towers' token width: 4 queries, attention (4 W^2 + 4 W), norm, scorers
            assert rec["trainable_params"] == 4 * width + (4 * width * width + 4 * width) + 2 * width + 4 * width + 4
    _cli(env, "report", "--store", store, "--out", tmp_path / "report", "--include-smoke")
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="ds-street"' in page and 'data-method="attr-query"' in page and 'data-method="linear-probe"' in page
