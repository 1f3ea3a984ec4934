"""``diffuse merge`` against mdx2 1.0.5's ``mdx2.merge``.

* kernels: the partitioned merge (:func:`merge_partition` per partition) == the per-voxel oracle on
  the whole table, and the chained random split (:func:`random_split` with carries) == mdx2's
  ``wrs`` on the whole table, across hypothesis-drawn uneven partitionings;
* goldens (tests/data/merge, made by tests/data/make_merge_goldens.sh): every column bit for bit,
  including the random half-splits with the seed mdx2 ran under (``np.random.seed``);
* datasets kept apart (P 21 21 21 and P 6 2 2, made and merged by mdx2 live; skipped without refkit);
* bad input: empty table, mismatched subdivisions, a scales file of another kind, missing columns.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.api.merge import merge
from pipeline.errors import ConfigError, InputError
from pipeline.kernels import merge as km

DATA = Path(__file__).parent / "data"
GOLD = DATA / "merge"
C325 = DATA / "cubic" / "mdx2" / "corrected_325_bkg.nxs"
C111 = DATA / "cubic" / "mdx2" / "corrected_111_p1.nxs"
GEOM = DATA / "cubic" / "geometry.nxs"
REFKIT = Path(os.environ.get("DIFFUSE_REFKIT", "/work/shared/refkit"))
MDX2_BIN = Path("/tmp/mdx2ref/bin")


def _table(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        g = f["/entry/hkl_table"]
        return {k: g[k][()] for k in g}


def assert_identical(ours, ref) -> None:
    a, b = _table(ours), _table(ref)
    assert sorted(a) == sorted(b)
    for name in b:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].tobytes() == b[name].tobytes(), f"column {name} differs"


# --- kernels ---------------------------------------------------------------------------------------


def _rows(draw_or_rng, n, n_vox):
    rng = draw_or_rng
    keys = rng.integers(0, n_vox, n).astype(np.int64) * 7 - 40
    intensity = rng.normal(10, 5, n).astype(np.float32)
    sigma = rng.uniform(0.5, 3, n).astype(np.float32)
    bad = rng.random(n)
    intensity[bad < 0.05] = np.nan
    sigma[(bad > 0.05) & (bad < 0.08)] = 0
    sigma[(bad > 0.08) & (bad < 0.1)] = np.inf
    intensity[(bad > 0.1) & (bad < 0.13)] *= 30  # outliers
    scale = rng.uniform(0.5, 2, n).astype(np.float32)
    offset = rng.uniform(-1, 1, n).astype(np.float32)
    return keys, intensity, sigma, scale, offset


def _cuts(rng, n_vox, parts):
    inner = np.unique(rng.integers(1, max(n_vox, 2), max(parts - 1, 0)))
    return [0, *[int(c) for c in inner if 0 < c < n_vox], n_vox]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1, 400),
    n_vox=st.integers(1, 60),
    parts=st.integers(1, 7),
    outlier=st.sampled_from([None, 1.0, 2.5]),
    scaled=st.booleans(),
)
def test_partitioned_merge_equals_oracle(seed, n, n_vox, parts, outlier, scaled):
    rng = np.random.default_rng(seed)
    keys, intensity, sigma, scale, offset = _rows(rng, n, n_vox)
    if not scaled:
        scale = offset = None
    oracle = km.merge_partition_oracle(keys, intensity, sigma, scale, offset, outlier)
    order = np.argsort(keys, kind="stable")
    ukeys, ih = km.voxels(keys[order])
    got = {k: [] for k in ("intensity", "intensity_error", "count")}
    got_keys = []
    for a, b in itertools.pairwise(_cuts(rng, len(ukeys), parts)):
        rows = order[(ih >= a) & (ih < b)]
        sc, of = (None, None) if scale is None else (scale[rows], offset[rows])
        part = km.merge_partition(keys[rows], intensity[rows], sigma[rows], sc, of, outlier)
        got_keys.append(part.keys)
        for k in got:
            got[k].append(part.columns[k])
    assert np.array_equal(np.concatenate(got_keys), oracle["keys"])
    for k in got:
        assert np.concatenate(got[k]).tobytes() == oracle[k].tobytes(), k


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1, 500),
    n_vox=st.integers(1, 80),
    parts=st.integers(1, 8),
    split=st.sampled_from(["randomHalf", "weightedRandomHalf"]),
)
def test_chained_random_split_equals_wrs(seed, n, n_vox, parts, split):
    rng = np.random.default_rng(seed)
    keys, intensity, sigma, _, _ = _rows(rng, n, n_vox)
    order = np.argsort(keys, kind="stable")
    part = km.merge_partition(keys[order], intensity[order], sigma[order], outlier=2.0)
    w = km.split_weights(part, split)
    jitter = rng.random(n) * 0.2
    flips = rng.integers(0, 2, len(part.keys))
    expected = km.wrs_global(part.ih, w, jitter, flips)
    got = np.zeros(n, dtype=bool)
    carry = w.dtype.type(0)
    cuts = _cuts(rng, len(part.keys), parts)
    for a, b in itertools.pairwise(cuts):
        sel = np.flatnonzero((part.ih >= a) & (part.ih < b))
        g1, carry = km.random_split(part.ih[sel] - a, jitter[sel], w[sel], flips[a:b], carry)
        got[sel] = g1
    assert np.array_equal(got, expected)


def test_random_stream_seeks_like_one_call():
    n_rows, n_vox = 3_000, 700
    rs = np.random.RandomState(42)
    jitter = rs.random_sample(n_rows) * 0.2
    flips = rs.randint(2, size=n_vox)
    stream = km.RandomStream(42)
    stream.BLOCK = 333  # skip in several blocks
    offsets = [0, 1, 999, 2500]
    states, _ = stream.jitter_states(offsets)
    stops = [*offsets[1:], n_rows]
    got = np.concatenate(
        [km.RandomStream.jitter(s, b - a) for s, a, b in zip(states, offsets, stops, strict=True)]
    )
    assert got.tobytes() == jitter.tobytes()
    vox = [0, 10, 11, 600]
    fstates = stream.flip_states(n_rows, vox)
    got = np.concatenate(
        [km.RandomStream.flips(s, b - a) for s, a, b in zip(fstates, vox, [*vox[1:], n_vox], strict=True)]
    )
    assert np.array_equal(got, flips)


def test_voxel_keys_round_as_mdx2():
    h = np.array([0.25, 0.75, -0.25, 1 / 3], dtype=np.float32)
    keys, H = km.voxel_keys(h, h, h, (2, 2, 3))
    assert H.tolist() == [0, 2, 0, 1]  # half to even, in float64
    assert np.all(np.diff(np.sort(keys)) >= 0)
    with pytest.raises(ValueError, match="finite"):
        km.voxel_keys(np.array([np.nan], np.float32), h[:1], h[:1], (1, 1, 1))


# --- goldens ---------------------------------------------------------------------------------------

NOSCALE_GOLDENS = [
    ("merged_325_noscale.nxs", [C325], {}),
    ("merged_111_friedel.nxs", [C111], {"split": "Friedel", "geometry": GEOM}),
]
SCALED_GOLDENS = [
    ("merged_325_scales.nxs", [C325], ["scales_325.nxs"], {}),
    (
        "merged_325_bd_o2.nxs",
        [C325],
        ["scales_325.nxs"],
        {"absorption": False, "offset": False, "outlier": 2},
    ),
    ("merged_111x2_scales.nxs", [C111, C111], ["scales_111.nxs"] * 2, {}),
    (
        "merged_111_wrh_seed5.nxs",
        [C111],
        ["scales_111.nxs"],
        {"outlier": 3, "split": "weightedRandomHalf", "seed": 5},
    ),
    ("merged_111x2_rh_seed11.nxs", [C111, C111], ["scales_111.nxs"] * 2, {"split": "randomHalf", "seed": 11}),
]


@pytest.mark.parametrize(("golden", "tables", "kwargs"), NOSCALE_GOLDENS, ids=[g[0] for g in NOSCALE_GOLDENS])
def test_golden_without_scales(tmp_path, golden, tables, kwargs):
    out = tmp_path / "merged.nxs"
    result = merge(tables, outfile=out, **kwargs)
    assert_identical(out, GOLD / golden)
    assert result.rows == len(_table(out)["h"])


@pytest.mark.parametrize(
    ("golden", "tables", "scales", "kwargs"), SCALED_GOLDENS, ids=[g[0] for g in SCALED_GOLDENS]
)
def test_golden_with_scales(tmp_path, golden, tables, scales, kwargs):
    pytest.importorskip("pipeline.io.scales", reason="scaling models not on this branch yet")
    out = tmp_path / "merged.nxs"
    merge(tables, [GOLD / s for s in scales], outfile=out, **kwargs)
    assert_identical(out, GOLD / golden)


def test_noscale_flags_equal_no_scales(tmp_path):
    pytest.importorskip("pipeline.io.scales", reason="scaling models not on this branch yet")
    out = tmp_path / "merged.nxs"
    off = {"scaling": False, "offset": False, "absorption": False, "detector": False}
    merge([C325], [GOLD / "scales_325.nxs"], outfile=out, **off)
    assert_identical(out, GOLD / "merged_325_noscale.nxs")


def _small_tuning(rows_per_task: int, partition_rows: int):
    import dataclasses

    from pipeline.config import Tuning

    return dataclasses.replace(
        Tuning.from_config(), correct_rows_per_task=rows_per_task, max_partition_rows=partition_rows
    )


def test_many_tasks_and_partitions(tmp_path):
    """Map tasks of 1000 rows, partitions of <= 700 rows (threads): still mdx2's bits."""
    from pipeline.config import MergeParams
    from pipeline.graph.merge import run_merge

    out = tmp_path / "merged.nxs"
    tables = (str(C111), str(C111))
    params = MergeParams(
        tables=tables,
        scales=(str(GOLD / "scales_111.nxs"),) * 2,
        outfile=str(out),
        split="randomHalf",
        seed=11,
        tuning=_small_tuning(1000, 700),
    )
    result = run_merge(params, None, threads=3)
    assert result.partitions > 1 and result.map_tasks == 2
    assert_identical(out, GOLD / "merged_111x2_rh_seed11.nxs")
    params = MergeParams(
        tables=(str(C325),), outfile=str(tmp_path / "c.nxs"), tuning=_small_tuning(3000, 2000)
    )
    result = run_merge(params, None, threads=2)
    assert result.partitions > 2 and result.map_tasks == 3
    assert_identical(tmp_path / "c.nxs", GOLD / "merged_325_noscale.nxs")


