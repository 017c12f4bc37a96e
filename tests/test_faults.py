"""The fault catalogue: bad inputs and broken environments as users meet them. Each gives one line naming the
file or value, what was expected and what was found, with a non-zero exit, or the right result; nothing runs
code from a file; nothing outside a failing run's own folder changes; an interrupted run can be resumed."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from parbench.cli import app
from parbench.engine.run import RunSpec, run
from parbench.errors import ParbenchError
from tests.fixtures import originals, processes

FAST = {"limit": 48, "epochs": 2, "batch_size": 16, "eval_batch_size": 48, "bootstrap": 0}
RUN = ["run", "--dataset", "synthetic", "--method", "finetune", "--backbone", "parbench-tiny"]


def cli(*args, env=None):
    """The real entry point in a subprocess: exit code, stdout, stderr (no test runner in between)."""
    proc = subprocess.run(
        [sys.executable, "-m", "parbench", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stdout, proc.stderr


def one_line_error(code, err, *needles):
    assert code == 1, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _sets(over):
    return [x for k, v in over.items() for x in ("--set", f"{k}={v}")]


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('x')",))


# ---------------------------------------------------------------------------------------------- nothing executed
def test_crafted_last_pt_is_refused_on_resume_and_runs_nothing(tmp_path):
    out = tmp_path / "runs"
    code, _, err = cli(*RUN, "--out", out, *_sets({**FAST, "epochs": 1}))
    assert code == 0, err
    run_dir = next(out.iterdir())
    (run_dir / "record.json").unlink()  # as if interrupted: last.pt present, no record
    marker = tmp_path / "PWNED"
    torch.save({"epoch": 1, "trainable": {}, "optimizer": _Payload(marker)}, run_dir / "last.pt")
    code, _, err = cli(*RUN, "--out", out, *_sets({**FAST, "epochs": 1}), "--resume")
    one_line_error(code, err, "last.pt")
    assert not marker.exists()


def _not_a_checkpoint(path: Path) -> Path:
    """Bytes that torch reads as a legacy pickle whose first opcode (BYTEARRAY8) claims 2**63 bytes."""
    import struct

    path.write_bytes(b"\x96" + struct.pack("<Q", 2**63) + bytes(range(256)) * 4)
    return path


def test_bytes_that_are_no_checkpoint_are_named_so(tmp_path):
    from parbench.backbones import load_weights_file

    bad = _not_a_checkpoint(tmp_path / "model.pth")
    code, _, err = cli("eval", "--checkpoint", bad, "--dataset", "synthetic")
    one_line_error(code, err, "model.pth", "not a torch checkpoint, or a damaged one")
    assert "BYTEARRAY8" not in err and "Overflow" not in err
    with pytest.raises(ParbenchError, match="model.pth: a CLIP checkpoint.*not a torch checkpoint"):
        load_weights_file(bad)
    good = tmp_path / "half.pt"
    torch.save({"w": torch.ones(64)}, good)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])  # a copy that stopped half way
    code, _, err = cli("eval", "--checkpoint", tmp_path / "cut.pt", "--dataset", "synthetic")
    one_line_error(code, err, "cut.pt", "a damaged torch archive, truncated")


def test_crafted_trainable_pt_and_caches_run_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "trainable.pt"
    torch.save({"trainable": {}, "config": {}, "x": _Payload(marker)}, bad)
    code, _, err = cli("eval", "--checkpoint", bad, "--dataset", "synthetic")
    one_line_error(code, err, "trainable.pt")
    assert not marker.exists()
    # a pickled object array in place of cached features or a text bank: recomputed, never unpickled
    rec = run(
        RunSpec(
            dataset="synthetic",
            method="zeroshot",
            backbone="parbench-tiny",
            overrides=FAST,
            out=str(tmp_path / "runs"),
            quiet=True,
        )
    )
    from parbench.settings import cache_dir

    for f in [*(cache_dir() / "text").glob("*.pt"), *(cache_dir() / "features").glob("*.npy")]:
        with open(f, "wb") as fh:
            pickle.dump(np.array([_Payload(marker)], dtype=object), fh)
    again = run(
        RunSpec(
            dataset="synthetic",
            method="zeroshot",
            backbone="parbench-tiny",
            seed=0,
            out=str(tmp_path / "b"),
            overrides=FAST,
            quiet=True,
        )
    )
    assert again["metrics"] == rec["metrics"] and not marker.exists()


# ---------------------------------------------------------------------------------------------- interrupts
@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_exits_with_resume_hint_and_resumes(tmp_path, sig, code):
    over = {**FAST, "epochs": 6, "limit": 96}
    out = tmp_path / "runs"
    proc = processes.start([*RUN, "--out", str(out), *_sets(over)])
    log = processes.wait_for_epochs(proc, out, 2)
    proc.send_signal(sig)
    _, err = proc.communicate()
    assert proc.returncode == code, err
    assert "interrupted; resume with: parbench run" in err and err.rstrip().endswith("--resume")
    assert "Traceback" not in err and not (log.parent / "record.json").exists()
    assert (log.parent / "last.pt").is_file()
    resumed = run(
        RunSpec(
            dataset="synthetic",
            method="finetune",
            backbone="parbench-tiny",
            out=str(out),
            overrides=over,
            resume=True,
            quiet=True,
        )
    )
    straight = run(
        RunSpec(
            dataset="synthetic",
            method="finetune",
            backbone="parbench-tiny",
            out=str(tmp_path / "s"),
            overrides=over,
            quiet=True,
        )
    )
    assert resumed["metrics"] == straight["metrics"]


# ---------------------------------------------------------------------------------------------- nothing lost
def test_interrupted_run_is_never_cleared_and_finished_run_is_reported(tmp_path):
    spec = dict(
        dataset="synthetic",
        method="finetune",
        backbone="parbench-tiny",
        overrides=FAST,
        out=str(tmp_path / "runs"),
        quiet=True,
    )
    rec = run(RunSpec(**spec))
    run_dir = Path(rec["run_dir"])
    log = (run_dir / "log.jsonl").read_text()
    again = run(RunSpec(**spec, resume=True))  # --resume of a finished run: reported, not retrained
    assert again["reused"] and again["metrics"] == rec["metrics"]
    assert (run_dir / "log.jsonl").read_text() == log  # no duplicated lines
    # an interrupted run (last.pt, no record) is refused without --resume, and left as it was
    (run_dir / "record.json").unlink()
    (run_dir / "last.pt").write_bytes(b"checkpoint of epoch 1")
    with pytest.raises(ParbenchError, match="--resume"):
        run(RunSpec(**spec))
    assert (run_dir / "last.pt").read_bytes() == b"checkpoint of epoch 1" and (run_dir / "log.jsonl").read_text() == log


def test_a_failed_attempt_is_moved_aside_not_deleted(tmp_path):
    spec = dict(
        dataset="synthetic", method="finetune", backbone="parbench-tiny", out=str(tmp_path / "runs"), quiet=True
    )
    with pytest.raises(ParbenchError, match="finite loss"):
        run(RunSpec(overrides={**FAST, "lr": 1e10}, **spec))
    run_dir = next((tmp_path / "runs").iterdir())
    failed = json.loads((run_dir / "failed.json").read_text())
    assert failed["status"] == "failed" and failed["failed_epoch"] == 1
    with pytest.raises(ParbenchError):  # the same identity fails again; its first attempt is kept
        run(RunSpec(overrides={**FAST, "lr": 1e10}, **spec))
    kept = list(run_dir.glob("attempt-*/failed.json"))
    assert len(kept) == 1 and (run_dir / "failed.json").is_file()


# ---------------------------------------------------------------------------------------------- divergence
def test_divergence_stops_the_run_and_is_stored_as_failed(tmp_path):
    store = tmp_path / "store.sqlite"
    code, _, err = cli(*RUN, "--out", tmp_path / "runs", "--store", store, *_sets({**FAST, "lr": 1e10}))
    one_line_error(code, err, "finite loss", "epoch 1", "step")
    from parbench.store import Store

    s = Store(store, create=False)
    assert s.records() == [] and [r["status"] for r in s.records(status=None)] == ["failed"]
    page = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "rep"), "--include-smoke"])
    assert page.exit_code == 0, page.output
    html = (tmp_path / "rep" / "index.html").read_text()
    assert 'id="failed"' in html and "50.00" not in html


@pytest.mark.parametrize(
    "labels,probs,extra,needle,culprit",
    [
        ([[1, 0], [0, 1]], [[0.9, np.nan], [0.2, 0.8]], [], "NaN", "p.npy: "),
        ([[1, 0], [0, 1]], [[0.9, np.inf], [0.2, 0.8]], [], "NaN or infinite", "p.npy: "),
        ([[1, 0], [0, 1]], [[3.2, -1.0], [0.2, 0.8]], [], "[0, 1]", "p.npy: "),
        ([[2, 0], [0, 1]], [[0.9, 0.1], [0.2, 0.8]], [], "0, 1 and 255", "l.npy: "),
        ([[-1, 0], [0, 1]], [[0.9, 0.1], [0.2, 0.8]], [], "found -1", "l.npy: "),
        ([[7, 0], [0, 1]], [[0.9, 0.1], [0.2, 0.8]], [], "found 7", "l.npy: "),
        ([[0.3, 0], [0, 1]], [[0.9, 0.1], [0.2, 0.8]], [], "found 0.3", "l.npy: "),
        (np.zeros((0, 3)), np.zeros((0, 3)), [], "at least one sample", "l.npy and "),
        ([[1, 0]], [[0.9, 0.1], [0.2, 0.8]], [], "same shape", "l.npy and "),
        ([[1, 0], [0, 1]], [[0.9, 0.1], [0.2, 0.8]], ["--threshold", "nan"], "threshold", "threshold"),
        ([[1, 0], [0, 1]], [[0.9, 0.1], [0.2, 0.8]], ["--threshold", "1.5"], "threshold", "threshold"),
    ],
)  # fmt: skip
def test_score_validates_its_arrays_and_names_the_file(tmp_path, labels, probs, extra, needle, culprit):
    np.save(tmp_path / "l.npy", np.asarray(labels))
    np.save(tmp_path / "p.npy", np.asarray(probs, dtype=float))
    code, out, err = cli("score", "--labels", tmp_path / "l.npy", "--probs", tmp_path / "p.npy", "--json", *extra)
    one_line_error(code, err, needle)
    if culprit.endswith(".npy: "):  # the file to fix, as every other error names it
        assert err.startswith(f"error: {tmp_path / culprit}"), err
    elif culprit.endswith(" and "):  # both files, when the fault is between them
        assert f"{tmp_path / 'l.npy'} and {tmp_path / 'p.npy'}" in err, err
    assert out == ""


def test_score_refuses_an_object_array_without_numpy_advice(tmp_path):
    np.save(tmp_path / "l.npy", np.array([[1, 0]]))
    np.save(tmp_path / "p.npy", np.array([[{"p": 0.9}, 0.1]], dtype=object), allow_pickle=True)
    code, _, err = cli("score", "--labels", tmp_path / "l.npy", "--probs", tmp_path / "p.npy")
    one_line_error(code, err, "p.npy", "objects", "never loads pickles")
    assert "allow_pickle" not in err and "unsafely" not in err


def test_score_refuses_an_npz(tmp_path):
    np.save(tmp_path / "l.npy", np.array([[1, 0]]))
    np.savez(tmp_path / "p.npz", probs=np.array([[0.9, 0.1]]))
    code, _, err = cli("score", "--labels", tmp_path / "l.npy", "--probs", tmp_path / "p.npz")
    one_line_error(code, err, "p.npz", ".npz archive")


# ---------------------------------------------------------------------------------------------- inputs
def _wider(tmp_path, box):
    root = tmp_path / "WIDER"
    originals.wider(root)
    doc = json.loads((root / "wider_attribute_trainval.json").read_text())
    doc["images"][0]["targets"][0]["bbox"] = box
    (root / "wider_attribute_trainval.json").write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize("box", [[0, 0, 0, 10], [1, 2, float("nan"), 4], ["1", "2", "3", "4"], [1, 2, 3]])
def test_bad_wider_boxes_are_errors_at_read(tmp_path, box):
    from parbench.data import load_dataset

    with pytest.raises(ParbenchError, match=r"images\[0\]\.targets\[0\]\.bbox"):
        load_dataset("WIDER", _wider(tmp_path, box))


def test_a_box_outside_its_image_names_the_annotation_target_and_image(tmp_path):
    from parbench.data import load_dataset, prepare_dataset
    from parbench.data.torchdata import load_image

    root = _wider(tmp_path, [1, 2, 3, 4])
    doc = json.loads((root / "wider_attribute_trainval.json").read_text())
    doc["images"][1]["targets"][0]["bbox"] = [5000, 5000, 40, 80]  # the second image's first person
    (root / "wider_attribute_trainval.json").write_text(json.dumps(doc))
    prepare_dataset("WIDER", root)  # the prepared copy keeps where each box is written
    ds = load_dataset("WIDER", root)
    i = len(doc["images"][0]["targets"])
    image = ds.image_paths[i]
    Path(image).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (100, 200)).save(image)
    with pytest.raises(ParbenchError) as e:
        load_image(ds, i)
    msg = str(e.value)
    assert msg.startswith(f"{root / 'wider_attribute_trainval.json'}: images[1].targets[0]"), msg
    assert "inside the 100x200 image" in msg and image in msg and "[5000.0, 5000.0, 40.0, 80.0]" in msg


def test_peta_with_too_few_columns(tmp_path):
    import scipy.io

    from parbench.data import load_dataset

    originals.peta(tmp_path, n=20)
    mat = scipy.io.loadmat(tmp_path / "PETA.mat")
    peta = mat["peta"][0, 0]
    short = {
        "data": peta[0][:, :20],
        "attribute": peta[1],
        "selected_attribute": peta[2],
        "partition_attribute": peta[3],
    }
    scipy.io.savemat(tmp_path / "PETA.mat", {"peta": short})
    with pytest.raises(ParbenchError, match="attribute columns"):
        load_dataset("PETA", tmp_path)


def test_sixteen_bit_png_keeps_its_grey_levels(tmp_path):
    from parbench.data.torchdata import to_rgb

    a = np.linspace(0, 65535, 64 * 32).reshape(64, 32).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as img:
        assert img.mode.startswith("I")
        rgb = np.asarray(to_rgb(img))
    assert rgb.min() == 0 and rgb.max() == 255 and 100 < rgb.mean() < 155  # not clipped to white


def test_decompression_bomb_is_one_line(tmp_path):
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")
    rec = run(
        RunSpec(
            dataset="synthetic",
            method="zeroshot",
            backbone="parbench-tiny",
            overrides=FAST,
            out=str(tmp_path / "runs"),
            quiet=True,
        )
    )
    code, _, err = cli("predict", "--run", rec["run_dir"], tmp_path / "bomb.png")
    one_line_error(code, err, "bomb.png", "DecompressionBomb")


# ---------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("setting,needle", [("epochs=-3", "epochs >= 0"), ("batch_size=-8", "batch_size >= 1"),
                                            ("batch_size=0", "batch_size >= 1"), ("lr=nan", "lr"),
                                            ("select_on=vall", "select_on one of")])  # fmt: skip
def test_nonsense_settings_stop_before_anything_runs(tmp_path, setting, needle):
    code, _, err = cli(*RUN, "--out", tmp_path / "runs", "--set", setting)
    one_line_error(code, err, needle)
    assert not (tmp_path / "runs").exists()


def test_suite_checks_names_and_seeds(tmp_path):
    bad = tmp_path / "a.toml"
    bad.write_text('name = "a"\ndatasets = ["synthetik"]\nmethods = ["zeroshot"]\nbackbones = ["parbench-tiny"]\n')
    code, _, err = cli("suite", bad, "--dry-run")
    one_line_error(code, err, "synthetik")
    bad.write_text('name = "a"\ndatasets = ["synthetic"]\nmethods = ["zeroshot"]\nseeds = ["zero"]\n')
    code, _, err = cli("suite", bad, "--dry-run")
    one_line_error(code, err, "seeds")


def test_bad_user_config_values(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[roots]\nPETA = 5\n")
    code, _, err = cli("datasets", "info", "PETA", env={"PARBENCH_CONFIG": str(cfg)})
    one_line_error(code, err, "config.toml", "[roots] PETA")
    cfg.write_text("roots = 3\n")
    code, _, err = cli("datasets", "info", "PETA", env={"PARBENCH_CONFIG": str(cfg)})
    one_line_error(code, err, "[roots]")


# ---------------------------------------------------------------------------------------------- environment
def test_corrupt_store_and_merge_source(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    code, _, err = cli("runs", "list", "--store", bad)
    one_line_error(code, err, "bad.sqlite", "not a database")
    code, _, err = cli("store", "merge", tmp_path / "all.sqlite", bad)
    one_line_error(code, err, "bad.sqlite")
    code, _, err = cli(*RUN, "--out", tmp_path / "runs", "--store", bad, *_sets(FAST))
    one_line_error(code, err, "bad.sqlite")
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_mistyped_store_creates_nothing(tmp_path):
    for args in (
        ("runs", "export", "--store", tmp_path / "typo.sqlite"),
        ("runs", "list", "--store", tmp_path / "typo.sqlite"),
        ("store", "merge", tmp_path / "all.sqlite", tmp_path / "typo.sqlite"),
    ):
        code, _, err = cli(*args)
        one_line_error(code, err, "typo.sqlite", "no such file")
    assert not (tmp_path / "typo.sqlite").exists()


def test_corrupt_last_pt_on_resume(tmp_path):
    out = tmp_path / "runs"
    rec = run(
        RunSpec(
            dataset="synthetic", method="finetune", backbone="parbench-tiny", overrides=FAST, out=str(out), quiet=True
        )
    )
    run_dir = Path(rec["run_dir"])
    (run_dir / "record.json").unlink()
    (run_dir / "last.pt").write_bytes(b"\x00" * 100)
    code, _, err = cli(*RUN, "--out", out, *_sets(FAST), "--resume")
    one_line_error(code, err, "last.pt", "resume checkpoint")


def _raw_row(store_path, record: dict) -> None:
    """A run row as another tool (or an older parbench) writes it: the runs table, none of parbench's keys."""
    import sqlite3

    con = sqlite3.connect(store_path)
    con.execute(
        "INSERT INTO runs (run_id, dataset, method, record) VALUES (?, ?, ?, ?)",
        (record["run_id"], record["dataset"], record["method"], json.dumps(record)),
    )
    con.commit()
    con.close()


