"""Arrays read from input files are checked for values that break the computation: the message names
the file, the dataset and the first bad index (one `error:` line, exit 1, no traceback)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import InputError
from pipeline.io.geometry import read_corrections, read_miller_grid
from pipeline.io.images import open_image_stack, open_masks
from pipeline.io.inputs import check_finite


def _poke(path, dataset, index, value):
    with h5py.File(path, "a") as f:
        a = f[dataset][()]
        a[index] = value
        f[dataset][...] = a


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _one_error_line(result):
    assert result.exit_code == 1, (result.output, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_nan_phi_names_file_dataset_and_frame(dataset_copy):
    """Was: IndexError: index -9223372036854775808 is out of bounds."""
    ds = dataset_copy("cubic")
    _poke(ds / "data.nxs", "/entry/image_series/phi", 3, np.nan)
    with pytest.raises(InputError, match=r"data\.nxs.*/entry/image_series/phi.*index \[3\]"):
        open_image_stack(ds / "data.nxs")
    line = _one_error_line(_run("estimate", ds / "geometry.nxs", ds / "data.nxs"))
    assert "/entry/image_series/phi" in line and "[3]" in line and "data.nxs" in line


def test_inf_in_miller_grid(dataset_copy):
    ds = dataset_copy("cubic")
    _poke(ds / "geometry.nxs", "/entry/miller_index/k/signal", (0, 1, 2), np.inf)
    with pytest.raises(InputError, match=r"geometry\.nxs.*/entry/miller_index/k/signal.*index \[0, 1, 2\]"):
        read_miller_grid(ds / "geometry.nxs")


def test_nan_in_corrections(dataset_copy):
    ds = dataset_copy("cubic")
    with h5py.File(ds / "geometry.nxs") as f:
        name = next(iter(f["/entry/corrections"]))
        signal = f[f"/entry/corrections/{name}"].attrs.get("signal", name)
        signal = signal.decode() if isinstance(signal, bytes) else signal
    _poke(ds / "geometry.nxs", f"/entry/corrections/{name}/{signal}", (1, 0), np.nan)
    with pytest.raises(InputError, match=rf"/entry/corrections/{name}/{signal}.*index \[1, 0\]"):
        read_corrections(ds / "geometry.nxs")


def test_mask_of_float_dtype(dataset_copy):
    ds = dataset_copy("cubic")
    with h5py.File(ds / "mask.nxs", "a") as f:
        a = f["/entry/mask/signal"][()].astype(np.float32)
        del f["/entry/mask/signal"]
        f["/entry/mask/signal"] = a
    shape = open_image_stack(ds / "data.nxs").shape
    with pytest.raises(InputError, match=r"mask\.nxs.*/entry/mask/signal.*float32.*expected bool"):
        open_masks([ds / "mask.nxs"], shape)


def test_check_finite_ignores_integers_and_reports_count():
    check_finite(np.arange(3), "f", "/d")
    with pytest.raises(InputError, match=r"'f': /d holds 2 NaN or inf values \(first at index \[1\]"):
        check_finite(np.array([0.0, np.nan, np.inf]), "f", "/d")
