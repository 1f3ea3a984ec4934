"""``diffuse integrate`` and ``diffuse correct`` through typer's CliRunner, on the session's cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app

DATA = Path(__file__).parent / "data"
CUBIC = DATA / "cubic"


def run(*args: str | Path):
    # a wide terminal, so rich does not wrap option names in the help panels
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def integrate_args(cluster: str, out: Path, *extra):
    return [
        "integrate",
        CUBIC / "geometry.nxs",
        CUBIC / "data.nxs",
        "--mask",
        CUBIC / "mask.nxs",
        "--subdivide",
        "3",
        "2",
        "5",
        "--outfile",
        out,
        "--cluster",
        cluster,
        *extra,
    ]


def test_top_level_help():
    result = run("--help")
    assert result.exit_code == 0
    assert "integrate" in result.output and "correct" in result.output


def test_integrate_help_lists_options():
    result = run("integrate", "--help")
    assert result.exit_code == 0
    for option in (
        "--mask",
        "--subdivide",
        "--max-spread",
        "--exposure-time",
        "--outfile",
        "--parquet",
        "--overwrite",
        "--cluster",
        "--quiet",
    ):
        assert option in result.output, option
    assert "mdx2.integrate" in result.output


def test_correct_help_lists_options():
    result = run("correct", "--help")
    assert result.exit_code == 0
    for option in (
        "--background",
        "--p1",
        "--lorentz",
        "--no-polarization",
        "--no-attenuation",
        "--no-efficiency",
        "--outfile",
        "--parquet",
        "--overwrite",
        "--cluster",
    ):
        assert option in result.output, option


def test_integrate_then_correct_equal_mdx2(scheduler_address, tmp_path):
    out = tmp_path / "integrated.nxs"
    result = run(*integrate_args(scheduler_address, out, "--parquet", tmp_path / "integrated.parquet"))
    assert result.exit_code == 0, result.output
    assert "integrated" in result.stdout and str(out) in result.stdout
    ours, ref = pipeline.read_table(out), pipeline.read_table(CUBIC / "mdx2/integrated_325.nxs")
    for c in ("h", "k", "l", "n", "counts", "pixels", "phi", "iy", "ix", "seconds"):
        np.testing.assert_array_equal(ours[c].to_numpy(), ref[c].to_numpy(), err_msg=c)
    assert len(pipeline.read_table(tmp_path / "integrated.parquet")) == len(ref)

    corrected = tmp_path / "corrected.nxs"
    result = run(
        "correct",
        CUBIC / "geometry.nxs",
        tmp_path / "integrated.parquet",
        "--background",
        CUBIC / "bkg_data_binned.nxs",
        "--outfile",
        corrected,
        "--cluster",
        scheduler_address,
    )
    assert result.exit_code == 0, result.output
    assert "corrected" in result.stdout
    ours, ref = pipeline.read_table(corrected), pipeline.read_table(CUBIC / "mdx2/corrected_325_bkg.nxs")
    np.testing.assert_array_equal(ours["op"].to_numpy(), ref["op"].to_numpy())
    np.testing.assert_allclose(ours["intensity"], ref["intensity"], rtol=1e-4, equal_nan=True)


def test_quiet_prints_nothing(scheduler_address, tmp_path):
    result = run(*integrate_args(scheduler_address, tmp_path / "i.nxs", "--quiet"))
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr == ""


def test_correct_flags_reach_the_computation(scheduler_address, tmp_path):
    """--lorentz --no-polarization as mdx2.correct --lorentz --nopolarization (golden mono case)."""
    mono = DATA / "mono"
    out = tmp_path / "c.nxs"
    result = run(
        "correct",
        mono / "geometry.nxs",
        mono / "mdx2/integrated_222.nxs",
        "--lorentz",
        "--no-polarization",
        "--outfile",
        out,
        "--cluster",
        scheduler_address,
        "-q",
    )
    assert result.exit_code == 0, result.output
    ref = pipeline.read_table(mono / "mdx2/corrected_222_lorentz.nxs")
    np.testing.assert_allclose(
        pipeline.read_table(out)["intensity"], ref["intensity"], rtol=1e-4, equal_nan=True
    )


@pytest.mark.parametrize(
    "args, code",
    [
        (["integrate"], 2),  # missing arguments: usage error
        (["integrate", "g.nxs", "d.nxs", "--subdivide", "1", "2"], 2),  # --subdivide takes 3 values
        (["integrate", "g.nxs", "d.nxs", "--no-such-option"], 2),
        (["integrate", "g.nxs", "d.nxs", "--max-spread", "wide"], 2),
        (["correct", "g.nxs"], 2),
        (["frobnicate"], 2),
    ],
)
def test_usage_errors_exit_2(args, code):
    result = run(*args)
    assert result.exit_code == code, result.output


def test_user_error_exits_1_with_one_line(scheduler_address, tmp_path):
    result = run(
        "integrate",
        tmp_path / "missing.nxs",
        CUBIC / "data.nxs",
        "--outfile",
        tmp_path / "i.nxs",
        "--cluster",
        scheduler_address,
        "-q",
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.nxs" in lines[0]
    assert "Traceback" not in result.output


def test_existing_output_needs_overwrite(scheduler_address, tmp_path):
    out = tmp_path / "i.nxs"
    out.write_bytes(b"precious")
    result = run(*integrate_args(scheduler_address, out, "-q"))
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    assert out.read_bytes() == b"precious"
    result = run(*integrate_args(scheduler_address, out, "-q", "--overwrite"))
    assert result.exit_code == 0, result.output
    assert len(pipeline.read_table(out)) == len(pipeline.read_table(CUBIC / "mdx2/integrated_325.nxs"))


def test_help_into_a_closed_pipe_is_quiet():
    """`diffuse integrate --help | head -1`: the reader goes away; no traceback on stderr."""
    import subprocess
    import sys

    run = subprocess.run(
        f"'{sys.executable}' -m pipeline integrate --help | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in run.stderr, run.stderr