def test_report_skips_and_names_a_row_it_cannot_read(tmp_path):
    from tests.test_store_report import _store_with_runs

    store = _store_with_runs(tmp_path)
    _raw_row(store.path, {"run_id": "foreign-1", "dataset": "synthetic", "method": "mine"})
    code, out, err = cli("report", "--store", store.path, "--out", tmp_path / "rep")
    assert code == 0 and "Traceback" not in err, err
    assert f"{store.path}: skipped run foreign-1: its record lacks backbone, seed" in err
    page = (tmp_path / "rep" / "index.html").read_text()
    assert 'id="skipped"' in page and "foreign-1" in page and 'data-method="promptpar"' in page
    target = tmp_path / "merged.sqlite"
    code, out, err = cli("store", "merge", target, store.path)
    assert code == 0 and "skipped run foreign-1" in err and "merged 12 runs" in out, err


def test_report_names_cross_and_robust_records_whose_run_is_gone_and_merge_keeps_their_predictions(tmp_path):
    import numpy as np

    from parbench.store import Store
    from tests.test_store_report import _store_with_runs

    store = _store_with_runs(tmp_path)
    for kind in ("cross", "robust"):
        store.add_derived({"id": f"gone@{kind}", "kind": kind, "run_id": "gone-run", "run_key": "k"})
    code, _, err = cli("report", "--store", store.path, "--out", tmp_path / "rep")
    assert code == 0, err
    for kind in ("cross", "robust"):
        assert f"skipped {kind} record gone@{kind}: its run gone-run is not in the store" in err
    page = (tmp_path / "rep" / "index.html").read_text()
    assert 'id="skipped"' in page and "gone@robust" in page
    # a merge never replaces a derived record holding predictions with a copy that has none
    rich, poor = Store(tmp_path / "rich.sqlite"), Store(tmp_path / "poor.sqlite")
    rec = {"id": "r@x", "kind": "cross", "run_id": "r", "run_key": "k"}
    probs, labels = np.full((3, 2), 0.25, np.float32), np.ones((3, 2), np.uint8)
    rich.add_derived(rec, probs, labels)
    poor.add_derived({**rec, "note": "a copy that kept no predictions"})
    rich.merge_from(poor.path)
    got = rich.derived_predictions("r@x")
    assert got is not None and np.array_equal(got[0], probs) and rich.derived("cross")[0]["note"]