@pytest.mark.slow
def test_on_cluster(tmp_path, client):
    """The same on the local dask cluster (tasks in worker processes)."""
    from pipeline.config import MergeParams
    from pipeline.graph.merge import run_merge

    params = MergeParams(
        tables=(str(C325),),
        outfile=str(tmp_path / "c.nxs"),
        split="Friedel",
        geometry=str(GEOM),
        tuning=_small_tuning(3000, 2000),
    )
    result = run_merge(params, client)
    assert result.partitions > 2
    ref = run_merge(
        MergeParams(
            tables=(str(C325),), outfile=str(tmp_path / "r.nxs"), split="Friedel", geometry=str(GEOM)
        ),
        None,
    )
    assert ref.rows == result.rows
    assert_identical(tmp_path / "c.nxs", tmp_path / "r.nxs")
    params = MergeParams(
        tables=(str(C111), str(C111)),
        outfile=str(tmp_path / "w.nxs"),
        split="weightedRandomHalf",
        seed=4,
        outlier=2,
        tuning=_small_tuning(1000, 700),
    )
    run_merge(params, client)
    run_merge(
        MergeParams(
            tables=params.tables,
            outfile=str(tmp_path / "w1.nxs"),
            split="weightedRandomHalf",
            seed=4,
            outlier=2,
        ),
        None,
    )
    assert_identical(tmp_path / "w.nxs", tmp_path / "w1.nxs")


