"""The published protocol, measured: `track_test` scores test after every epoch (never to select), the record's
`published_protocol` is the references' max-over-epochs reading of the same run, and the report sets it beside
the honest numbers."""

import numpy as np
import pytest

from parbench.engine.run import RunSpec, run
from parbench.report.render import render_report

FAST = {"limit": 48, "epochs": 3, "batch_size": 16, "eval_batch_size": 48, "bootstrap": 0, "track_test": True}


@pytest.mark.parametrize("method", ["linear-probe", "finetune"])  # cached features and images
def test_track_test_reads_the_same_run_as_the_references_do(tmp_path, method):
    rec = run(
        RunSpec(
            dataset="synthetic",
            method=method,
            backbone="parbench-tiny",
            overrides=FAST,
            out=str(tmp_path / "runs"),
            store=str(tmp_path / "s.sqlite"),
            quiet=True,
        )
    )
    hist = rec["history"]
    assert all("test" in e for e in hist) and rec["selected_on"] == "val"  # test is read, val still selects
    for proto in ("promptpar", "rethinking"):
        pub = rec["published_protocol"][proto]
        for m in ("ma", "acc", "prec", "rec", "f1"):
            series = [e["test"][proto][m] for e in hist]
            assert pub[m] == max(series) and hist[pub[f"{m}_epoch"] - 1]["test"][proto][m] == pub[m]
            assert pub[m] >= rec["metrics"][proto][m] - 1e-12
        # the honest number is the tracked test score of the selected epoch: one model, read two ways
        best = hist[rec["best_epoch"] - 1]["test"][proto]
        assert best["ma"] == pytest.approx(rec["metrics"][proto]["ma"], abs=1e-9)
    page = render_report(tmp_path / "s.sqlite", tmp_path / "rep", include_smoke=True).read_text()
    assert 'id="published-protocol-promptpar"' in page and "max_ma" in page


def test_without_track_test_nothing_is_read_and_the_identity_is_unchanged(tmp_path):
    over = {k: v for k, v in FAST.items() if k != "track_test"}
    spec = RunSpec(
        dataset="synthetic",
        method="linear-probe",
        backbone="parbench-tiny",
        overrides=over,
        out=str(tmp_path),
        quiet=True,
    )
    assert "track_test" not in spec.identity()["train"]
    rec = run(spec)
    assert rec["published_protocol"] is None and not any("test" in e for e in rec["history"])
    assert np.isfinite(rec["metrics"]["promptpar"]["ma"])
