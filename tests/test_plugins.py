"""Methods from outside parbench: a file, an importable module, an installed distribution's entry point; where
each comes from is part of a run's identity; a broken plugin is one clear error naming it."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from parbench.engine.run import RunSpec, run
from tests.test_faults import one_line_error

FAST = {"limit": 48, "epochs": 1, "batch_size": 16, "eval_batch_size": 48, "bootstrap": 0}
ROOT = Path(__file__).resolve().parent.parent

PARTS = """
import torch.nn as nn
from parbench.api import freeze


class Probe(nn.Module):
    def __init__(self, backbone, k):
        super().__init__()
        self.visual = freeze(backbone.visual)
        self.fc = nn.Linear(backbone.embed_dim, k)

    def forward(self, images):
        return self.fc(self.visual(images).float())
"""
PLAIN = (
    PARTS.replace("import freeze", "import freeze, plain_method")
    + """

SPEC = plain_method("my-probe", lambda backbone, card, options: Probe(backbone, card.num_attributes),
                    recipe={"optimizer": "adamw", "lr": 1e-3, "epochs": 1})
"""
)


def _plugin(tmp_path: Path, body: str, name: str = "my_method.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def cli(*args, env=None, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "parbench", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _spec(path: Path, tmp_path: Path) -> RunSpec:
    """A tiny run of the plugin at `path`, built anew each call (its key is read again: edits show)."""
    return RunSpec(
        "synthetic", f"{path}:SPEC", backbone="parbench-tiny", overrides=FAST, out=str(tmp_path / "runs"), quiet=True
    )


def test_a_method_from_a_file_runs_and_an_edit_is_a_new_run(tmp_path):
    path = _plugin(tmp_path, PLAIN)
    spec = lambda: _spec(path, tmp_path)
    rec = run(spec())
    assert rec["method"] == "my-probe" and rec["status"] == "finished"
    origin = rec["identity"]["method_origin"]
    assert origin["kind"] == "file" and origin["file"] == "my_method.py" and len(origin["sha256"]) == 64
    assert run(spec())["reused"]  # the same file: the finished run
    before = spec().key()
    path.write_text(path.read_text() + "# edited: the same recipe, other code\n")
    after = spec().key()
    assert after != before
    rec2 = run(spec())
    assert "reused" not in rec2 and rec2["run_dir"] != rec["run_dir"]


HELPED = """
import torch.nn as nn
from parbench.api import freeze, plain_method
from probe_parts import Probe


def build(backbone, card, options):
    from probe_init import init_head  # imported lazily, inside the build

    return init_head(Probe(backbone, card.num_attributes))


SPEC = plain_method("helped-probe", build, recipe={"optimizer": "adamw", "lr": 1e-3, "epochs": 1})
"""
INIT = """
def init_head(model):
    return model
"""


def test_a_method_files_helpers_import_without_pythonpath_and_editing_one_is_a_new_run(tmp_path):
    """The README's promise: an edited method never reuses a result, helpers beside the method file included."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    path = _plugin(folder, HELPED)
    _plugin(folder, PARTS, "probe_parts.py")
    init = _plugin(folder, INIT, "probe_init.py")
    _plugin(folder, "raise SystemExit('not imported by the method: not part of it')\n", "unrelated.py")
    spec = lambda: _spec(path, tmp_path)
    rec = run(spec())
    assert rec["status"] == "finished"
    origin = rec["identity"]["method_origin"]
    assert origin["local_modules"] == ["probe_init.py", "probe_parts.py"] and len(origin["local_sha256"]) == 64
    assert run(spec())["reused"]
    first = spec().key()
    init.write_text(INIT.replace("return model", "model.fc.bias.data.zero_()\n    return model"))
    second = spec().key()
    assert second != first
    (folder / "probe_parts.py").write_text(PARTS + "# edited\n")
    third = spec().key()
    assert third not in (first, second)
    (folder / "unrelated.py").write_text("# another edit, of a file the method never imports\n")
    assert spec().key() == third


def test_a_built_in_run_keeps_its_identity():
    """Built-in methods carry no origin in their identity, so earlier stores' runs are still found."""
    ident = RunSpec(dataset="synthetic", method="linear-probe", backbone="parbench-tiny").identity()
    assert "method_origin" not in ident


