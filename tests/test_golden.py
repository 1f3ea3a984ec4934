"""Our integrate and correct against mdx2 1.0.5's own outputs on the golden fixtures (tests/data).

The fixtures (inputs + mdx2 outputs) and the options that made each output are listed in
tests/data/goldens.json, written by tests/data/make_goldens.sh. Integrated tables must agree row for
row: the same (h, k, l, n) rows in the same order, counts and pixels exactly, phi/iy/ix/seconds
equal as float32. Corrected tables: the same (h, k, l, op, n) rows, other values within 1e-4
relative (NaN where mdx2 has NaN). Both our NeXus and our parquet outputs are checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import pipeline
from pipeline.io.tables import CORRECTED_SCHEMA, INTEGRATED_SCHEMA

pytestmark = pytest.mark.golden

DATA = Path(__file__).parent / "data"
MANIFEST = json.loads((DATA / "goldens.json").read_text())
INTEGRATE_CASES = {Path(c["reference"]).with_suffix("").as_posix(): c for c in MANIFEST["integrate"]}
CORRECT_CASES = {Path(c["reference"]).with_suffix("").as_posix(): c for c in MANIFEST["correct"]}
ZERO_EXPOSURE = 0.1  # the `zero` dataset records 0 s; we integrate it with the true exposure time

EXACT = ("h", "k", "l", "n", "counts", "pixels", "phi", "iy", "ix", "seconds")
KEYS_CORRECTED = ("h", "k", "l", "op", "n")
CLOSE_CORRECTED = ("s", "intensity", "intensity_error", "rs_volume", "phi", "iy", "ix")


def read_mdx2(path: Path) -> pd.DataFrame:
    """An mdx2 hkl_table read with h5py (as mdx2's ``HKLTable.to_frame`` has it, plus attrs ndiv)."""
    with h5py.File(path, "r") as f:
        g = f["/entry/hkl_table"]
        df = pd.DataFrame({k: g[k][()] for k in g if k != "ndiv"})
        df.attrs["ndiv"] = tuple(int(x) for x in g["ndiv"][()])
    return df


def integrate_options(case: dict) -> dict:
    opts = dict(case["options"])
    ds = DATA / case["dataset"]
    if "mask" in opts:
        opts["mask"] = ds / opts["mask"]
    if case["dataset"] == "zero":
        opts["exposure_time"] = ZERO_EXPOSURE
    return opts


def correct_options(case: dict) -> dict:
    opts = dict(case["options"])
    if "background" in opts:
        opts["background"] = DATA / case["dataset"] / opts["background"]
    return opts


@pytest.fixture(scope="module")
def integrated(client, tmp_path_factory):
    """Our integrate on every golden integrate case, once per module: {case: (nexus path, parquet dir)}."""
    out = {}
    for name, case in INTEGRATE_CASES.items():
        d = tmp_path_factory.mktemp(name.replace("/", "-"))
        ds = DATA / case["dataset"]
        pipeline.integrate(
            ds / "geometry.nxs",
            ds / "data.nxs",
            outfile=d / "integrated.nxs",
            parquet=d / "integrated.parquet",
            client=client,
            **integrate_options(case),
        )
        out[name] = (d / "integrated.nxs", d / "integrated.parquet")
    return out


@pytest.fixture(scope="module")
def corrected(client, tmp_path_factory):
    """Our correct of mdx2's integrated table for every golden correct case: {case: (nexus, parquet)}."""
    out = {}
    for name, case in CORRECT_CASES.items():
        d = tmp_path_factory.mktemp(name.replace("/", "-"))
        pipeline.correct(
            DATA / case["dataset"] / "geometry.nxs",
            DATA / case["integrated"],
            outfile=d / "corrected.nxs",
            parquet=d / "corrected.parquet",
            client=client,
            **correct_options(case),
        )
        out[name] = (d / "corrected.nxs", d / "corrected.parquet")
    return out


def assert_same_integrated(ref: pd.DataFrame, ours: pd.DataFrame, columns=EXACT):
    assert len(ours) == len(ref), f"{len(ours)} rows, mdx2 has {len(ref)}"
    assert ours.attrs["ndiv"] == ref.attrs["ndiv"]
    for c in columns:
        assert ours[c].dtype == ref[c].dtype, f"{c}: dtype {ours[c].dtype}, mdx2 {ref[c].dtype}"
        bad = np.flatnonzero(ours[c].to_numpy() != ref[c].to_numpy())
        assert bad.size == 0, (
            f"{c} differs in {bad.size} rows, first row {bad[0]}:\n{ref.iloc[bad[:3]]}\n{ours.iloc[bad[:3]]}"
        )


def assert_same_corrected(ref: pd.DataFrame, ours: pd.DataFrame):
    assert len(ours) == len(ref)
    assert ours.attrs["ndiv"] == ref.attrs["ndiv"]
    assert set(ours.columns) == set(ref.columns)
    for c in ref.columns:
        assert ours[c].dtype == ref[c].dtype, f"{c}: dtype {ours[c].dtype}, mdx2 {ref[c].dtype}"
    for c in KEYS_CORRECTED:
        np.testing.assert_array_equal(ours[c].to_numpy(), ref[c].to_numpy(), err_msg=c)
    for c in CLOSE_CORRECTED:
        np.testing.assert_allclose(
            ours[c].to_numpy(), ref[c].to_numpy(), rtol=1e-4, atol=0, equal_nan=True, err_msg=c
        )


@pytest.mark.parametrize("case", list(INTEGRATE_CASES))
@pytest.mark.parametrize("fmt", ["nexus", "parquet"])
def test_integrate_equals_mdx2(case, fmt, integrated):
    ref = read_mdx2(DATA / INTEGRATE_CASES[case]["reference"])
    ours = pipeline.read_table(integrated[case][fmt == "parquet"])
    if case.startswith("zero/"):
        # mdx2 wrote the file's 0 s exposure times; we were given the true exposure time instead
        assert (ref["seconds"] == 0).all()
        expected = (ours["pixels"] * ZERO_EXPOSURE).to_numpy()
        np.testing.assert_allclose(ours["seconds"].to_numpy(), expected, rtol=1e-6)
        assert_same_integrated(ref, ours, [c for c in EXACT if c != "seconds"])
    else:
        assert_same_integrated(ref, ours)


@pytest.mark.parametrize("case", list(CORRECT_CASES))
@pytest.mark.parametrize("fmt", ["nexus", "parquet"])
def test_correct_equals_mdx2(case, fmt, corrected):
    ref = read_mdx2(DATA / CORRECT_CASES[case]["reference"])
    ours = pipeline.read_table(corrected[case][fmt == "parquet"])
    assert_same_corrected(ref, ours)


def test_correct_of_our_parquet_equals_mdx2(client, integrated, tmp_path):
    """The whole chain on our own files: our integrated parquet -> our correct -> mdx2's corrected."""
    case = CORRECT_CASES["mono/mdx2/corrected_222_bkg"]
    source = integrated["mono/mdx2/integrated_222"][1]
    pipeline.correct(
        DATA / "mono" / "geometry.nxs",
        source,
        outfile=tmp_path / "c.nxs",
        client=client,
        **correct_options(case),
    )
    assert_same_corrected(read_mdx2(DATA / case["reference"]), pipeline.read_table(tmp_path / "c.nxs"))


@pytest.mark.parametrize("kind", ["integrated", "corrected"])
def test_nexus_layout_matches_mdx2(kind, integrated, corrected):
    """Same HDF5 layout as mdx2's file: group attrs, dataset names, dtypes, shapes; root mdx2_version."""
    if kind == "integrated":
        ref_path, ours_path = (
            DATA / "cubic/mdx2/integrated_325.nxs",
            integrated["cubic/mdx2/integrated_325"][0],
        )
    else:
        ref_path, ours_path = (
            DATA / "cubic/mdx2/corrected_325_bkg.nxs",
            corrected["cubic/mdx2/corrected_325_bkg"][0],
        )
    with h5py.File(ref_path, "r") as ref, h5py.File(ours_path, "r") as ours:
        assert ours.attrs["mdx2_version"] == ref.attrs["mdx2_version"] == "1.0.5"
        assert ours["entry"].attrs["NX_class"] == "NXentry"
        g_ref, g_ours = ref["/entry/hkl_table"], ours["/entry/hkl_table"]
        for attr in ("mdx2_module", "mdx2_class"):
            assert g_ours.attrs[attr] == g_ref.attrs[attr]
        assert sorted(g_ours) == sorted(g_ref)
        for name in g_ref:
            assert (g_ours[name].dtype, g_ours[name].shape) == (g_ref[name].dtype, g_ref[name].shape), name
        np.testing.assert_array_equal(g_ours["ndiv"][()], g_ref["ndiv"][()])


@pytest.mark.parametrize("kind", ["integrated", "corrected"])
def test_read_table_same_from_nexus_and_parquet(kind, integrated, corrected):
    paths = (
        integrated["cubic/mdx2/integrated_325"]
        if kind == "integrated"
        else corrected["mono/mdx2/corrected_222_bkg"]
    )
    schema = INTEGRATED_SCHEMA if kind == "integrated" else CORRECTED_SCHEMA
    from_nexus, from_parquet = pipeline.read_table(paths[0]), pipeline.read_table(paths[1])
    pd.testing.assert_frame_equal(from_nexus, from_parquet)
    assert from_nexus.attrs["ndiv"] == from_parquet.attrs["ndiv"]
    assert dict(from_nexus.dtypes) == schema


def test_walkthrough_on_read_table(corrected, integrated):
    """The seed walkthrough's steps (set_index, head, a histogram of intensities) on our tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pipeline.read_table(integrated["cubic/mdx2/integrated_325"][0]).set_index(["h", "k", "l"])
    assert list(df.index.names) == ["h", "k", "l"] and len(df.head()) == 5
    assert (df["seconds"] > 0).all()
    ref = read_mdx2(DATA / "cubic/mdx2/integrated_325.nxs").set_index(["h", "k", "l"])
    pd.testing.assert_index_equal(df.index, ref.index)

    for path in corrected["cubic/mdx2/corrected_325_bkg"]:
        df = pipeline.read_table(path).set_index(["h", "k", "l", "op", "n"]).sort_index()
        assert df.index.is_monotonic_increasing
        ax = df["intensity"].plot.hist(bins=20)
        heights = [p.get_height() for p in ax.patches]
        plt.close("all")
        finite = df["intensity"].to_numpy()
        counts, _ = np.histogram(finite[np.isfinite(finite)], bins=20)
        assert heights == counts.tolist()
