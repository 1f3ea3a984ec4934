"""``pipeline.api.bin_background``: binning equals mdx2.bin_image_series' masked means, bit for bit."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import pipeline
from pipeline.api.bin_background import bin_image_series, bin_series
from pipeline.cli import app
from pipeline.errors import ConfigError
from pipeline.kernels.background import bin_counts, section_slices


def mdx2_style(data, exposure, bins, valid_range=None, mask=None):
    """The oracle: mdx2 1.0.5's algorithm, written out with numpy.ma (slow, obviously right)."""
    nbins = np.ceil(np.array(data.shape) / np.array(bins)).astype(int)
    s0, s1, s2 = (np.array_split(np.arange(n), k) for n, k in zip(data.shape, nbins, strict=True))
    out = np.empty([len(s0), len(s1), len(s2)])
    for i, a in enumerate(s0):
        tmp = np.ma.masked_equal(data[a], -1)
        if valid_range is not None:
            tmp = np.ma.masked_outside(tmp, *valid_range)
        if mask is not None:
            tmp = np.ma.masked_where(mask[a], tmp)
        for j, b in enumerate(s1):
            for k, c in enumerate(s2):
                val = tmp[:, b[0] : b[-1] + 1, c[0] : c[-1] + 1].mean()
                out[i, j, k] = np.nan if np.ma.is_masked(val) else val
        out[i] /= exposure[a].mean()
    return out


@pytest.mark.parametrize("n, sections", [(10, 3), (7, 7), (195, 10), (1, 1)])
def test_section_slices_split_like_array_split(n, sections):
    got = [(s.start, s.stop) for s in section_slices(n, sections)]
    want = [(int(a[0]), int(a[-1]) + 1) for a in np.array_split(np.arange(n), sections)]
    assert got == want


@pytest.mark.parametrize("bins", [(1, 1, 1), (2, 3, 4), (3, 5, 7), (7, 11, 13), (50, 50, 50)])
@pytest.mark.parametrize("options", [{}, {"valid_range": (0, 30)}, {"mask": True}])
def test_bin_series_equals_numpy_ma_oracle(bins, options):
    rng = np.random.default_rng(sum(bins))
    data = rng.poisson(8.0, (7, 23, 31)).astype(np.int32)
    data[rng.random(data.shape) < 0.1] = -1
    data[:, 5:9, :] = -1  # a whole gap: some bins have no valid pixel -> NaN
    data[2, 3, 4] = 10_000
    exposure = rng.uniform(0.05, 0.2, data.shape[0])
    mask = rng.random(data.shape) < 0.2 if options.get("mask") else None
    valid_range = options.get("valid_range")
    axes = tuple(np.arange(n, dtype=np.float64) for n in data.shape)
    got = bin_series(
        lambda frames: data[frames],
        axes,
        exposure,
        bins,
        valid_range=valid_range,
        read_mask=None if mask is None else (lambda frames: mask[frames]),
    )
    want = mdx2_style(data, exposure, bins, valid_range, mask)
    np.testing.assert_array_equal(got.rate, want)  # bit for bit, NaN where empty
    assert got.phi.shape == (want.shape[0],)


def test_bin_counts_is_a_sum_over_sections():
    block = np.arange(2 * 5 * 4, dtype=np.int32).reshape(2, 5, 4)
    valid = block % 3 != 0
    sums, numbers = bin_counts(block, valid, section_slices(5, 2), section_slices(4, 2))
    assert sums.sum() == block[valid].sum() and numbers.sum() == valid.sum()
    assert sums[0, 0] == block[:, :3, :2][valid[:, :3, :2]].sum()


def test_bin_image_series_reads_the_file_as_simulate_binned_it(tmp_path):
    sim = pipeline.simulate(tmp_path / "ds", preset="tiny", seed=5, geometry=False)
    out = tmp_path / "binned.nxs"
    binned = bin_image_series(sim.files["bkg_data.nxs"], (1, 20, 20), outfile=out)
    with h5py.File(sim.files["bkg_data_binned.nxs"], "r") as f:
        np.testing.assert_array_equal(binned.rate, f["/entry/binned_image_series/signal"][()])
    with h5py.File(out, "r") as f:
        group = f["/entry/binned_image_series"]
        assert group.attrs["mdx2_class"] == "GridData" and group.attrs["signal"] == "signal"
        assert list(group.attrs["axes"]) == ["phi", "iy", "ix"]
        np.testing.assert_array_equal(group["iy"][()], binned.iy)
    with pytest.raises(ConfigError, match="bins"):
        bin_image_series(sim.files["bkg_data.nxs"], (0, 20, 20), outfile=None)


def test_cli_bin_background(tmp_path):
    sim = pipeline.simulate(tmp_path / "ds", preset="tiny", seed=5, geometry=False)
    out = tmp_path / "b.nxs"
    args = ["bin-background", str(sim.files["bkg_data.nxs"]), "1", "10", "10", "--outfile", str(out)]
    result = CliRunner().invoke(app, [*args, "--valid-range", "0", "200"])
    assert result.exit_code == 0, result.output
    assert out.exists() and "20 x 49 bins" in result.output
