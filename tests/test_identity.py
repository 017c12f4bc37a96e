"""A run's identity is its resolved settings and its data: eval of a run reproduces its record on the run's own
data; caches and run folders key on content (weights, annotations), random weights on their seed."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from parbench.cli import app
from parbench.engine.run import RunSpec, run
from parbench.errors import ParbenchError
from tests.fixtures import originals

FAST = {"limit": 64, "epochs": 2, "batch_size": 16, "eval_batch_size": 32, "bootstrap": 0}


def _eval(run_dir, *extra):
    r = CliRunner().invoke(app, ["eval", "--checkpoint", str(run_dir), "--json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _uncached_probs(rec):
    """The run's test probabilities recomputed from scratch: no feature or text cache involved."""
    from parbench.data import load_dataset
    from parbench.engine.evaluate import predict_split
    from parbench.engine.restore import restore

    r = restore(rec["run_dir"])
    idx = np.load(f"{rec['run_dir']}/predictions.npz")["index"]
    probs, _ = predict_split(r.built, load_dataset("synthetic"), idx, torch.device("cpu"), use_cache=False)
    return probs


def _peta(root, n=60):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    originals.peta(root, n=n, seed=5)
    (root / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48, 24, 3), dtype=np.uint8)).save(root / "images" / f"{i + 1:05d}.png")
    return root


def test_eval_of_a_split_file_run_uses_its_split(tmp_path):
    split = tmp_path / "split.json"
    r = CliRunner().invoke(app, ["datasets", "zs-split", "synthetic", "--seed", "3", "-o", str(split)])
    assert r.exit_code == 0, r.output
    rec = run(
        RunSpec(
            dataset="synthetic",
            method="linear-probe",
            backbone="parbench-tiny",
            split_file=str(split),
            overrides=FAST,
            out=str(tmp_path / "runs"),
            quiet=True,
        )
    )
    res = _eval(rec["run_dir"])
    assert res["data_from_run"] == ["split_file"] and res["data"]["split_file"] == str(split)
    assert res["metrics"] == rec["metrics"]  # the same test images, the same way: exactly
    test = json.loads(split.read_text())["splits"]["test"]["index"][: FAST["limit"]]
    saved = np.load(f"{rec['run_dir']}/predictions.npz")
    assert saved["index"].tolist() == test


def test_eval_of_a_partition_1_run_uses_partition_1(tmp_path):
    root = _peta(tmp_path / "PETA")
    spec = dict(
        dataset="PETA",
        method="linear-probe",
        backbone="parbench-tiny",
        root=str(root),
        overrides={**FAST, "limit": 0},
        out=str(tmp_path / "runs"),
        quiet=True,
    )
    rec = run(RunSpec(partition=1, **spec))
    res = _eval(rec["run_dir"])
    assert res["data"]["partition"] == 1 and "partition" in res["data_from_run"]
    assert res["metrics"] == rec["metrics"]
    other = _eval(rec["run_dir"], "--partition", "0")  # another split only when asked for
    assert other["data"]["partition"] == 0 and other["metrics"] != rec["metrics"]
    with pytest.raises(ParbenchError, match="partition"):
        run(RunSpec(partition=5, **spec))


def test_random_weights_key_on_the_seed_and_eval_reproduces_each(tmp_path):
    """Seed 1 after seed 0 on random weights: its own features, not seed 0's cached ones."""
    recs = [
        run(
            RunSpec(
                dataset="synthetic",
                method="linear-probe",
                backbone="parbench-tiny",
                seed=s,
                overrides=FAST,
                out=str(tmp_path / "runs"),
                quiet=True,
            )
        )
        for s in (0, 1)
    ]
    assert recs[0]["key"] != recs[1]["key"]
    for rec in recs:
        assert _eval(rec["run_dir"])["metrics"] == rec["metrics"]
        saved = np.load(f"{rec['run_dir']}/predictions.npz")["probs"]
        np.testing.assert_allclose(_uncached_probs(rec), saved, atol=1e-6)  # not another seed's features


def test_overwritten_weights_file_is_another_run_and_restore_refuses_it(tmp_path):
    from parbench.backbones.tiny import TinyPretrainSpec, ensure_weights

    path = tmp_path / "w.pt"
    small = lambda seed: TinyPretrainSpec(identities=8, images_per_identity=2, epochs=1, batch_size=8, data_seed=seed)
    shutil.copy(ensure_weights(small(70)), path)
    spec = dict(
        dataset="synthetic",
        method="linear-probe",
        backbone="parbench-tiny",
        pretrained=str(path),
        overrides=FAST,
        out=str(tmp_path / "runs"),
        quiet=True,
    )
    first = run(RunSpec(**spec))
    shutil.copy(ensure_weights(small(71)), path)  # same path, other weights
    second = run(RunSpec(**spec))
    assert second["key"] != first["key"] and second["run_dir"] != first["run_dir"]
    assert not second.get("reused")
    assert _eval(second["run_dir"])["metrics"] == second["metrics"]
    saved = np.load(f"{second['run_dir']}/predictions.npz")["probs"]
    np.testing.assert_allclose(_uncached_probs(second), saved, atol=1e-6)  # its features, not the stale ones
    r = CliRunner().invoke(app, ["eval", "--checkpoint", first["run_dir"], "--json"])
    assert r.exit_code != 0 and "frozen weights" in str(r.exception or r.output)


def test_other_annotation_content_is_another_run(tmp_path):
    """Two copies of a dataset whose annotations differ are two runs: neither overwrites the other."""
    a, b = _peta(tmp_path / "a"), _peta(tmp_path / "b")
    originals.peta(b, n=60, seed=6)  # the same files, other labels
    spec = dict(
        dataset="PETA",
        method="zeroshot",
        backbone="parbench-tiny",
        overrides={"limit": 16, "bootstrap": 0},
        out=str(tmp_path / "runs"),
        quiet=True,
    )
    ra, rb = run(RunSpec(root=str(a), **spec)), run(RunSpec(root=str(b), **spec))
    assert ra["run_dir"] != rb["run_dir"]
    assert json.loads((tmp_path / "runs" / ra["run_id"] / "record.json").read_text())["root"] == str(a)


def test_building_tiny_weights_leaves_the_global_rng_alone():
    from parbench.backbones.tiny import TinyPretrainSpec, ensure_weights

    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    ensure_weights(TinyPretrainSpec(identities=8, images_per_identity=2, epochs=1, batch_size=8, data_seed=72))
    assert torch.equal(torch.rand(3), want)


def test_choice_settings_fail_at_parse_time():
    from parbench.engine.config import resolve_config
    from parbench.methods import get_method

    for key, value in (
        ("normalization", "halfx"),
        ("select_on", "vall"),
        ("unspecified", "skip"),
        ("interpolation", "nearest"),
    ):
        with pytest.raises(ParbenchError, match=key):
            resolve_config(get_method("finetune"), {key: value})
    with pytest.raises(ParbenchError, match="tune"):
        resolve_config(get_method("promptpar"), {"tune": "everything"})
