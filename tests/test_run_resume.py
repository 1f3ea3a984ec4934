"""``diffuse run --resume``: the steps an interrupted run finished are skipped, the rest run again."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from pipeline.api.run import run_pipeline
from pipeline.api.runlog import read_run_log
from pipeline.api.runstate import STATE_FILE
from pipeline.cli import app
from pipeline.errors import InputError

DATA = Path(__file__).parent / "data"
CUBIC = DATA / "cubic"
pytestmark = pytest.mark.skipif(not (CUBIC / "data.nxs").exists(), reason="golden fixtures missing")

STEPS = ["integrate", "qc_integrated", "correct", "qc_corrected", "scale", "merge", "map"]


def _run(out, **options):
    return run_pipeline(
        CUBIC / "geometry.nxs",
        CUBIC / "data.nxs",
        out,
        mask=CUBIC / "mask.nxs",
        background=CUBIC / "bkg_data_binned.nxs",
        subdivide=(1, 1, 1),
        fit_scales=True,
        map_limits=(-3, 3, -3, 3, 0, 0),
        scan_images=False,
        cluster="local",
        **options,
    )


def _stamps(out: Path) -> dict[str, int]:
    names = ["integrated.nxs", "corrected.nxs", "scales.nxs", "merged.nxs", "map.nxs", "map.png"]
    return {name: (out / name).stat().st_mtime_ns for name in names}


def _table(path) -> dict:
    with h5py.File(path, "r") as f:
        group = f["/entry/hkl_table"]
        return {k: group[k][()].tobytes() for k in group}


def test_resume_skips_what_finished_and_goes_on_from_the_interrupted_step(tmp_path, monkeypatch):
    import pipeline.api.merge as merge_module

    out = tmp_path / "run"
    first = _run(out)
    assert first.skipped == []
    stamps = _stamps(out)

    again = _run(out, resume=True)  # everything was done: nothing runs, nothing is rewritten
    assert again.skipped == STEPS
    assert _stamps(out) == stamps
    assert again.integrate == first.integrate and again.correct.rows == first.correct.rows
    assert again.verdict == first.verdict
    log = read_run_log(out / "run.log")
    assert log["integrate.status"] == "done before: skipped (--resume)" and log["run.skipped"] == STEPS

    # An option of correct changes and the run is killed in merge: integrate is kept, correct,
    # its QC and scale are redone, merge had started.
    real_merge, calls = merge_module.merge, []

    def killed(*args, **kwargs):
        calls.append(kwargs["resume"])
        raise KeyboardInterrupt

    monkeypatch.setattr(merge_module, "merge", killed)
    with pytest.raises(KeyboardInterrupt):
        _run(out, resume=True, lorentz=True)
    assert calls == [False]  # merge's inputs changed since it last ran: its work is not reused
    state = json.loads((out / STATE_FILE).read_text())
    assert "merge" in state["started"] and "merge" not in state["finished"]
    assert (out / "integrated.nxs").stat().st_mtime_ns == stamps["integrated.nxs"]
    assert (out / "corrected.nxs").stat().st_mtime_ns != stamps["corrected.nxs"]

    def spy(*args, **kwargs):
        calls.append(kwargs["resume"])
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(merge_module, "merge", spy)
    last = _run(out, resume=True, lorentz=True)
    assert last.skipped == ["integrate", "qc_integrated", "correct", "qc_corrected", "scale"]
    assert calls == [False, True]  # the interrupted merge goes on from its finished tasks
    merged = tmp_path / "merged.nxs"
    real_merge(out / "corrected.parquet", out / "scales.nxs", outfile=merged)
    assert _table(out / "merged.nxs") == _table(merged)

    # An output touched by hand is not trusted: its step runs again, and the steps after it
    (out / "scales.nxs").touch()
    redo = _run(out, resume=True, lorentz=True)
    assert redo.skipped == ["integrate", "qc_integrated", "correct", "qc_corrected"]


def test_resume_refuses_outputs_it_did_not_record(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "integrated.nxs").write_text("someone else's file")
    with pytest.raises(InputError, match="already exists"):
        _run(out, resume=True)
    assert (out / "integrated.nxs").read_text() == "someone else's file"


def test_cli_run_resume_says_what_it_skipped(tmp_path):
    out = tmp_path / "run"
    args = ["run", str(CUBIC / "geometry.nxs"), str(CUBIC / "data.nxs"), "--outdir", str(out),
            "--subdivide", "1", "1", "1", "--no-scan-images", "--cluster", "local"]  # fmt: skip
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert "done before, skipped (--resume): integrate, qc_integrated, correct, qc_corrected" in again.output
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0 and "--overwrite" in refused.output
