"""One test per bad input: a clear one-line error naming the file (or option) and what is wrong, exit
status 1, and nothing left behind (no outfile, no parquet directory, no temporary or work files)."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.errors import ConfigError, InputError


@pytest.fixture
def cubic(dataset_copy):
    return dataset_copy("cubic")


@pytest.fixture
def out(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def snapshot(*dirs: Path) -> set[str]:
    return {str(p) for d in dirs for p in d.rglob("*")}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def integrate(scheduler, ds: Path, out: Path, *extra, geometry=None, data=None, mask="mask.nxs"):
    args = ["integrate", geometry or ds / "geometry.nxs", data or ds / "data.nxs"]
    if mask:
        args += ["--mask", ds / mask if isinstance(mask, str) else mask]
    args += ["--outfile", out / "integrated.nxs", "--parquet", out / "integrated.parquet"]
    return run(*args, "--cluster", scheduler, "--quiet", *extra)


def correct(scheduler, ds: Path, table: Path, out: Path, *extra):
    return run(
        "correct",
        ds / "geometry.nxs",
        table,
        "--outfile",
        out / "corrected.nxs",
        "--parquet",
        out / "corrected.parquet",
        "--cluster",
        scheduler,
        "--quiet",
        *extra,
    )


def assert_refused(result, before: set[str], dirs, *words: str):
    """Exit 1, exactly one stderr line 'error: ...' containing every word, and no new files in dirs."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert "Traceback" not in result.output
    assert snapshot(*dirs) == before, f"left behind: {sorted(snapshot(*dirs) - before)}"


def test_missing_geometry_file(scheduler_address, cubic, out):
    before = snapshot(cubic, out)
    result = integrate(scheduler_address, cubic, out, geometry=cubic / "nope.nxs")
    assert_refused(result, before, [cubic, out], "nope.nxs", "does not exist")


def test_missing_data_file(scheduler_address, cubic, out):
    (cubic / "data.nxs").unlink()
    before = snapshot(cubic, out)
    assert_refused(
        integrate(scheduler_address, cubic, out), before, [cubic, out], "data.nxs", "does not exist"
    )


def test_missing_mask_file(scheduler_address, cubic, out):
    before = snapshot(cubic, out)
    result = integrate(scheduler_address, cubic, out, mask="no_mask.nxs")
    assert_refused(result, before, [cubic, out], "no_mask.nxs", "does not exist")


def test_missing_background_file(scheduler_address, cubic, out):
    before = snapshot(cubic, out)
    table = cubic / "mdx2/integrated_325.nxs"
    result = correct(scheduler_address, cubic, table, out, "--background", cubic / "bkg_missing.nxs")
    assert_refused(result, before, [cubic, out], "bkg_missing.nxs", "does not exist")


def test_missing_integrated_table(scheduler_address, cubic, out):
    before = snapshot(cubic, out)
    result = correct(scheduler_address, cubic, cubic / "integrated_missing.nxs", out)
    assert_refused(result, before, [cubic, out], "integrated_missing.nxs", "does not exist")


def test_geometry_without_miller_index(scheduler_address, cubic, out):
    with h5py.File(cubic / "geometry.nxs", "r+") as f:
        del f["/entry/miller_index"]
    before = snapshot(cubic, out)
    result = integrate(scheduler_address, cubic, out)
    assert_refused(result, before, [cubic, out], "geometry.nxs", "/entry/miller_index")


def test_geometry_without_corrections_for_correct(scheduler_address, cubic, out):
    with h5py.File(cubic / "geometry.nxs", "r+") as f:
        del f["/entry/corrections"]
    before = snapshot(cubic, out)
    result = correct(scheduler_address, cubic, cubic / "mdx2/integrated_325.nxs", out)
    assert_refused(result, before, [cubic, out], "geometry.nxs", "/entry/corrections")


