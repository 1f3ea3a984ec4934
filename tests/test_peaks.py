"""find-peaks and mask-peaks against mdx2 1.0.5 (goldens in tests/data/peaks, made by
tests/data/make_peaks_goldens.py), their kernels against slow oracles, and bad input.

The held-out check (a C2 dataset made live with refkit, another space group and cell than the
goldens) runs mdx2 itself and is skipped when the refkit environment is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.api.find_peaks import find_peaks
from pipeline.api.mask_peaks import mask_peaks
from pipeline.errors import ConfigError, InputError
from pipeline.graph.peaks import plan_find, plan_mask, search_peaks
from pipeline.io.images import open_image_stack
from pipeline.io.peaks import read_peaks
from pipeline.kernels import peaks as kp
from pipeline.kernels.interpolate import miller_indices_dense, prepare_miller_block

DATA = Path(__file__).parent / "data"
GOLD = DATA / "peaks"
CASES = json.loads((GOLD / "peaks.json").read_text())
REFKIT = Path(os.environ.get("DIFFUSE_REFKIT", "/work/shared/refkit"))
REFKIT_PYTHON = Path("/tmp/mdx2ref/bin/python")


def _read(path, name):
    with h5py.File(path, "r") as f:
        return f[name][()]


def _assert_same_peaks(ours: Path, theirs: Path) -> None:
    for group in ("peaks", "outliers"):
        for col in ("observed_phi", "observed_px_y", "observed_px_x"):
            a, b = _read(ours, f"/entry/{group}/{col}"), _read(theirs, f"/entry/{group}/{col}")
            assert a.shape == b.shape, (group, col)
            np.testing.assert_array_equal(a, b, err_msg=f"{group}/{col}")
    for key in ("r0", "sigma"):
        np.testing.assert_array_equal(
            _read(ours, f"/entry/peak_model/{key}"), _read(theirs, f"/entry/peak_model/{key}"), err_msg=key
        )


def _assert_same_mask(ours: Path, theirs: Path) -> None:
    a, b = _read(ours, "/entry/mask/signal"), _read(theirs, "/entry/mask/signal")
    assert a.dtype == b.dtype == bool and a.shape == b.shape
    assert np.array_equal(a, b), f"{int((a != b).sum())} pixels differ"
    for i in range(3):
        np.testing.assert_array_equal(
            _read(ours, f"/entry/mask/axis{i}"), _read(theirs, f"/entry/mask/axis{i}")
        )


# --- goldens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_find_peaks_equals_mdx2(name, tmp_path):
    case = CASES[name]
    out = tmp_path / "peaks.nxs"
    table = find_peaks(
        DATA / name / "geometry.nxs",
        DATA / name / "data.nxs",
        case["count_threshold"],
        sigma_cutoff=case["sigma_cutoff"],
        outfile=out,
    )
    assert table.size > 100
    _assert_same_peaks(out, GOLD / name / "peaks.nxs")


@pytest.mark.parametrize("slab", [None, 1])
@pytest.mark.parametrize("name", sorted(CASES))
def test_mask_peaks_equals_mdx2(name, slab, tmp_path, monkeypatch):
    if slab is not None:  # storage chunks computed one frame at a time: the same bits
        import pipeline.graph.peaks

        monkeypatch.setattr(pipeline.graph.peaks, "SLAB_PIXELS", slab)
    for out, (sigma, bragg) in CASES[name]["masks"].items():
        result = mask_peaks(
            DATA / name / "geometry.nxs",
            DATA / name / "data.nxs",
            GOLD / name / "peaks.nxs",
            sigma_cutoff=sigma,
            bragg=bragg,
            outfile=tmp_path / out,
        )
        _assert_same_mask(tmp_path / out, GOLD / name / out)
        assert result.masked == int(_read(GOLD / name / out, "/entry/mask/signal").sum())


def test_mask_is_accepted_by_integrate(tmp_path):
    from pipeline.io.images import open_masks

    mask_peaks(
        DATA / "cubic" / "geometry.nxs",
        DATA / "cubic" / "data.nxs",
        GOLD / "cubic" / "peaks.nxs",
        outfile=tmp_path / "mask.nxs",
    )
    stack = open_image_stack(DATA / "cubic" / "data.nxs")
    masks = open_masks([tmp_path / "mask.nxs"], stack.shape)
    whole = tuple(slice(0, n) for n in stack.shape)
    assert np.array_equal(masks.read(whole), _read(GOLD / "cubic" / "mask_3.nxs", "/entry/mask/signal"))


def test_cli_on_a_cluster(tmp_path, scheduler_address):
    """The distributed path (tasks on the session's worker processes) gives the same files."""
    from typer.testing import CliRunner

    from pipeline.cli.app import app

    runner = CliRunner()
    case = CASES["mono"]
    geom, data = DATA / "mono" / "geometry.nxs", DATA / "mono" / "data.nxs"
    peaks, mask = tmp_path / "peaks.nxs", tmp_path / "mask.nxs"
    r = runner.invoke(
        app,
        [
            "find-peaks",
            str(geom),
            str(data),
            "--count-threshold",
            str(case["count_threshold"]),
            "--sigma-cutoff",
            str(case["sigma_cutoff"]),
            "--outfile",
            str(peaks),
            "--cluster",
            scheduler_address,
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    _assert_same_peaks(peaks, GOLD / "mono" / "peaks.nxs")
    r = runner.invoke(
        app,
        [
            "mask-peaks",
            str(geom),
            str(data),
            str(peaks),
            "--sigma-cutoff",
            "2",
            "--outfile",
            str(mask),
            "--cluster",
            scheduler_address,
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    _assert_same_mask(mask, GOLD / "mono" / "mask_2.nxs")
    # each command's run log beside its output, as for the other steps
    from pipeline.api.runlog import read_run_log

    found = read_run_log(tmp_path / "peaks.nxs.log")
    assert found["find_peaks.status"] == "ok" and found["find_peaks.inputs"]["data"] == str(data)
    assert found["find_peaks.result"]["peak_pixels"] == _read(peaks, "/entry/peaks/observed_phi").size
    found = read_run_log(tmp_path / "mask.nxs.log")
    assert found["mask_peaks.status"] == "ok" and found["mask_peaks.inputs"]["peaks"] == str(peaks)
    assert found["mask_peaks.parameters"]["sigma_cutoff"] == 2.0


# --- kernels and graph -----------------------------------------------------------------------------


def test_threshold_matches_oracle():
    rng = np.random.default_rng(1)
    block = rng.poisson(3, size=(4, 9, 11)).astype(np.int32)
    block[rng.random(block.shape) < 0.1] = -1
    for thr in (-3.0, -1.0, 0.5, 4.0, 100.0):
        np.testing.assert_array_equal(kp.threshold_pixels(block, thr), kp.threshold_pixels_oracle(block, thr))


def test_search_order_does_not_depend_on_task_size():
    stack = open_image_stack(DATA / "mono" / "data.nxs")
    whole = search_peaks(stack, 10.0)
    for pixels in (1, 3000, 50_000):
        tasks = plan_find(stack, task_pixels=pixels)
        from pipeline.graph.peaks import run_find_task

        parts = [run_find_task(t, stack, 10.0)[1] for t in tasks]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_interp_points_matches_oracle():
    rng = np.random.default_rng(2)
    axes = (np.array([0.0, 1.0, 2.5]), np.linspace(-1, 200, 21), np.linspace(-1, 490, 50))
    values = rng.normal(size=(3, 21, 50, 3))
    pts = [np.concatenate([rng.uniform(a[0] - 1, a[-1] + 1, 300), a]) for a in axes]
    n = min(len(p) for p in pts)
    pts = [p[:n] for p in pts]
    fast = kp.interp_points(axes, values, *pts)
    assert np.array_equal(fast, kp.interp_points_oracle(axes, values, *pts))
    # values at grid nodes are returned exactly
    assert np.array_equal(
        kp.interp_points(axes, values[..., 0], axes[0], axes[1][:3], axes[2][:3]),
        values[np.arange(3), np.arange(3), np.arange(3), 0],
    )


def test_fit_matches_oracle():
    rng = np.random.default_rng(3)
    pts = rng.multivariate_normal([0.01, -0.02, 0.0], [[4e-3, 1e-3, 0], [1e-3, 2e-3, 0], [0, 0, 1e-3]], 2000)
    pts[:40] += 0.3  # outliers
    gp, out = kp.fit_gaussian(pts[:, 0], pts[:, 1], pts[:, 2], 3.0)
    go, oo = kp.fit_gaussian_oracle(pts[:, 0], pts[:, 1], pts[:, 2], 3.0)
    np.testing.assert_array_equal(out, oo)
    assert out[:40].all()
    np.testing.assert_allclose(gp.r0, go.r0, rtol=1e-12, atol=1e-15)
    # sigma is defined up to the signs and order of its columns: compare sigma sigma^T
    np.testing.assert_allclose(gp.sigma @ gp.sigma.T, go.sigma @ go.sigma.T, rtol=1e-10, atol=1e-15)


def test_peak_mask_matches_oracle_across_chunkings():
    from pipeline.io.geometry import read_miller_grid, read_symmetry
    from pipeline.symmetry.expressions import parse_miller_expression

    grid = read_miller_grid(DATA / "mono" / "geometry.nxs")
    refl = parse_miller_expression(read_symmetry(DATA / "mono" / "geometry.nxs").reflection_conditions)
    stack = open_image_stack(DATA / "mono" / "data.nxs")
    model = read_peaks(GOLD / "mono" / "peaks.nxs").model
    axes = (grid.phi, grid.iy, grid.ix)
    sl = (slice(2, 5), slice(50, 80), slice(20, 80))
    blk = prepare_miller_block(axes, grid.hkl, stack.phi[sl[0]], stack.iy[sl[1]], stack.ix[sl[2]])
    hkl = miller_indices_dense(blk, (3, 30, 60))
    fast = kp.peak_mask_block(hkl, model, 3.0, refl)
    slow = kp.peak_mask_block_oracle(hkl, model, 3.0, refl)
    assert fast.any() and np.array_equal(fast, slow)
    # the same pixels in another chunking: only last-bit differences of h, k, l, so the same mask
    big = (slice(0, 12), slice(40, 90), slice(10, 90))
    blk = prepare_miller_block(axes, grid.hkl, stack.phi[big[0]], stack.iy[big[1]], stack.ix[big[2]])
    other = kp.peak_mask_block(miller_indices_dense(blk, (12, 50, 80)), model, 3.0, refl)
    assert np.array_equal(other[2:5, 10:40, 10:70], fast)


@pytest.mark.parametrize("name", ["mono", "cubic"])
@pytest.mark.parametrize("cutoff", [3.0, 7.5])
def test_fast_mask_slab_equals_mdx2s_expressions_across_chunkings(name, cutoff):
    """peak_mask_slab (one numba pass, mdx2's numpy expressions only next to the contour) against
    peak_mask_block on miller_indices_dense, over blocks whose interpolation order ends on each axis,
    with the contour band as used, 0 (the fast form decides all) and inf (mdx2's form decides all)."""
    from pipeline.io.geometry import read_miller_grid, read_symmetry
    from pipeline.symmetry.expressions import parse_miller_expression

    grid = read_miller_grid(DATA / name / "geometry.nxs")
    refl = parse_miller_expression(read_symmetry(DATA / name / "geometry.nxs").reflection_conditions)
    stack = open_image_stack(DATA / name / "data.nxs")
    model = read_peaks(GOLD / name / "peaks.nxs").model
    axes = (grid.phi, grid.iy, grid.ix)
    n = stack.shape
    finals = set()
    for sl in [
        (slice(0, n[0]), slice(0, n[1]), slice(0, n[2])),
        (slice(1, n[0]), slice(3, 9), slice(7, 8)),  # ix shortest ... phi or iy last
        (slice(2, 3), slice(0, n[1]), slice(5, 17)),
        (slice(0, n[0]), slice(11, 12), slice(0, 5)),
    ]:
        blk = prepare_miller_block(axes, grid.hkl, stack.phi[sl[0]], stack.iy[sl[1]], stack.ix[sl[2]])
        shape = tuple(s.stop - s.start for s in sl)
        finals.add(blk.final_axis)
        ref = kp.peak_mask_block(miller_indices_dense(blk, shape), model, cutoff, refl)
        for band in (kp.BAND, 0.0, np.inf):
            assert np.array_equal(kp.peak_mask_slab(blk, shape, model, cutoff, refl, band=band), ref), (
                sl,
                band,
            )
    assert finals == {0, 1, 2}


def test_plan_mask_gives_every_peak_to_one_task():
    stack = open_image_stack(DATA / "cubic" / "data.nxs")
    rng = np.random.default_rng(4)
    idx = np.stack([rng.integers(0, n, 500) for n in stack.shape], axis=1)
    tasks = plan_mask(stack, idx, task_pixels=100_000)
    assert len(tasks) > 3
    got = np.concatenate([t.peaks for t in tasks])
    assert sorted(map(tuple, got)) == sorted(map(tuple, idx))
    for t in tasks:
        for p in t.peaks:
            assert any(all(s.start <= v < s.stop for s, v in zip(b, p, strict=True)) for b in t.blocks)


# --- bad input -------------------------------------------------------------------------------------


def test_threshold_above_every_pixel(tmp_path):
    with pytest.raises(InputError, match="no pixels above the count threshold"):
        find_peaks(
            DATA / "cubic" / "geometry.nxs", DATA / "cubic" / "data.nxs", 1e9, outfile=tmp_path / "p.nxs"
        )
    assert not (tmp_path / "p.nxs").exists()


def test_too_few_peaks_for_a_model(tmp_path):
    block = h5py.File(DATA / "cubic" / "data.nxs", "r")["/entry/image_series/data"][()]
    top = float(np.sort(block.ravel())[-2])  # only the brightest pixel is above
    with pytest.raises(InputError, match="no Gaussian peak model"):
        find_peaks(
            DATA / "cubic" / "geometry.nxs", DATA / "cubic" / "data.nxs", top, outfile=tmp_path / "p.nxs"
        )


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_sigma_cutoff(bad, tmp_path):
    with pytest.raises(ConfigError, match="sigma_cutoff"):
        find_peaks(
            DATA / "cubic" / "geometry.nxs",
            DATA / "cubic" / "data.nxs",
            20,
            sigma_cutoff=bad,
            outfile=tmp_path / "p.nxs",
        )
    with pytest.raises(ConfigError, match="sigma_cutoff"):
        mask_peaks(
            DATA / "cubic" / "geometry.nxs",
            DATA / "cubic" / "data.nxs",
            GOLD / "cubic" / "peaks.nxs",
            sigma_cutoff=bad,
            outfile=tmp_path / "m.nxs",
        )


def test_damaged_peaks_file(tmp_path):
    bad = tmp_path / "peaks.nxs"
    shutil.copy(GOLD / "cubic" / "peaks.nxs", bad)
    with h5py.File(bad, "a") as f:
        f["/entry/peak_model/sigma"][...] = np.zeros((3, 3))
    with pytest.raises(InputError, match="singular"):
        read_peaks(bad)
    with h5py.File(bad, "a") as f:
        del f["/entry/peak_model/sigma"]
        f["/entry/peak_model/sigma"] = np.eye(2)
    with pytest.raises(InputError, match=r"\(3, 3\)"):
        read_peaks(bad)
    shutil.copy(GOLD / "cubic" / "peaks.nxs", bad)
    with h5py.File(bad, "a") as f:
        del f["/entry/peaks/observed_px_x"]
    with pytest.raises(InputError, match="observed_px_x"):
        read_peaks(bad)


def test_peaks_of_another_dataset_are_refused_by_shape(tmp_path):
    """Peaks whose coordinates lie outside the stack are clamped to the edge, as mdx2 does; the
    mask still has the data's shape."""
    mask_peaks(
        DATA / "cubic" / "geometry.nxs",
        DATA / "cubic" / "data.nxs",
        GOLD / "mono" / "peaks.nxs",
        outfile=tmp_path / "m.nxs",
    )
    assert _read(tmp_path / "m.nxs", "/entry/mask/signal").shape == (12, 195, 487)


def test_existing_outfile_refused(tmp_path):
    out = tmp_path / "m.nxs"
    out.write_text("x")
    with pytest.raises(InputError, match="exists"):
        mask_peaks(
            DATA / "cubic" / "geometry.nxs",
            DATA / "cubic" / "data.nxs",
            GOLD / "cubic" / "peaks.nxs",
            outfile=out,
        )


# --- held out: a C2 dataset made live, mdx2 run live -----------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not REFKIT_PYTHON.exists() or not (REFKIT / "setup.sh").exists(), reason="refkit absent")
def test_held_out_c2_against_live_mdx2(tmp_path):
    env_sh = f"source {REFKIT}/setup.sh && cd {tmp_path}/ds && "

    def sh(cmd):
        subprocess.run(["bash", "-c", env_sh + cmd], check=True, capture_output=True)

    subprocess.run(
        [
            "bash",
            "-c",
            f"source {REFKIT}/setup.sh && python {REFKIT}/make_dataset.py {tmp_path}/ds "
            "--preset tiny --frames 14 --chunks 7 50 130 --hall ' C 2y' --cell 92.1 55.3 61.7 90 112.4 90 "
            "--crystal-seed 7 --no-bkg",
        ],
        check=True,
        capture_output=True,
    )
    ds = tmp_path / "ds"
    sh("mdx2.find_peaks geometry.nxs data.nxs --count_threshold 15 --outfile ref_peaks.nxs")
    sh("mdx2.mask_peaks geometry.nxs data.nxs ref_peaks.nxs --sigma_cutoff 2.5 --outfile ref_mask.nxs")
    find_peaks(ds / "geometry.nxs", ds / "data.nxs", 15, outfile=ds / "peaks.nxs")
    _assert_same_peaks(ds / "peaks.nxs", ds / "ref_peaks.nxs")
    mask_peaks(
        ds / "geometry.nxs", ds / "data.nxs", ds / "peaks.nxs", sigma_cutoff=2.5, outfile=ds / "ours_mask.nxs"
    )
    _assert_same_mask(ds / "ours_mask.nxs", ds / "ref_mask.nxs")
    # mdx2 reads our files: its mask from our peaks, and its integrate with our mask
    sh("mdx2.mask_peaks geometry.nxs data.nxs peaks.nxs --sigma_cutoff 2.5 --outfile ref_mask2.nxs")
    _assert_same_mask(ds / "ours_mask.nxs", ds / "ref_mask2.nxs")
    sh("mdx2.integrate geometry.nxs data.nxs --mask ours_mask.nxs --outfile ours_int.nxs")
    sh("mdx2.integrate geometry.nxs data.nxs --mask ref_mask.nxs --outfile ref_int.nxs")
    for col in ("h", "k", "l", "counts", "pixels"):
        np.testing.assert_array_equal(
            _read(ds / "ours_int.nxs", f"/entry/hkl_table/{col}"),
            _read(ds / "ref_int.nxs", f"/entry/hkl_table/{col}"),
        )