def test_report_of_a_store_with_only_unreadable_rows_is_one_line(tmp_path):
    from parbench.store import Store

    path = tmp_path / "s.sqlite"
    Store(path)
    _raw_row(path, {"run_id": "foreign-1", "dataset": "synthetic", "method": "mine"})
    code, _, err = cli("report", "--store", path, "--out", tmp_path / "rep")
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 1 and "Traceback" not in err and lines[-1].startswith("error:"), err
    assert str(path) in lines[-1] and "foreign-1" in lines[-1] and "lacks backbone" in lines[-1]


def test_report_out_naming_a_file(tmp_path):
    from tests.test_store_report import _store_with_runs

    store = _store_with_runs(tmp_path)
    (tmp_path / "file").write_text("x")
    code, _, err = cli("report", "--store", store.path, "--out", tmp_path / "file")
    one_line_error(code, err, "file", "a folder")
    code, _, err = cli("report", "--store", store.path, "--protocol", "foo")
    one_line_error(code, err, "--protocol", "'foo'")


def test_outputs_honour_the_umask(tmp_path):
    from parbench.atomic import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_long_error_paths_stay_on_one_line(tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / ("and-another-one-" * 6)
    code, _, err = cli("score", "--labels", deep / "labels.npy", "--probs", deep / "probs.npy")
    one_line_error(code, err, str(deep / "labels.npy"))


def test_promptpar_trains_when_the_last_batch_would_hold_one_sample(tmp_path):
    rec = run(
        RunSpec(
            dataset="synthetic",
            method="promptpar",
            backbone="parbench-tiny",
            out=str(tmp_path / "r"),
            overrides={**FAST, "limit": 33, "epochs": 1, "fusion_dim": 32, "fusion_heads": 2},
            quiet=True,
        )
    )
    assert rec["status"] == "finished"


@contextmanager
def _tmpfs(path: Path, size: str, readonly: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode != 0
    ):
        pytest.skip(
            "mounting a tmpfs needs root (CAP_SYS_ADMIN); as a normal user the read-only and full-disk "
            "cases cannot be staged (root bypasses file permissions, so chmod would not do)"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_out_and_store_fail_before_training(tmp_path):
    with _tmpfs(tmp_path / "ro", "1m", readonly=True) as ro:
        code, _, err = cli(*RUN, "--out", ro / "runs", *_sets(FAST))
        one_line_error(code, err, str(ro), "writable")
    with _tmpfs(tmp_path / "rw", "8m") as rw:
        from parbench.store import Store

        Store(rw / "store.sqlite")
        subprocess.run(["mount", "-o", "remount,ro", str(rw)], check=True)
        code, _, err = cli(*RUN, "--out", tmp_path / "runs", "--store", rw / "store.sqlite", *_sets(FAST))
        one_line_error(code, err, "store.sqlite", "writable")
        assert not (tmp_path / "runs").exists()


def test_full_disk_is_one_line(tmp_path):
    with _tmpfs(tmp_path / "small", "96k") as small:
        code, _, err = cli(*RUN, "--out", small / "runs", *_sets(FAST))
        one_line_error(code, err, "No space left")
    shutil.rmtree(tmp_path / "small", ignore_errors=True)


def test_missing_images_and_bad_seeds_stop_before_training(tmp_path):
    from tests.test_identity import _peta

    root = _peta(tmp_path / "PETA", n=60)
    (root / "images" / "00007.png").unlink()
    code, _, err = cli(
        "run",
        "--dataset",
        "PETA",
        "--root",
        root,
        "--method",
        "linear-probe",
        "--backbone",
        "parbench-tiny",
        "--out",
        tmp_path / "runs",
        *_sets({**FAST, "limit": 0}),
    )
    one_line_error(code, err, "missing", "00007.png")
    code, _, err = cli(*RUN, "--out", tmp_path / "runs", "--seed", "-1")
    one_line_error(code, err, "--seed")


def test_robust_refuses_settings_it_would_ignore_and_an_empty_plan(tmp_path):
    from parbench.engine.run import RunSpec, run

    over = {"limit": 16, "epochs": 1, "bootstrap": 0}
    spec = RunSpec("synthetic", "linear-probe", backbone="parbench-tiny", overrides=over, out=str(tmp_path / "runs"))
    rec = run(spec)
    folder = rec["run_dir"]
    code, _, err = cli("robust", folder, "--set", "lr=1", "--corruptions", "contrast", "--attacks", "none")
    one_line_error(code, err, "--set", "only settings that change no number", "found lr")
    code, _, err = cli("robust", folder, "--set", "eval_batch_size=abc", "--corruptions", "contrast")
    one_line_error(code, err, "eval_batch_size as int", "'abc'")
    code, _, err = cli("robust", folder, "--corruptions", "none", "--attacks", "none")
    one_line_error(code, err, "at least one corruption or attack", "none of either")
    code, out, err = cli(
        "robust",
        folder,
        "--set",
        "eval_batch_size=4",
        "--corruptions",
        "contrast",
        "--severities",
        "1",
        "--attacks",
        "none",
        "--json",
    )
    assert code == 0, err
    assert len(json.loads(out)[folder]["records"]) == 1


def test_methods_info_takes_the_methods_own_backbone_and_datasets_info_the_cards_root(tmp_path):
    code, out, err = cli("methods", "info", "vtb", "--dataset", "PETA", "--json")
    assert code == 0, err
    assert json.loads(out)["backbone"] == "timm:vit_base_patch16_224" and json.loads(out)["total_params"] == 86365545
    code, out, err = cli("methods", "info", "strong-baseline", "--dataset", "PETA", "--json")
    assert code == 0 and json.loads(out)["total_params"] == 23579747, err
    (tmp_path / "t.csv").write_text("image,split,hat\na.png,train,1\nb.png,train,0\nc.png,test,0\n")
    card = tmp_path / "mine.toml"
    card.write_text(
        'name = "mine"\nversion = 1\nreader = "table"\ndescription = "d"\nsource_files = ["t.csv"]\nroot = "."\n'
        '[splits]\ntrain = 2\n[[attributes]]\nname = "hat"\ngroup = "head"\npositive = "a hat"\nnegative = "no hat"\n'
    )
    code, out, err = cli("datasets", "info", card, "--json")
    assert code == 0, err
    assert json.loads(out)["splits"] == {"test": 1, "train": 2}  # read from the card's own root


def test_fault_pass_robust_export_and_eval_on(tmp_path):
    """This session's pass over the commands added since the last one: each a line naming what to fix."""
    over = {"limit": 16, "epochs": 1, "bootstrap": 0}
    spec = RunSpec("synthetic", "linear-probe", backbone="parbench-tiny", overrides=over, out=str(tmp_path / "runs"))
    folder = run(spec)["run_dir"]
    cases = [
        (["robust", folder, "--severities", "abc"], ["--severities", "'abc'"]),
        (["robust", folder, "--steps", "0", "--attacks", "pgd", "--corruptions", "none"], ["--steps", "found 0"]),
        (["export", folder, "--format", "onnx", "-o", tmp_path], ["a file path for the exported model", "a folder"]),
        (["export", folder, "--format", "torchscript", "-o", tmp_path / "m.onnx"], ["not ending in .onnx"]),
        ([*RUN, "--eval-on", "synthtic-zs"], ["--eval-on: a registered dataset", "'synthtic-zs'", "synthetic-zs"]),
    ]
    for args, needles in cases:
        code, _, err = cli(*args)
        one_line_error(code, err, *needles)


@pytest.mark.parametrize(
    "table,needles",
    [
        ('[robust]\ncorruptions = ["fogg"]\n', ["[robust] corruptions: names among", "fogg"]),
        ('[robust]\nsteps = 0\nattacks = ["pgd"]\n', ["[robust] steps: at least 1 PGD step"]),
        ('[eval_on]\nsynthetic = ["nosuch"]\n', ["[eval_on] synthetic: a registered dataset", "'nosuch'"]),
    ],
)
def test_a_suites_robust_and_eval_on_tables_are_checked_before_anything_runs(tmp_path, table, needles):
    suite = tmp_path / "s.toml"
    suite.write_text('datasets = ["synthetic"]\nmethods = ["linear-probe"]\nbackbones = ["parbench-tiny"]\n' + table)
    code, _, err = cli("suite", suite, "--dry-run")
    one_line_error(code, err, "s.toml", *needles)