@pytest.mark.slow
def test_a_module_method_and_its_info(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    _plugin(pkg, PLAIN, "probe.py")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    code, out, err = cli(
        "methods", "info", "mypkg.probe:SPEC", "--backbone", "parbench-tiny", "--num-attributes", "5", "--json", env=env
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["method"] == "my-probe" and info["trainable_params"] == 64 * 5 + 5
    code, out, err = cli(
        "run",
        "--dataset",
        "synthetic",
        "--method",
        "mypkg.probe:SPEC",
        "--backbone",
        "parbench-tiny",
        "--out",
        tmp_path / "runs",
        "--json",
        *[x for k, v in FAST.items() for x in ("--set", f"{k}={v}")],
        env=env,
    )
    assert code == 0, err
    origin = json.loads(out)["identity"]["method_origin"]
    assert origin["kind"] == "module" and origin["module"] == "mypkg.probe" and len(origin["sha256"]) == 64


BAD = {
    "import_fails": ("raise RuntimeError('boom')\n", "SPEC", ["a module that imports", "RuntimeError: boom"]),
    "no_such_name": (PLAIN, "SPECS", ["a name 'SPECS'", "SPEC"]),
    "not_a_spec": ("SPEC = 3\n", "SPEC", ["a parbench.api.MethodSpec", "int"]),
    "unknown_recipe_key": (PLAIN.replace('"epochs": 1', '"epoch": 1'), "SPEC", ["recipe", "did you mean epochs", "'epoch'"]),
    "bad_recipe_value": (PLAIN.replace('"lr": 1e-3', '"lr": "fast"'), "SPEC", ["recipe", "lr as float"]),
    "wrong_output": (PLAIN.replace("return self.fc(", "return {'y': self.fc(").replace(".float())", ".float())}"), "SPEC",
                     ["method plugin my-probe (file my_method.py)", "'logits'", "keys ['y']"]),
    "wrong_shape": (PLAIN.replace("nn.Linear(backbone.embed_dim, k)", "nn.Linear(backbone.embed_dim, 2)"), "SPEC",
                    ["method plugin my-probe", "16 x 12", "(16, 2)"]),
    "nothing_trains": (PLAIN.replace("self.fc = nn.Linear(backbone.embed_dim, k)",
                                     "self.fc = freeze(nn.Linear(backbone.embed_dim, k))"), "SPEC",
                       ["method plugin my-probe", "parameters that train"]),
    "name_taken": (PLAIN.replace('"my-probe"', '"finetune"'), "SPEC", ["a method name of its own", "'finetune'"]),
    "builds_no_module": (PLAIN.replace("Probe(backbone, card.num_attributes)", "None"), "SPEC",
                         ["build(backbone, card, options) -> nn.Module", "NoneType"]),
    "nan_in_training": (PLAIN.replace("return self.fc(self.visual(images).float())",
                                      "return self.fc(self.visual(images).float()) * float('nan')"), "SPEC",
                        ["method plugin my-probe (file my_method.py), training", "a finite loss", "nan"]),
    "nan_evaluation_only": (PLAIN.replace("return self.fc(self.visual(images).float())",
                                          "return self.fc(self.visual(images).float()) / 0.0 * 0.0")
                            + "\nimport dataclasses\nSPEC = dataclasses.replace(SPEC, trains=False)\n", "SPEC",
                            ["method plugin my-probe (file my_method.py)", "finite logits for every image",
                             "NaN or infinite logits for"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_broken_plugin_is_one_line_naming_it(tmp_path, case):
    body, attr, needles = BAD[case]
    path = _plugin(tmp_path, body)
    code, _, err = cli(
        "run",
        "--dataset",
        "synthetic",
        "--method",
        f"{path}:{attr}",
        "--backbone",
        "parbench-tiny",
        "--out",
        tmp_path / "runs",
        *[x for k, v in FAST.items() for x in ("--set", f"{k}={v}")],
    )
    one_line_error(code, err, *needles)
    assert "my_method.py" in err
    assert not list((tmp_path / "runs").glob("*/record.json"))


def _dist_info(site: Path, name: str, version: str, entry_points: str) -> None:
    """An installed distribution as importlib.metadata sees it: what `pip install` writes for a package."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (info / "top_level.txt").write_text(name.replace("-", "_") + "\n")


def test_entry_point_methods_are_listed_with_their_distribution(tmp_path):
    site = tmp_path / "site"
    pkg = site / "my_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    _plugin(pkg, PLAIN.replace('"my-probe"', '"ep-probe"'), "m.py")
    (pkg / "broken.py").write_text("import no_such_module_anywhere\n")
    _dist_info(
        site,
        "my-plugin",
        "1.2.3",
        """
        [parbench.methods]
        ep-probe = my_plugin.m:SPEC
        broken = my_plugin.broken:SPEC
        finetune = my_plugin.m:SPEC
        """,
    )
    env = {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    code, out, err = cli("methods", "list", "--json", env=env)
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["ep-probe"]["origin_text"] == "my-plugin 1.2.3" and rows["finetune"]["origin_text"] == "built-in"
    assert rows["ep-probe"]["origin"]["distribution"] == "my-plugin" and len(rows["ep-probe"]["origin"]["sha256"]) == 64
    assert (
        "cannot be loaded" in rows["broken"]["description"]
        and "no_such_module_anywhere" in rows["broken"]["description"]
    )
    assert "entry point 'finetune' of my-plugin skipped" in err  # a built-in name is never replaced
    code, out, err = cli(
        "run",
        "--dataset",
        "synthetic",
        "--method",
        "broken",
        "--backbone",
        "parbench-tiny",
        "--out",
        tmp_path / "runs",
        env=env,
    )
    err = "".join(x + "\n" for x in err.splitlines() if not x.startswith("warning: parbench.methods entry point"))
    one_line_error(code, err, "method plugin", "broken", "ModuleNotFoundError")


READER = """
import json

import numpy as np
from parbench.api import PARDataset


def read(card, root, partition=0):
    doc = json.loads((root / card.source_files[0]).read_text())
    return PARDataset(name=card.name, attributes=card.attribute_names, labels=np.asarray(doc["labels"], np.uint8),
                      relpaths=doc["images"], root=root,
                      partitions={k: np.asarray(v, np.int64) for k, v in doc["splits"].items()})
"""


def test_a_reader_from_an_installed_distribution(tmp_path):
    site = tmp_path / "site"
    (site / "my_reader").mkdir(parents=True)
    (site / "my_reader" / "__init__.py").write_text(textwrap.dedent(READER))
    _dist_info(site, "my-reader", "0.3.0", "[parbench.readers]\nmy-json = my_reader:read\n")
    data = tmp_path / "data"
    data.mkdir()
    doc = {
        "images": ["a.png", "b.png", "c.png"],
        "labels": [[1, 0], [0, 255], [1, 1]],
        "splits": {"train": [0, 1], "test": [2]},
    }
    (data / "ann.json").write_text(json.dumps(doc))
    for name in doc["images"]:
        (data / name).write_bytes(b"x")
    card = tmp_path / "mine.toml"
    card.write_text(
        textwrap.dedent("""
        name = "mine"
        version = 1
        reader = "my-json"
        description = "read by a plugin"
        source_files = ["ann.json"]
        [splits]
        train = 2
        test = 1
        [[attributes]]
        name = "hat"
        group = "head"
        positive = "a hat"
        negative = "no hat"
        [[attributes]]
        name = "bag"
        group = "attachments"
        positive = "a bag"
        negative = "no bag"
        """)
    )
    env = {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    code, out, err = cli("datasets", "prepare", card, "--root", data, "--json", env=env)
    assert code == 0, err
    report = json.loads(out)
    assert report["images"] == 3 and report["splits"] == {"train": 2, "test": 1} and report["missing"] == 0


def test_a_suite_names_a_method_file_relative_to_itself(tmp_path):
    from parbench.suite import load_suite

    (tmp_path / "methods").mkdir()
    _plugin(tmp_path / "methods", PLAIN)
    suite = tmp_path / "grid.toml"
    suite.write_text(
        'datasets = ["synthetic"]\nmethods = ["methods/my_method.py:SPEC"]\nbackbones = ["parbench-tiny"]\n'
        'seeds = [0, 1]\n[methods_set."methods/my_method.py:SPEC"]\nepochs = 3\n'
    )
    specs = load_suite(suite).specs
    assert [s.method for s in specs] == [f"{tmp_path / 'methods' / 'my_method.py'}:SPEC"] * 2
    assert specs[0].overrides["epochs"] == 3 and specs[0].identity()["train"]["epochs"] == 3
    assert specs[0].identity()["method_origin"]["kind"] == "file"


def test_a_module_with_a_relative_file_is_not_taken_for_a_helper_beside_the_method(tmp_path, monkeypatch):
    """Some modules carry a relative __file__; resolved against the current folder it would name a file beside a
    plugin that does not exist (a plugin then failed to load when run from its own folder)."""
    import types

    from parbench.plugins import local_sources

    path = _plugin(tmp_path, PLAIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "relative_file_module", types.SimpleNamespace(__file__="_classes.py"))
    assert local_sources(path.resolve()) == []
