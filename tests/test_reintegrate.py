"""``reintegrate`` against mdx2.reintegrate 1.0.5: goldens, the kernel's oracle, the graph's cuts, resume,
bad input, and (slow, live with refkit) datasets kept apart.

Goldens (tests/data/reintegrate/, made by tests/data/make_reintegrate_goldens.py) hold mdx2.scale's
scales.nxs and mdx2.reintegrate's outputs on the `cubic` and `mono` datasets. Our tables must have the
same rows in the same order, counts exactly, the float32 columns equal (they come out bit-identical;
a 1-ulp margin is allowed for float32 rounding).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import dask.config
import h5py
import numpy as np
import pandas as pd
import pytest

import pipeline
from pipeline.errors import ConfigError, InputError
from pipeline.io.tables import REINTEGRATED_INTENSITY_SCHEMA, REINTEGRATED_SCHEMA

DATA = Path(__file__).parent / "data"
MANIFEST = json.loads((DATA / "reintegrate" / "reintegrate.json").read_text())
CASES = {Path(c["reference"]).stem: c for c in MANIFEST["cases"]}


def read_mdx2(path: Path) -> pd.DataFrame:
    with h5py.File(path, "r") as f:
        g = f["/entry/hkl_table"]
        df = pd.DataFrame({k: g[k][()] for k in g if k != "ndiv"})
        df.attrs["ndiv"] = tuple(int(x) for x in g["ndiv"][()])
    return df


def assert_same(ref: pd.DataFrame, ours: pd.DataFrame) -> None:
    assert len(ours) == len(ref), f"{len(ours)} rows, mdx2 has {len(ref)}"
    assert tuple(ours.attrs["ndiv"]) == tuple(ref.attrs["ndiv"])
    assert set(ours.columns) == set(ref.columns)
    for c in ref.columns:
        assert ours[c].dtype == ref[c].dtype, f"{c}: dtype {ours[c].dtype}, mdx2 {ref[c].dtype}"
    for c in ("h", "k", "l") + (("counts",) if "counts" in ref else ()):
        np.testing.assert_array_equal(ours[c].to_numpy(), ref[c].to_numpy(), err_msg=c)
    for c in ref.columns:
        np.testing.assert_allclose(
            ours[c].to_numpy(), ref[c].to_numpy(), rtol=1.2e-7, atol=0, equal_nan=True, err_msg=c
        )


def options(case: dict) -> dict:
    ds = DATA / case["dataset"]
    opts = dict(case["options"])
    if "mask" in opts:
        opts["mask"] = ds / opts["mask"]
    if "background" in opts:
        opts["background"] = ds / opts["background"]
    if opts.pop("scale", False):
        pytest.importorskip("pipeline.io.scales")  # the lead's scales reader (SCALES.md)
        opts["scale"] = DATA / MANIFEST["scales"][case["dataset"]]["file"]
    return opts


def run_case(name: str, out: Path, **kw) -> tuple[Path, Path]:
    case = CASES[name]
    ds = DATA / case["dataset"]
    pipeline.reintegrate(
        ds / "geometry.nxs",
        ds / "data.nxs",
        outfile=out / "r.nxs",
        parquet=out / "r.parquet",
        **options(case),
        **kw,
    )
    return out / "r.nxs", out / "r.parquet"


@pytest.mark.golden
@pytest.mark.parametrize("name", list(CASES))
def test_reintegrate_equals_mdx2(name, client, tmp_path):
    nexus, parquet = run_case(name, tmp_path, client=client)
    ref = read_mdx2(DATA / CASES[name]["reference"])
    for path in (nexus, parquet):
        assert_same(ref, pipeline.read_table(path))
    schema = REINTEGRATED_INTENSITY_SCHEMA if "intensity" in ref else REINTEGRATED_SCHEMA
    assert dict(pipeline.read_table(parquet).dtypes) == schema
    with h5py.File(nexus, "r") as f, h5py.File(DATA / CASES[name]["reference"], "r") as r:
        g, gr = f["/entry/hkl_table"], r["/entry/hkl_table"]
        assert sorted(g) == sorted(gr)
        assert {k: g.attrs[k] for k in ("mdx2_module", "mdx2_class")} == {
            k: gr.attrs[k] for k in ("mdx2_module", "mdx2_class")
        }


@pytest.mark.golden
def test_uneven_tasks_runs_and_partitions(tmp_path):
    """Tiny map tasks, spilled runs and partitions (in-process threads): the same table."""
    name = "cubic_111_plain"
    with dask.config.set(
        {
            "diffuse.integrate.target-task-pixels": 150_000,
            "diffuse.integrate.max-run-rows": 300,
            "diffuse.reduce.max-partition-rows": 200,
        }
    ):
        nexus, _ = run_case(name, tmp_path)
    assert_same(read_mdx2(DATA / CASES[name]["reference"]), pipeline.read_table(nexus))


def test_resume_reuses_map_tasks(tmp_path):
    name = "cubic_111_plain"
    work = tmp_path / "work"
    run_case(name, tmp_path, workdir=work, keep_workdir=True)
    result = pipeline.reintegrate(
        DATA / "cubic" / "geometry.nxs",
        DATA / "cubic" / "data.nxs",
        **options(CASES[name]),
        outfile=tmp_path / "again.nxs",
        workdir=work,
        resume=True,
    )
    assert result.map_tasks_skipped == result.map_tasks > 0
    assert_same(read_mdx2(DATA / CASES[name]["reference"]), pipeline.read_table(tmp_path / "again.nxs"))


def test_resume_refuses_other_options(tmp_path):
    name = "cubic_111_plain"
    work = tmp_path / "work"
    run_case(name, tmp_path, workdir=work, keep_workdir=True)
    with pytest.raises(InputError, match="cannot --resume"):
        pipeline.reintegrate(
            DATA / "cubic" / "geometry.nxs",
            DATA / "cubic" / "data.nxs",
            **options(CASES[name]),
            background=DATA / "cubic" / "bkg_data_binned.nxs",
            outfile=tmp_path / "again.nxs",
            workdir=work,
            resume=True,
        )


def test_bad_options(tmp_path):
    ds = DATA / "cubic"
    with pytest.raises(ConfigError, match="output must be 'counts' or 'intensity'"):
        pipeline.reintegrate(
            ds / "geometry.nxs", ds / "data.nxs", output="merged", outfile=tmp_path / "r.nxs"
        )
    with pytest.raises(InputError, match="exposure time is 0"):
        pipeline.reintegrate(
            DATA / "zero" / "geometry.nxs", DATA / "zero" / "data.nxs", outfile=tmp_path / "z.nxs"
        )
    assert not (tmp_path / "r.nxs").exists() and not (tmp_path / "z.nxs").exists()


def test_scales_of_another_dataset_are_refused(tmp_path):
    """Scales whose phi axis misses the data's scan (fitted to another dataset) are refused before any
    work; outside its control points a model is 0, which mdx2 would apply silently."""
    import shutil

    ds = DATA / "cubic"
    other = tmp_path / "other_scales.nxs"
    shutil.copy(DATA / MANIFEST["scales"]["cubic"]["file"], other)
    with h5py.File(other, "r+") as f:
        for group in f["entry"]:
            if "phi" in f["entry"][group]:
                f["entry"][group]["phi"][...] = f["entry"][group]["phi"][()] + 180
    with pytest.raises(InputError, match="were these scales fitted to another dataset"):
        pipeline.reintegrate(
            ds / "geometry.nxs", ds / "data.nxs", subdivide=(1, 1, 1), scale=other, outfile=tmp_path / "r.nxs"
        )
    assert not (tmp_path / "r.nxs").exists()


# -- kernels ------------------------------------------------------------------------------------------


def test_interp_scipy_is_map_coordinates_bit_for_bit():
    from scipy.ndimage import map_coordinates

    from pipeline.kernels.reintegrate import interp_scipy

    rng = np.random.default_rng(5)
    for shape in [(21, 50), (3, 21, 50), (2, 2), (1, 4), (4, 1, 3)]:
        values = rng.normal(size=shape)
        values.flat[rng.integers(values.size)] = np.nan  # NaN corners spread as scipy spreads them
        axes = [np.sort(rng.uniform(0, 100, n)) if n > 1 else np.array([3.0]) for n in shape]
        points = [np.concatenate([rng.uniform(a[0] - 5, a[-1] + 5, 3000), a, a[-1:].repeat(5)]) for a in axes]
        m = min(p.size for p in points)
        points = [p[:m] for p in points]
        coords = np.stack([np.interp(p, a, np.arange(a.size)) for p, a in zip(points, axes, strict=True)])
        expected = map_coordinates(values, coords, order=1)
        np.testing.assert_array_equal(interp_scipy(values, axes, points), expected)


def _chunk_rows(dataset: str, ndiv):
    """Binned rows of every storage chunk of a golden dataset (mask applied), in mdx2's chunk order."""
    from pipeline.config import IntegrateParams
    from pipeline.graph.plan import plan_integration
    from pipeline.graph.tasks import MapContext, bin_task_chunks

    ds = DATA / dataset
    params = IntegrateParams(
        ds / "geometry.nxs", ds / "data.nxs", mask=ds / "mask.nxs", subdivide=ndiv, outfile="x"
    )
    plan = plan_integration(params)
    ctx = MapContext(plan.stack, plan.masks, plan.geometry, plan.ndiv, plan.h_range, "unused")
    return [rows for task in plan.tasks for rows, _ in bin_task_chunks(task, ctx)]


