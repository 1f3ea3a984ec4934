"""Run logs (pipeline.api.runlog), ``--log-file`` and ``--performance-report``, and ``diffuse run``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.api.run import run_pipeline
from pipeline.api.runlog import RunLog, read_run_log, run_step
from pipeline.cli import app
from pipeline.errors import InputError
from pipeline.io.tables import read_table
from pipeline.qc.inputs import discover_inputs

DATA = Path(__file__).parent / "data"
CUBIC = DATA / "cubic"
needs_goldens = pytest.mark.skipif(not (CUBIC / "data.nxs").exists(), reason="golden fixtures missing")


@dataclass(frozen=True)
class Params:
    data: str
    subdivide: tuple = (1, 1, 1)
    outfile: str | None = None
    overwrite: bool = False


@dataclass
class Result:
    rows: int
    seconds: dict


def test_run_log_records_parameters_timings_and_memory(tmp_path):
    path = tmp_path / "x.log"
    with (
        RunLog(path, command="diffuse test") as runlog,
        runlog.step("integrate", Params("data.nxs", subdivide=(2, 2, 2))) as st,
    ):
        logging.getLogger("pipeline.test").info("a message from the library")
        st.result = Result(rows=5, seconds={"map": 1.5, "total": 2.0})
    parsed = read_run_log(path)
    assert parsed["command"] == "diffuse test"
    assert parsed["integrate.parameters"] == {"data": "data.nxs", "subdivide": [2, 2, 2]}
    assert parsed["integrate.inputs"]["data"] == str(Path("data.nxs").resolve())
    assert parsed["integrate.timings_s"] == {"map": 1.5, "total": 2.0}
    assert parsed["integrate.result"] == {"rows": 5}
    assert parsed["integrate.peak_memory_mb"]["client"] > 0
    assert parsed["integrate.status"] == "ok"
    assert {"numpy", "dask", "h5py", "diffuse-pipeline", "python"} <= set(parsed["versions"])
    assert "a message from the library" in path.read_text()
    assert read_run_log(tmp_path / "missing.log") is None


def test_user_error_leaves_no_log_but_a_crash_keeps_it(tmp_path):
    with pytest.raises(InputError), run_step("integrate", Params("d.nxs"), log_file=tmp_path / "a.log"):
        raise InputError("bad input")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), run_step("integrate", Params("d.nxs"), log_file=tmp_path / "b.log"):
        raise RuntimeError("worker died")
    assert read_run_log(tmp_path / "b.log")["integrate.status"].startswith("error: RuntimeError: worker died")


def test_refused_overwrite_keeps_the_previous_log(tmp_path):
    (tmp_path / "out.nxs").write_text("previous output")
    (tmp_path / "out.nxs.log").write_text("previous log")
    with (
        pytest.raises(InputError),
        run_step(
            "integrate", Params("d.nxs", outfile=str(tmp_path / "out.nxs")), log_file=tmp_path / "out.nxs.log"
        ),
    ):
        raise InputError("exists")
    assert (tmp_path / "out.nxs.log").read_text() == "previous log"


def integrate_args(cluster: str, out: Path, *extra) -> list[str]:
    args = ["integrate", CUBIC / "geometry.nxs", CUBIC / "data.nxs", "--mask", CUBIC / "mask.nxs"]
    args += ["--subdivide", "3", "2", "5", "--outfile", out, "--cluster", cluster, "--quiet", *extra]
    return [str(a) for a in args]


@needs_goldens
def test_cli_integrate_writes_a_run_log(scheduler_address, tmp_path):
    out = tmp_path / "integrated.nxs"
    result = CliRunner().invoke(app, integrate_args(scheduler_address, out))
    assert result.exit_code == 0, result.output
    parsed = read_run_log(tmp_path / "integrated.nxs.log")
    assert parsed["integrate.parameters"]["subdivide"] == [3, 2, 5]
    assert {"map", "reduce", "export", "total"} <= set(parsed["integrate.timings_s"])
    assert parsed["integrate.result"]["rows"] == len(read_table(out))
    assert len(parsed["integrate.peak_memory_mb"]["workers"]) == 2
    assert parsed["integrate.cluster"]["scheduler"] == scheduler_address
    found = discover_inputs(out, "integrated")  # what diffuse qc reads back from the log
    assert (found.data, found.masks) == (str(CUBIC / "data.nxs"), [str(CUBIC / "mask.nxs")])
    assert found.pixels_used == parsed["integrate.result"]["pixels_used"]


@needs_goldens
@pytest.mark.slow
def test_cli_integrate_writes_performance_report(scheduler_address, tmp_path):
    pytest.importorskip("bokeh")
    args = integrate_args(
        scheduler_address, tmp_path / "i.nxs", "--performance-report", tmp_path / "report.html"
    )
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "<html" in (tmp_path / "report.html").read_text().lower()


@needs_goldens
@pytest.mark.slow
def test_run_pipeline_on_one_cluster(client, tmp_path):
    out = tmp_path / "run"
    result = run_pipeline(
        CUBIC / "geometry.nxs", CUBIC / "data.nxs", out, mask=CUBIC / "mask.nxs",
        background=CUBIC / "bkg_data_binned.nxs", subdivide=(3, 2, 5), client=client,
    )  # fmt: skip
    for name in ("integrated.nxs", "integrated.parquet", "corrected.nxs", "corrected.parquet", "run.log"):
        assert (out / name).exists(), name
    assert read_table(out / "corrected.nxs").equals(read_table(out / "corrected.parquet"))
    parsed = read_run_log(out / "run.log")
    for step in ("integrate", "qc_integrated", "correct", "qc_corrected"):
        assert parsed[f"{step}.status"] == "ok", step
    assert parsed["run.verdict"] == result.verdict == "WARN"  # the dataset's unmasked hot pixels
    truth = sorted(tuple(p) for p in json.loads((CUBIC / "dataset.json").read_text())["hot_pixels"])
    for kind in ("integrated", "corrected"):
        summary = json.loads((out / "qc" / kind / "qc.json").read_text())
        assert sorted((p["iy"], p["ix"]) for p in summary["hot_pixels"]["image_pixels"]) == truth
        assert summary["hot_pixels"]["n_candidates"] > 0
        assert (out / "qc" / kind / "qc.html").exists()
    assert result.integrate.pixels_used < result.integrate.pixels_read
    found = discover_inputs(out / "corrected.nxs", "corrected")  # via correct's parquet input
    assert found.data == str(CUBIC / "data.nxs") and found.background == str(CUBIC / "bkg_data_binned.nxs")


@needs_goldens
def test_run_whole_chain_equals_the_steps_and_mdx2(tmp_path):
    """``run --scale --reintegrate --map-limits``: merged.nxs is ``merge`` of the run's corrected table,
    reintegrated.nxs is mdx2.reintegrate's (golden), map.nxs is ``make_map`` of that."""
    import h5py
    import numpy as np

    from pipeline.api.map import make_map
    from pipeline.api.merge import merge

    scales = DATA / "reintegrate" / "cubic_scales.nxs"
    out = tmp_path / "run"
    result = run_pipeline(
        CUBIC / "geometry.nxs",
        CUBIC / "data.nxs",
        out,
        background=CUBIC / "bkg_data_binned.nxs",
        subdivide=(1, 1, 1),
        scale=scales,
        reintegrate=(3, 2, 5),
        map_limits=(-3, 3, -3, 3, 0, 0),
        scan_images=False,
        cluster="local",
    )
    assert result.outputs == ["merged.nxs", "reintegrated.nxs", "map.nxs", "map.png"]
    assert all((out / name).is_file() for name in result.outputs)

    def table(path, group="/entry/hkl_table"):
        with h5py.File(path, "r") as f:
            return {k: f[group][k][()] for k in f[group]}

    def same(a, b):
        assert sorted(a) == sorted(b)
        for k in a:
            assert a[k].tobytes() == b[k].tobytes(), k

    merge(out / "corrected.parquet", scales, outfile=tmp_path / "merged.nxs")
    same(table(out / "merged.nxs"), table(tmp_path / "merged.nxs"))
    ours, ref = (
        table(out / "reintegrated.nxs"),
        table(DATA / "reintegrate" / "cubic_325_scale_bkg_intensity.nxs"),
    )
    assert sorted(ours) == sorted(ref)
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=1.2e-7, equal_nan=True, err_msg=k)
    make_map(
        CUBIC / "geometry.nxs",
        out / "reintegrated.nxs",
        limits=(-3, 3, -3, 3, 0, 0),
        outfile=tmp_path / "map.nxs",
        png=False,
    )
    with h5py.File(out / "map.nxs") as a, h5py.File(tmp_path / "map.nxs") as b:
        assert a["/entry/intensity/signal"][()].tobytes() == b["/entry/intensity/signal"][()].tobytes()


def test_run_refuses_inconsistent_optional_steps(tmp_path):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="reintegrate needs scales"):
        run_pipeline(CUBIC / "geometry.nxs", CUBIC / "data.nxs", tmp_path / "o", reintegrate=(2, 2, 2))
    with pytest.raises(ConfigError, match="either scale"):
        run_pipeline(
            CUBIC / "geometry.nxs", CUBIC / "data.nxs", tmp_path / "o", scale="s.nxs", fit_scales=True
        )
    with pytest.raises(ConfigError, match="6 numbers"):
        run_pipeline(CUBIC / "geometry.nxs", CUBIC / "data.nxs", tmp_path / "o", map_limits=(1, 2))
    assert not (tmp_path / "o").exists()
