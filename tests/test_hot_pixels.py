"""``diffuse find-hot-pixels``: the per-window kernel against oracles, the scan across storage
chunkings, the mask file's layout, and that integrating with hot.nxs + mask.nxs removes the hot pixels."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.io.images import open_image_stack, open_masks
from pipeline.io.tables import open_table, read_table
from pipeline.qc import find_hot_pixels
from pipeline.qc.hotpixels import HotPixelParams, flag_hot, frame_quantile, frame_quantile_oracle
from pipeline.qc.hotscan import scan_images
from pipeline.qc.tablescan import scan_table

DATA = Path(__file__).parent / "data"
CUBIC = DATA / "cubic"
needs_goldens = pytest.mark.skipif(not (CUBIC / "data.nxs").exists(), reason="golden fixtures missing")


@pytest.mark.parametrize("q", [0.25, 0.5, 0.9])
def test_frame_quantile_matches_nanquantile(q):
    rng = np.random.default_rng(0)
    block = rng.poisson(4, (9, 13, 17)).astype(np.int32)
    block[rng.random(block.shape) < 0.1] = -1
    block[:, 3, 4] = -1  # never valid
    invalid = rng.random(block.shape) < 0.2
    got, n = frame_quantile(block, invalid, q)
    want, n_want = frame_quantile_oracle(block, invalid, q)
    np.testing.assert_array_equal(n, n_want)
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    assert np.isnan(got[3, 4]) and n[3, 4] == 0


def synthetic_stack(shape=(24, 60, 90), hot=((5, 7), (30, 45), (59, 89), (0, 0)), seed=1):
    """Poisson counts on a gradient, hot pixels (some on edges and corners), a Bragg-like spot that
    crosses pixels in 3 frames, a masked module gap of -1."""
    rng = np.random.default_rng(seed)
    nphi, ny, nx = shape
    lam = 1 + 4 * np.linspace(0, 1, nx)[None, None, :] * np.ones((nphi, ny, 1))
    data = rng.poisson(lam).astype(np.int32)
    for y, x in hot:
        data[:, y, x] = 20_000 + rng.integers(0, 500, nphi)
    data[10:13, 20:22, 60:62] += 5_000  # transient: not hot
    data[:, :, 50] = -1  # module gap
    return data


def write_stack(path: Path, data: np.ndarray, chunks) -> Path:
    with h5py.File(path, "w") as f:
        f.attrs["mdx2_version"] = "1.0.5"
        g = f.create_group("entry/image_series")
        g.attrs["signal"] = "data"
        g.create_dataset("data", data=data, chunks=chunks, compression="gzip")
        g["phi"] = 0.1 * (np.arange(data.shape[0]) + 0.5)
        g["iy"] = np.arange(data.shape[1], dtype=float)
        g["ix"] = np.arange(data.shape[2], dtype=float)
        g["exposure_times"] = np.full(data.shape[0], 0.1)
    return path


def test_flag_hot_finds_only_the_hot_pixels():
    data = synthetic_stack()
    level, n = frame_quantile(data, None, 0.25)
    hot, _, _ = flag_hot(level, n, HotPixelParams())
    assert sorted(zip(*np.nonzero(hot), strict=True)) == [(0, 0), (5, 7), (30, 45), (59, 89)]
    assert not hot[:, 50].any()  # the gap is never hot


@pytest.mark.parametrize("chunks", [(24, 60, 90), (5, 16, 25), (1, 60, 90), (7, 33, 41)])
def test_scan_finds_hot_pixels_for_any_storage_chunking(tmp_path, chunks):
    data = synthetic_stack()
    stack = open_image_stack(write_stack(tmp_path / "data.nxs", data, chunks))
    scan = scan_images(stack, None, HotPixelParams(min_frames=6))
    assert sorted((p["iy"], p["ix"]) for p in scan.pixels) == [(0, 0), (5, 7), (30, 45), (59, 89)]
    assert all(p["windows_hot"] == p["windows_tested"] for p in scan.pixels)
    assert scan.pixels_total == data.size and scan.pixels_minus1 == int((data == -1).sum())
    assert scan.hot.sum() == 4


def test_mask_file_layout_and_contents(tmp_path):
    data = synthetic_stack()
    path = write_stack(tmp_path / "data.nxs", data, (6, 30, 45))
    out = tmp_path / "hot.nxs"
    scan = find_hot_pixels(path, None, out, params=HotPixelParams(min_frames=6))
    with h5py.File(out, "r") as f:
        assert f.attrs["mdx2_version"] == "1.0.5"
        g = f["entry/mask"]
        assert g.attrs["NX_class"] == "NXdata" and g.attrs["signal"] == "signal"
        assert list(g.attrs["axes"]) == ["axis0", "axis1", "axis2"]
        assert (g.attrs["mdx2_module"], g.attrs["mdx2_class"]) == ("mdx2.geometry", "GridData")
        ds = g["signal"]
        assert ds.dtype == bool and ds.shape == data.shape and ds.chunks == (6, 30, 45)
        assert ds.compression == "gzip"
        mask = ds[()]
        np.testing.assert_array_equal(g["axis0"][()], 0.1 * (np.arange(24) + 0.5))
        assert sorted(zip(f["entry/hot_pixels/iy"][()], f["entry/hot_pixels/ix"][()], strict=True)) == sorted(
            (p["iy"], p["ix"]) for p in scan.pixels
        )
    expected = np.zeros(data.shape, bool)
    expected[:, scan.hot] = True
    np.testing.assert_array_equal(mask, expected)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left
    with pytest.raises(ValueError, match="already exists"):
        find_hot_pixels(path, None, out)


def test_include_mask_writes_the_union(tmp_path):
    data = synthetic_stack()
    path = write_stack(tmp_path / "data.nxs", data, (6, 30, 45))
    bragg = np.zeros(data.shape, bool)
    bragg[10:13, 20:22, 60:62] = True
    with h5py.File(tmp_path / "mask.nxs", "w") as f:
        f.create_dataset("entry/mask/signal", data=bragg)
    find_hot_pixels(path, tmp_path / "mask.nxs", tmp_path / "u.nxs", include_mask=True)
    with h5py.File(tmp_path / "u.nxs", "r") as f:
        union = f["entry/mask/signal"][()]
    assert (union == bragg).sum() == union.size - 4 * 24  # differs exactly at the hot pixels
    assert union[bragg].all()


@needs_goldens
def test_cli_finds_the_dataset_hot_pixels(tmp_path):
    truth = sorted(tuple(p) for p in json.loads((CUBIC / "dataset.json").read_text())["hot_pixels"])
    args = [
        "find-hot-pixels",
        CUBIC / "data.nxs",
        "--mask",
        CUBIC / "mask.nxs",
        "--outfile",
        tmp_path / "hot.nxs",
    ]
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"{len(truth)} hot pixels" in result.output
    with h5py.File(tmp_path / "hot.nxs", "r") as f:
        found = sorted(
            zip(f["entry/hot_pixels/iy"][()].tolist(), f["entry/hot_pixels/ix"][()].tolist(), strict=True)
        )
    assert found == truth


@needs_goldens
def test_integrate_with_hot_and_bragg_masks_removes_hot_pixels(client, tmp_path):
    """hot.nxs + mask.nxs (two --mask files) == one union file, and the hot rows are gone."""
    find_hot_pixels(CUBIC / "data.nxs", CUBIC / "mask.nxs", tmp_path / "hot.nxs")
    find_hot_pixels(CUBIC / "data.nxs", CUBIC / "mask.nxs", tmp_path / "union.nxs", include_mask=True)
    common = {"subdivide": (3, 2, 5), "client": client}
    geometry, data = CUBIC / "geometry.nxs", CUBIC / "data.nxs"
    two = pipeline.integrate(
        geometry, data, [CUBIC / "mask.nxs", tmp_path / "hot.nxs"], outfile=tmp_path / "a.nxs", **common
    )
    one = pipeline.integrate(geometry, data, tmp_path / "union.nxs", outfile=tmp_path / "b.nxs", **common)
    a, b = read_table(tmp_path / "a.nxs"), read_table(tmp_path / "b.nxs")
    assert a.equals(b)
    stack = open_image_stack(data)
    plain = open_masks([CUBIC / "mask.nxs"], stack.shape)
    truth = json.loads((CUBIC / "dataset.json").read_text())["hot_pixels"]
    frames = slice(0, stack.shape[0])
    already = sum(int(plain.read((frames, slice(y, y + 1), slice(x, x + 1))).sum()) for y, x in truth)
    n_hot = len(truth) * stack.shape[0] - already  # hot-pixel pixels that mask.nxs leaves in
    assert two.pixels_used == one.pixels_used
    before = scan_table(open_table(CUBIC / "mdx2/integrated_325.nxs"))
    after = scan_table(open_table(tmp_path / "a.nxs"))
    assert before.n_candidates > 0
    assert after.n_candidates == 0
    assert read_table(CUBIC / "mdx2/integrated_325.nxs")["pixels"].sum() - a["pixels"].sum() == n_hot