@pytest.mark.parametrize("scales", [False, True])
@pytest.mark.parametrize("dataset, ndiv", [("cubic", (2, 3, 2)), ("mono", (3, 1, 2))])
def test_kernels_equal_oracle(dataset, ndiv, scales):
    """reintegrate_rows per chunk -> accumulate_sorted -> finish_rows equals the dense-grid transcription
    of mdx2 (scipy's map_coordinates, np.add.at), with background and (``scales``) mdx2.scale's models
    evaluated by numpy, for both outputs: bit for bit."""
    from pipeline.config import ReintegrateParams
    from pipeline.graph.reintegrate import build_model
    from pipeline.kernels.reintegrate import (
        accumulate_sorted,
        finish_rows,
        reintegrate_oracle,
        reintegrate_rows,
    )

    ds = DATA / dataset
    scale = DATA / MANIFEST["scales"][dataset]["file"] if scales else None
    params = ReintegrateParams(
        ds / "geometry.nxs",
        ds / "data.nxs",
        subdivide=ndiv,
        background=ds / "bkg_data_binned.nxs",
        scale=scale,
    )
    model = build_model(params)
    chunks = _chunk_rows(dataset, ndiv)[:150]  # mono has 900 small chunks: the oracle is slow
    rows = np.concatenate([reintegrate_rows(c, model) for c in chunks])
    for output in ("counts", "intensity"):
        ours = finish_rows(accumulate_sorted(rows), ndiv, model.asu_range, output)
        expected = reintegrate_oracle(chunks, model, output)
        assert ours.keys() == expected.keys()
        for name in expected:
            assert ours[name].dtype == expected[name].dtype, name
            np.testing.assert_array_equal(ours[name], expected[name], err_msg=name)