def test_parquet_input(tmp_path):
    from pipeline.io.tables import CORRECTED_SCHEMA, write_parquet_part

    t = _table(C325)
    d = tmp_path / "corrected.parquet"
    d.mkdir()
    for i, (a, b) in enumerate([(0, 3000), (3000, 3001), (3001, len(t["h"]))]):
        write_parquet_part(
            d, i, {k: t[k][a:b] for k in CORRECTED_SCHEMA}, CORRECTED_SCHEMA, t["ndiv"], "corrected"
        )
    result = merge([d], outfile=tmp_path / "m.nxs")
    assert result.map_tasks == 3
    assert_identical(tmp_path / "m.nxs", GOLD / "merged_325_noscale.nxs")


def test_random_seed_is_reported_and_reproducible(tmp_path):
    a = merge([C111], outfile=tmp_path / "a.nxs", split="randomHalf")
    assert a.seed is not None
    merge([C111], outfile=tmp_path / "b.nxs", split="randomHalf", seed=a.seed)
    assert_identical(tmp_path / "a.nxs", tmp_path / "b.nxs")


def test_cli(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli.app import app

    out = tmp_path / "m.nxs"
    r = CliRunner().invoke(app, ["merge", str(C325), "--outfile", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert_identical(out, GOLD / "merged_325_noscale.nxs")


# --- bad input -------------------------------------------------------------------------------------


def _write_table(path, ndiv=(1, 1, 1), n=5, drop=()):
    with h5py.File(path, "w") as f:
        g = f.create_group("entry").create_group("hkl_table")
        g.create_dataset("ndiv", data=np.array(ndiv, dtype=np.int64))
        for name in ("h", "k", "l", "intensity", "intensity_error", "phi", "s", "ix", "iy"):
            if name not in drop:
                g.create_dataset(name, data=np.arange(n, dtype=np.float32) + 1)
        g.create_dataset("op", data=np.zeros(n, np.int32))
    return path


def test_empty_table(tmp_path):
    t = _write_table(tmp_path / "empty.nxs", n=0)
    with pytest.raises(InputError, match="nothing to merge"):
        merge([t], outfile=tmp_path / "m.nxs")
    assert not (tmp_path / "m.nxs").exists()


def test_mismatched_tables(tmp_path):
    a = _write_table(tmp_path / "a.nxs", ndiv=(1, 1, 1))
    b = _write_table(tmp_path / "b.nxs", ndiv=(2, 2, 2))
    with pytest.raises(InputError, match="different subdivisions"):
        merge([a, b], outfile=tmp_path / "m.nxs")
    with pytest.raises(ConfigError, match="number of scale files"):
        merge([a, a], [GOLD / "scales_111.nxs"], outfile=tmp_path / "m.nxs")


def test_not_a_corrected_table(tmp_path):
    with pytest.raises(InputError, match="intensity"):
        merge([DATA / "cubic" / "mdx2" / "integrated_111.nxs"], outfile=tmp_path / "m.nxs")


def test_scales_of_wrong_kind(tmp_path):
    pytest.importorskip("pipeline.io.scales", reason="scaling models not on this branch yet")
    with pytest.raises(InputError):
        merge([C111], [C111], outfile=tmp_path / "m.nxs")


def test_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="geometry"):
        merge([C111], split="Friedel", outfile=tmp_path / "m.nxs")
    with pytest.raises(ConfigError, match="outlier"):
        merge([C111], outlier=0, outfile=tmp_path / "m.nxs")
    with pytest.raises(ConfigError, match="split"):
        merge([C111], split="halves", outfile=tmp_path / "m.nxs")


# --- datasets kept apart, live against mdx2 (refkit) ------------------------------------------------

HELD_OUT = {
    "p212121": ["--hall", " P 2ac 2ab", "--cell", "40", "50", "60", "90", "90", "90"],
    "p622": ["--hall", " P 6 2", "--cell", "50", "50", "70", "90", "90", "120"],
}
SEEDED = (
    "import sys, numpy as np; np.random.seed(int(sys.argv[1])); sys.argv = ['mdx2.merge'] + sys.argv[2:]; "
    "from mdx2.command_line.merge import run; run()"
)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    if not (MDX2_BIN / "mdx2.merge").exists() or not (REFKIT / "make_dataset.py").exists():
        pytest.skip("refkit (mdx2 1.0.5 at /tmp/mdx2ref) not available")
    env = dict(os.environ, PATH=f"{MDX2_BIN}:{os.environ['PATH']}", PYTHONPATH=f"{REFKIT / 'stubs'}:{REFKIT}")
    root = tmp_path_factory.mktemp("merge_held_out")
    out = {}
    for name, extra in HELD_OUT.items():
        d = root / name
        d.mkdir()

        def run(*cmd, d=d):
            subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)

        run(str(MDX2_BIN / "python"), str(REFKIT / "make_dataset.py"), str(d), "--preset", "tiny", *extra)
        run("mdx2.integrate", "geometry.nxs", "data.nxs", "--mask", "mask.nxs", "--subdivide", "2", "2", "2")
        run("mdx2.correct", "geometry.nxs", "integrated.nxs", "--background", "bkg_data_binned.nxs")
        run("mdx2.scale", "corrected.nxs", "--mca2020", "--absorption.dphi", "1", "--detector.nx", "10",
            "--detector.ny", "10")  # fmt: skip
        py = str(MDX2_BIN / "python")
        run(
            py,
            "-c",
            SEEDED,
            "0",
            "corrected.nxs",
            "--scale",
            "scales.nxs",
            "--outlier",
            "3",
            "--outfile",
            "ref.nxs",
        )
        run(py, "-c", SEEDED, "9", "corrected.nxs", "--scale", "scales.nxs", "--split", "weightedRandomHalf",
            "--outfile", "ref_wrh.nxs")  # fmt: skip
        run(py, "-c", SEEDED, "0", "corrected.nxs", "--scale", "scales.nxs", "--no-scaling", "--no-offset",
            "--no-absorption", "--no-detector", "--split", "Friedel", "--geometry", "geometry.nxs",
            "--outfile", "ref_friedel.nxs")  # fmt: skip
        out[name] = d
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HELD_OUT))
def test_held_out_without_scales(held_out, name, tmp_path):
    d = held_out[name]
    merge([d / "corrected.nxs"], split="Friedel", geometry=d / "geometry.nxs", outfile=tmp_path / "f.nxs")
    assert_identical(tmp_path / "f.nxs", d / "ref_friedel.nxs")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HELD_OUT))