def test_data_file_that_is_not_hdf5(scheduler_address, cubic, out):
    (cubic / "data.nxs").write_text("not an HDF5 file\n")
    before = snapshot(cubic, out)
    assert_refused(
        integrate(scheduler_address, cubic, out), before, [cubic, out], "data.nxs", "not a readable"
    )


def test_virtual_source_missing(scheduler_address, cubic, out):
    (cubic / "datastore/data_1.nxs").unlink()
    before = snapshot(cubic, out)
    result = integrate(scheduler_address, cubic, out)
    assert_refused(result, before, [cubic, out], "data.nxs", "data_1.nxs", "not found")


def test_truncated_data_source(scheduler_address, cubic, out):
    source = cubic / "datastore/data_0.nxs"
    os.truncate(source, source.stat().st_size // 2)
    before = snapshot(cubic, out)
    result = integrate(scheduler_address, cubic, out)
    assert_refused(result, before, [cubic, out], "data_0.nxs", "truncated")


def test_mask_shape_disagrees_with_data(scheduler_address, cubic, out):
    with h5py.File(cubic / "mask.nxs", "r+") as f:
        mask = f["/entry/mask/signal"][()]
        del f["/entry/mask/signal"]
        f["/entry/mask/signal"] = mask[:, :-1, :]
    before = snapshot(cubic, out)
    result = integrate(scheduler_address, cubic, out)
    assert_refused(result, before, [cubic, out], "mask.nxs", "shape", str(tuple(mask.shape)))


def test_exposure_times_length_disagrees(scheduler_address, cubic, out):
    with h5py.File(cubic / "data.nxs", "r+") as f:
        times = f["/entry/image_series/exposure_times"][()]
        del f["/entry/image_series/exposure_times"]
        f["/entry/image_series/exposure_times"] = times[:-2]
    before = snapshot(cubic, out)
    result = integrate(scheduler_address, cubic, out)
    assert_refused(result, before, [cubic, out], "data.nxs", "exposure_times", f"{times.size - 2} values")


@pytest.mark.parametrize("subdivide", [("0", "1", "1"), ("2", "-3", "2")])
def test_subdivide_not_positive(scheduler_address, cubic, out, subdivide):
    before = snapshot(cubic, out)
    result = integrate(scheduler_address, cubic, out, "--subdivide", *subdivide)
    assert_refused(result, before, [cubic, out], "subdivide", ">= 1")


@pytest.mark.parametrize("spread", ["0", "-1.5", "nan"])
def test_max_spread_not_positive(scheduler_address, cubic, out, spread):
    before = snapshot(cubic, out)
    result = integrate(scheduler_address, cubic, out, "--max-spread", spread)
    assert_refused(result, before, [cubic, out], "max_spread", "> 0")


@pytest.mark.parametrize("existing", ["integrated.nxs", "integrated.parquet"])
def test_existing_integrate_output_refused_without_overwrite(scheduler_address, cubic, out, existing):
    target = out / existing
    if existing.endswith(".parquet"):
        target.mkdir()
        (target / "part-00000.parquet").write_bytes(b"old")
    else:
        target.write_bytes(b"old")
    before = snapshot(cubic, out)
    result = integrate(scheduler_address, cubic, out)
    assert_refused(result, before, [cubic, out], existing, "already exists", "--overwrite")
    assert integrate(scheduler_address, cubic, out, "--overwrite").exit_code == 0
    assert len(pipeline.read_table(out / "integrated.parquet")) == len(
        pipeline.read_table(out / "integrated.nxs")
    )


def test_existing_correct_output_refused_without_overwrite(scheduler_address, cubic, out):
    (out / "corrected.nxs").write_bytes(b"old")
    before = snapshot(cubic, out)
    result = correct(scheduler_address, cubic, cubic / "mdx2/integrated_111.nxs", out)
    assert_refused(result, before, [cubic, out], "corrected.nxs", "already exists", "--overwrite")
    assert (
        correct(scheduler_address, cubic, cubic / "mdx2/integrated_111.nxs", out, "--overwrite").exit_code
        == 0
    )


def test_zero_exposure_times_refused(scheduler_address, dataset_copy, out):
    zero = dataset_copy("zero")
    before = snapshot(zero, out)
    result = integrate(scheduler_address, zero, out, mask=None)
    assert_refused(
        result, before, [zero, out], "data.nxs", "exposure time is 0", "frames 0-7", "--exposure-time"
    )


def test_zero_exposure_times_with_exposure_time_runs(scheduler_address, dataset_copy, out):
    zero = dataset_copy("zero")
    result = integrate(
        scheduler_address, zero, out, "--subdivide", "2", "2", "2", "--exposure-time", "0.1", mask=None
    )
    assert result.exit_code == 0, result.output
    ours, ref = (
        pipeline.read_table(out / "integrated.nxs"),
        pipeline.read_table(zero / "mdx2/integrated_222.nxs"),
    )
    np.testing.assert_array_equal(ours["counts"].to_numpy(), ref["counts"].to_numpy())
    assert (ours["seconds"] > 0).all() and (ref["seconds"] == 0).all()


def test_correct_refuses_mdx2_table_with_zero_seconds(scheduler_address, dataset_copy, out):
    zero = dataset_copy("zero")
    before = snapshot(zero, out)
    result = correct(scheduler_address, zero, zero / "mdx2/integrated_222.nxs", out)
    assert_refused(result, before, [zero, out], "integrated_222.nxs", "'seconds' is 0", "--exposure-time")


@pytest.mark.parametrize("executor", ["threads", "cluster"])
def test_correct_refuses_table_with_non_finite_miller_index(executor, scheduler_address, cubic, out):
    table = cubic / "mdx2/integrated_325.nxs"
    with h5py.File(table, "r+") as f:
        f["/entry/hkl_table/k"][3] = np.nan
    before = snapshot(cubic, out)
    if executor == "threads":
        args = ["--outfile", out / "corrected.nxs", "--parquet", out / "corrected.parquet", "--quiet"]
        result = run("correct", cubic / "geometry.nxs", table, *args)
    else:
        result = correct(scheduler_address, cubic, table, out)
    assert_refused(result, before, [cubic, out], "integrated_325.nxs", "k x ndiv", "not finite")


def test_api_raises_typed_errors(client, tmp_path):
    """The library raises the same errors (InputError/ConfigError, both ValueErrors) for callers."""
    cubic = Path(__file__).parent / "data/cubic"
    with pytest.raises(InputError, match="does not exist"):
        pipeline.integrate(tmp_path / "g.nxs", cubic / "data.nxs", outfile=tmp_path / "i.nxs", client=client)
    with pytest.raises(ConfigError, match="subdivide"):
        pipeline.integrate(cubic / "geometry.nxs", cubic / "data.nxs", subdivide=(1, 0, 1), client=client)
    with pytest.raises(ValueError, match="max_spread"):
        pipeline.integrate(cubic / "geometry.nxs", cubic / "data.nxs", max_spread=0, client=client)
    assert list(tmp_path.iterdir()) == []


def test_mask_file_with_wrong_dtype(scheduler_address, cubic, out):
    with h5py.File(cubic / "mask.nxs", "r+") as f:
        shape = f["/entry/mask/signal"].shape
        del f["/entry/mask/signal"]
        f["/entry/mask/signal"] = np.zeros(shape, np.float32)
    before = snapshot(cubic, out)
    assert_refused(integrate(scheduler_address, cubic, out), before, [cubic, out], "mask.nxs", "dtype")


def test_corrupt_chunk_in_data_source(scheduler_address, cubic, out):
    """A damaged compressed chunk (file size intact) fails inside a worker task; still one clean line."""
    source = cubic / "datastore/data_1.nxs"
    raw = bytearray(source.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 4096] = bytes(4096)  # zeros over compressed pixel data
    source.write_bytes(bytes(raw))
    before = snapshot(cubic, out)
    result = integrate(scheduler_address, cubic, out)
    assert_refused(result, before, [cubic, out], "data.nxs", "cannot read image data", "corrupt")