# -- held out: other space groups, mdx2 run live (refkit) ----------------------------------------------

REFKIT = next(
    (p for p in (Path(__file__).parents[2] / "shared" / "refkit", Path("/work/shared/refkit")) if p.is_dir()),
    None,
)
HELD_OUT = {
    "p422": ["--hall", " P 4 2", "--cell", "61", "61", "83", "90", "90", "90", "--crystal-seed", "7"],
    "p3121": [
        "--hall", " P 31 2\"", "--cell", "70", "70", "95", "90", "90", "120", "--axis", "0", "1", "0",
        "--phi0", "12", "--chunks", "4", "50", "60",
    ],
}  # fmt: skip


def _refkit(script: str, cwd: Path) -> None:
    subprocess.run(
        ["bash", "-c", f"source {REFKIT}/setup.sh >/dev/null && {script}"],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
@pytest.mark.skipif(
    REFKIT is None or not Path("/tmp/mdx2ref/bin/python").exists() or shutil.which("bash") is None,
    reason="refkit (mdx2 1.0.5) not available",
)
@pytest.mark.parametrize("name", list(HELD_OUT))
def test_held_out_live(name, tmp_path):
    """mdx2.scale (scaling + absorption + detector + offset) and mdx2.reintegrate --output intensity with
    background on a dataset of another space group, against ours with the same inputs."""
    pytest.importorskip("pipeline.io.scales")
    ds = tmp_path / name
    _refkit(
        f"python {REFKIT}/make_dataset.py {ds} --preset tiny {shlex.join(HELD_OUT[name])}",
        tmp_path,
    )
    _refkit(
        "mdx2.integrate geometry.nxs data.nxs --mask mask.nxs --outfile i.nxs && "
        "mdx2.correct geometry.nxs i.nxs --background bkg_data_binned.nxs --outfile c.nxs && "
        "mdx2.scale c.nxs --mca2020 --detector.nx 8 --detector.ny 8 --absorption.nx 4 --absorption.ny 4 "
        "--absorption.dphi 2 --offset.ns 6 --offset.dphi 1 --outfile scales.nxs && "
        "mdx2.reintegrate geometry.nxs data.nxs --mask mask.nxs --subdivide 3 3 2 --scale scales.nxs "
        "--background bkg_data_binned.nxs --output intensity --outfile ref.nxs",
        ds,
    )
    pipeline.reintegrate(
        ds / "geometry.nxs",
        ds / "data.nxs",
        mask=ds / "mask.nxs",
        subdivide=(3, 3, 2),
        scale=ds / "scales.nxs",
        background=ds / "bkg_data_binned.nxs",
        output="intensity",
        outfile=ds / "ours.nxs",
    )
    assert_same(read_mdx2(ds / "ref.nxs"), pipeline.read_table(ds / "ours.nxs"))


def test_scaling_model_kernels_equal_numpy_path(monkeypatch):
    """The numba path of interp1/2/3 (float64 points) gives numpy's path's values bit for bit, at
    random points, on control points, on the grid's edges and outside it (float32 axes, as mdx2.scale
    writes them)."""
    from pipeline.kernels import scaling_models as sm

    rng = np.random.default_rng(3)

    def points(w, n=4000):
        w64 = w.astype(np.float64)
        return rng.permutation(
            np.concatenate([rng.uniform(w64[0] - 3, w64[-1] + 3, n - 2 * w.size), w64, w64])
        )

    axes = [np.sort(rng.uniform(0, 50, n)).astype(np.float32) for n in (5, 4, 3)]
    u = [rng.normal(size=tuple(a.size for a in axes[:d])) for d in (1, 2, 3)]
    coords = [points(a) for a in axes]
    fast = [
        sm.interp1(coords[0], axes[0], u[0]),
        sm.interp2(coords[0], coords[1], axes[0], axes[1], u[1]),
        sm.interp3(*coords, *axes, u[2]),
    ]
    monkeypatch.setattr(sm, "_fast", lambda x, u: False)
    slow = [
        sm.interp1(coords[0], axes[0], u[0]),
        sm.interp2(coords[0], coords[1], axes[0], axes[1], u[1]),
        sm.interp3(*coords, *axes, u[2]),
    ]
    for d, (a, b) in enumerate(zip(fast, slow, strict=True), start=1):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b, err_msg=f"interp{d}")