def test_held_out_with_scales(held_out, name, tmp_path):
    pytest.importorskip("pipeline.io.scales", reason="scaling models not on this branch yet")
    d = held_out[name]
    merge([d / "corrected.nxs"], [d / "scales.nxs"], outlier=3, outfile=tmp_path / "m.nxs")
    assert_identical(tmp_path / "m.nxs", d / "ref.nxs")
    merge(
        [d / "corrected.nxs"],
        [d / "scales.nxs"],
        split="weightedRandomHalf",
        seed=9,
        outfile=tmp_path / "w.nxs",
    )
    assert_identical(tmp_path / "w.nxs", d / "ref_wrh.nxs")


def test_scales_of_another_dataset_are_refused(tmp_path):
    """Scales whose phi axis misses the table's (fitted to another dataset) are refused before any work."""
    import shutil

    from pipeline.api.merge import merge

    other = tmp_path / "other_scales.nxs"
    shutil.copy(GOLD / "scales_325.nxs", other)
    with h5py.File(other, "r+") as f:
        for group in f["entry"]:
            if "phi" in f["entry"][group]:
                f["entry"][group]["phi"][...] = f["entry"][group]["phi"][()] + 180
    with pytest.raises(InputError, match="were these scales fitted to another dataset"):
        merge(C325, other, outfile=tmp_path / "m.nxs")
    assert not (tmp_path / "m.nxs").exists()