@pytest.mark.parametrize("dense_limit", [0, 2**30])
def test_accumulate_pieces_equals_sorted(dense_limit):
    """The reduction over slices of H-bucketed runs (dense block, or its sorting fallback) equals
    accumulate_sorted of their concatenation: same voxels, sums formed in the same order, bit for bit."""
    from pipeline.kernels.keys import pack_keys
    from pipeline.kernels.reintegrate import REINTEGRATE_DTYPE, accumulate_pieces, accumulate_sorted

    rng = np.random.default_rng(3)
    asu_range = ((-2, 9), (0, 6), (-3, 4))
    pieces = []
    for _ in range(5):
        n = 400
        rows = np.empty(n, dtype=REINTEGRATE_DTYPE)
        H = np.sort(rng.integers(-2, 10, n))
        rows["key"] = pack_keys(H, rng.integers(0, 7, n), rng.integers(-3, 5, n))
        rows["counts"] = rng.integers(0, 50, n)
        for name in ("background_counts", "scale", "multiplicity"):
            rows[name] = rng.normal(size=n) * 10.0 ** rng.integers(-3, 4, n)
        rows["scale"][::37] = 0.0
        pieces.append(rows)
    ours = accumulate_pieces(pieces, asu_range, dense_limit=dense_limit)
    expected = accumulate_sorted(np.concatenate(pieces))
    keep = ~(
        (expected["counts"] == 0)
        & (expected["background_counts"] == 0)
        & (expected["scale"] == 0)
        & (expected["multiplicity"] == 0)
    )
    if dense_limit:  # the dense block lists only voxels with a sum not 0, as finish_rows keeps them
        expected = {k: v[keep] for k, v in expected.items()}
    for name in expected:
        assert ours[name].dtype == expected[name].dtype
        np.testing.assert_array_equal(ours[name], expected[name], err_msg=name)
