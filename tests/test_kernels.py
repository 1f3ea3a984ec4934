"""Fast kernels against their oracles and against transcriptions of mdx2 1.0.5, across chunkings.

The tests of numba kernels run with both builds: compiled ahead of time and jitted.

* ``bin_chunk`` (numba) == ``bin_chunk_oracle`` (numpy) on every chunk of hypothesis-drawn uneven
  chunkings of small random image stacks, and the whole chain (bin per chunk -> reduce -> finalize)
  == a transcription of mdx2's integrate (``ImageSeries.index``, ``HKLTable.bin``, pandas groupby).
* ``reduce_partials`` == ``reduce_partials_oracle`` (pandas).
* The Miller interpolation == mdx2's ``interp_g2g_trilinear`` for every axis order.
* Key packing, the whitelisted expression parser (against numexpr truth tables recorded by
  make_goldens.py), ``to_asu`` == ``to_asu_oracle`` == mdx2's ``Symmetry.to_asu`` (recorded).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.errors import InputError
from pipeline.kernels.asu import to_asu, to_asu_oracle
from pipeline.kernels.binning import PARTIAL_DTYPE, bin_chunk, bin_chunk_oracle
from pipeline.kernels.interpolate import miller_indices_dense, prepare_miller_block
from pipeline.kernels.keys import KEY_LIMIT, pack_keys, unpack_keys
from pipeline.kernels.partials import finalize, kahan_reduceat, reduce_partials, reduce_partials_oracle
from pipeline.symmetry.expressions import parse_miller_expression

DATA = Path(__file__).parent / "data"
both_builds = pytest.mark.usefixtures("kernel_build")  # run with both builds of the numba kernels
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- mdx2 1.0.5 transcribed (mdx2/utils.py, MIT licence): the interpolation integrate uses ----------


def _mdx2_base_fraction(x, axis):
    fx = np.interp(x.astype(float), axis.astype(float), np.arange(axis.size))
    bx = fx.astype(int)
    return bx, fx - bx


def _mdx2_trilinear_g2g(d0, b, f):
    bx, by, bz = b
    d0 = d0[bx[0] : (bx[-1] + 2), by[0] : (by[-1] + 2), bz[0] : (bz[-1] + 2), ...]
    bx, by, bz = bx - bx[0], by - by[0], bz - bz[0]
    fx, fy, fz = f
    dx, dy, dz, _ = np.meshgrid(fx, fy, fz, [1], indexing="ij", sparse=True)
    c00 = d0[bx, :-1, :-1, ...] * (1 - dx) + d0[bx + 1, :-1, :-1, ...] * dx
    c01 = d0[bx, :-1, 1:, ...] * (1 - dx) + d0[bx + 1, :-1, 1:, ...] * dx
    c10 = d0[bx, 1:, :-1, ...] * (1 - dx) + d0[bx + 1, 1:, :-1, ...] * dx
    c11 = d0[bx, 1:, 1:, ...] * (1 - dx) + d0[bx + 1, 1:, 1:, ...] * dx
    c0 = c00[:, by, :, ...] * (1 - dy) + c10[:, by, :, ...] * dy
    c1 = c01[:, by, :, ...] * (1 - dy) + c11[:, by, :, ...] * dy
    return c0[:, :, bz, ...] * (1 - dz) + c1[:, :, bz, ...] * dz


def mdx2_interp_g2g_trilinear(x0, y0, z0, v0, x, y, z):
    """mdx2.utils.interp_g2g_trilinear with _quick_trilinear_g2g (v0 has a trailing axis h, k, l)."""
    b, f = zip(*(_mdx2_base_fraction(t, a) for t, a in ((x, x0), (y, y0), (z, z0))), strict=True)
    order = np.argsort([v.size for v in b])
    unsort = np.empty_like(order)
    unsort[order] = np.arange(3)
    d0 = np.transpose(v0, axes=(*order, 3))
    c = _mdx2_trilinear_g2g(d0, tuple(b[i] for i in order), tuple(f[i] for i in order))
    return np.transpose(c, axes=(*unsort, 3))


def mdx2_integrate(grid, stack, chunks, ndiv, max_spread):
    """mdx2.command_line.integrate on numpy arrays: index + bin per storage chunk, then pandas."""
    (gphi, giy, gix), ghkl = grid
    data, mask, phi, iy, ix, seconds = stack
    tables = []
    for sl in chunk_slices(data.shape, chunks):
        hkl = mdx2_interp_g2g_trilinear(gphi, giy, gix, ghkl, phi[sl[0]], iy[sl[1]], ix[sl[2]])
        P, Y, X = np.meshgrid(phi[sl[0]], iy[sl[1]], ix[sl[2]], indexing="ij")
        T = np.moveaxis(np.tile(seconds[sl[0]], (Y.shape[1], X.shape[2], 1)), 2, 0)
        msk = data[sl] != -1
        if mask is not None:
            msk = msk & ~mask[sl]
        if not msk.any():
            continue  # mdx2's HKLTable.bin returns an empty table
        HKL = [np.round(hkl[..., i][msk] * n).astype(int) for i, n in enumerate(ndiv)]
        ori = [v.min() for v in HKL]
        ind = [v - o for v, o in zip(HKL, ori, strict=True)]
        uniq, index_map, pixels = np.unique(
            np.ravel_multi_index(ind, [v.max() + 1 for v in ind]), return_inverse=True, return_counts=True
        )
        hu = np.unravel_index(uniq, [v.max() + 1 for v in ind])
        cols = {c: (u + o) / n for c, u, o, n in zip("hkl", hu, ori, ndiv, strict=True)}
        cols["pixels"] = pixels
        for name, values in (("phi", P), ("iy", Y), ("ix", X), ("counts", data[sl]), ("seconds", T)):
            cols[name] = np.bincount(index_map, weights=values[msk])
        tables.append(pd.DataFrame(cols))
    df = pd.concat(tables, ignore_index=True)
    df["tmp"] = df["phi"] / df["pixels"]
    df["n"] = np.floor((df.tmp - df.groupby(["h", "k", "l"])["tmp"].transform("min")) / max_spread)
    df = df.drop(columns=["tmp"]).groupby(["h", "k", "l", "n"]).sum()
    for c in ("phi", "iy", "ix"):
        df[c] = df[c] / df["pixels"]
    df = df.reset_index()
    types = {"counts": np.int32, "pixels": np.int32, "n": np.float64}
    return {c: df[c].to_numpy().astype(types.get(c, np.float32)) for c in df.columns}


# --- synthetic inputs ---------------------------------------------------------------------------


def chunk_slices(shape, chunks):
    along = [[slice(s, min(s + c, n)) for s in range(0, n, c)] for n, c in zip(shape, chunks, strict=True)]
    return [(a, b, c) for a in along[0] for b in along[1] for c in along[2]]


@st.composite
def stacks(draw, max_shape=(7, 23, 29)):
    """A small image stack (with -1 and masked pixels) and a coarse Miller grid spanning its edges."""
    shape = tuple(draw(st.integers(1, n)) for n in max_shape)
    seed = draw(st.integers(0, 2**32 - 1))
    quantized = draw(st.booleans())  # grid values on a 1/4 lattice: many pixels exactly on voxel edges
    rng = np.random.default_rng(seed)
    phi0, dphi = rng.uniform(-180, 180), rng.choice([0.1, 0.25, 1 / 3, 0.5])
    phi = phi0 + dphi * (np.arange(shape[0]) + 0.5)
    iy, ix = np.arange(shape[1], dtype=float), np.arange(shape[2], dtype=float)
    gphi = np.linspace(phi0, phi0 + dphi * shape[0], draw(st.integers(2, 4)))
    giy = np.linspace(-0.5, shape[1] - 0.5, draw(st.integers(2, 5)))
    gix = np.linspace(-0.5, shape[2] - 0.5, draw(st.integers(2, 5)))
    span = draw(st.sampled_from([0.3, 2.0, 9.0]))
    ghkl = rng.uniform(-span, span, (gphi.size, giy.size, gix.size, 3))
    if quantized:
        ghkl = np.round(ghkl * 4) / 4
    data = rng.poisson(3.0, shape).astype(np.int32)
    data[rng.random(shape) < 0.1] = -1
    mask = rng.random(shape) < 0.15 if draw(st.booleans()) else None
    seconds = rng.choice([0.1, 0.05, 1 / 3], shape[0])
    ndiv = tuple(draw(st.integers(1, 5)) for _ in range(3))
    return ((gphi, giy, gix), ghkl), (data, mask, phi, iy, ix, seconds), ndiv


@st.composite
def chunkings(draw, shape):
    return tuple(draw(st.integers(1, n)) for n in shape)


def bin_all_chunks(grid, stack, chunks, ndiv, kernel):
    (axes, hkl), (data, mask, phi, iy, ix, seconds) = grid, stack
    out = []
    for sl in chunk_slices(data.shape, chunks):
        block = prepare_miller_block(axes, hkl, phi[sl[0]], iy[sl[1]], ix[sl[2]])
        m = None if mask is None else mask[sl]
        out.append(kernel(data[sl], m, block, phi[sl[0]], iy[sl[1]], ix[sl[2]], seconds[sl[0]], ndiv))
    return out


def sort_rows(rows):
    return rows[np.argsort(rows["key"], kind="stable")]


def assert_rows_equal(a, b):
    assert a.dtype == b.dtype
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# --- binning --------------------------------------------------------------------------------------


@both_builds
@SETTINGS
@given(data=st.data())
def test_bin_chunk_equals_oracle_on_uneven_chunkings(data):
    grid, stack, ndiv = data.draw(stacks())
    chunks = data.draw(chunkings(stack[0].shape))
    fast = bin_all_chunks(grid, stack, chunks, ndiv, bin_chunk)
    slow = bin_all_chunks(grid, stack, chunks, ndiv, bin_chunk_oracle)
    for f, s in zip(fast, slow, strict=True):
        assert_rows_equal(sort_rows(f), s)  # the oracle's rows come sorted by key (np.unique)
    used = sum(int(r["pixels"].sum()) for r in fast)
    keep = stack[0] != -1 if stack[1] is None else (stack[0] != -1) & ~stack[1]
    assert used == int(keep.sum())
    assert sum(int(r["counts"].sum()) for r in fast) == int(stack[0][keep].sum())


@both_builds
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bin_chunk_equals_oracle_across_row_tiles(data):
    """Chunks taller than the kernel's tile of image rows (several tiles and a partial one), with the
    tables starting small so that they grow (and the kernel resumes) in the middle of a tile."""
    grid, stack, ndiv = data.draw(stacks(max_shape=(3, 90, 70)))
    assume(stack[0].shape[1] > 32)
    hint = data.draw(st.sampled_from([0, 1_000_000]))
    (axes, hkl), (pixels, mask, phi, iy, ix, seconds) = grid, stack
    block = prepare_miller_block(axes, hkl, phi, iy, ix)
    fast = bin_chunk(pixels, mask, block, phi, iy, ix, seconds, ndiv, hint)
    assert_rows_equal(sort_rows(fast), bin_chunk_oracle(pixels, mask, block, phi, iy, ix, seconds, ndiv))


@both_builds
@SETTINGS
@given(data=st.data())
def test_chain_equals_mdx2_integrate(data):
    """bin_chunk per storage chunk -> reduce_partials -> finalize == mdx2's integrate, as float32 rows."""
    grid, stack, ndiv = data.draw(stacks())
    chunks = data.draw(chunkings(stack[0].shape))
    max_spread = data.draw(st.sampled_from([0.05, 0.3, 1.0]))
    keep = stack[0] != -1 if stack[1] is None else (stack[0] != -1) & ~stack[1]
    if not keep.any():
        return
    partials = np.concatenate(bin_all_chunks(grid, stack, chunks, ndiv, bin_chunk))
    ours = finalize(reduce_partials(partials, max_spread), ndiv)
    ref = mdx2_integrate(grid, stack, chunks, ndiv, max_spread)
    for name in ("h", "k", "l", "n", "pixels", "counts", "phi", "iy", "ix", "seconds"):
        assert ours[name].dtype == ref[name].dtype, name
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)


@pytest.mark.parametrize("final_axis", [0, 1, 2])
def test_miller_interpolation_equals_mdx2_for_every_axis_order(final_axis):
    """mdx2 interpolates the shortest block axis first; each order is exact (float64 bit for bit)."""
    block_shape = {0: (9, 4, 6), 1: (3, 11, 5), 2: (2, 3, 13)}[final_axis]
    rng = np.random.default_rng(final_axis)
    axes = (np.linspace(10.0, 14.0, 5), np.linspace(-0.5, 40.5, 6), np.linspace(-0.5, 60.5, 7))
    hkl = rng.normal(0, 20, (5, 6, 7, 3))
    phi = 10.0 + 0.3 * (np.arange(block_shape[0]) + 4.5)
    iy = np.arange(block_shape[1], dtype=float) + 17
    ix = np.arange(block_shape[2], dtype=float) + 29
    block = prepare_miller_block(axes, hkl, phi, iy, ix)
    assert block.final_axis == final_axis
    ours = miller_indices_dense(block, block_shape)
    ref = mdx2_interp_g2g_trilinear(*axes, hkl, phi, iy, ix)
    np.testing.assert_array_equal(ours, ref)
    # and the fused kernel agrees with the dense oracle on this order
    data = rng.poisson(2.0, block_shape).astype(np.int32)
    seconds = np.full(block_shape[0], 0.1)
    for ndiv in [(1, 1, 1), (4, 3, 7)]:
        fast = bin_chunk(data, None, block, phi, iy, ix, seconds, ndiv)
        assert_rows_equal(sort_rows(fast), bin_chunk_oracle(data, None, block, phi, iy, ix, seconds, ndiv))


@both_builds
def test_bin_chunk_rounds_half_to_even_as_numpy():
    """h * ndiv exactly on a half-integer: numpy's round (as mdx2) sends 0.5 -> 0, 1.5 -> 2, -1.5 -> -2."""
    axes = (np.array([0.0, 1.0, 2.0]), np.array([-0.5, 1.5]), np.array([-0.5, 3.5]))
    hkl = np.zeros((3, 2, 2, 3))
    for c, values in enumerate(([0.5, 1.5, 9.0], [-0.5, 2.5, 9.0], [-1.5, 3.5, 9.0])):
        hkl[..., c] = np.array(values)[:, None, None]  # varies along phi only
    phi, iy, ix = np.array([0.0, 1.0]), np.arange(2.0), np.arange(4.0)  # frames exactly on grid points
    block = prepare_miller_block(axes, hkl, phi, iy, ix)
    data = np.ones((2, 2, 4), np.int32)
    for kernel in (bin_chunk, bin_chunk_oracle):
        rows = sort_rows(kernel(data, None, block, phi, iy, ix, np.ones(2), (1, 1, 1)))
        assert [tuple(int(x) for x in v) for v in zip(*unpack_keys(rows["key"]), strict=True)] == [
            (0, 0, -2),
            (2, 2, 4),
        ]
        assert rows["pixels"].tolist() == [8, 8]


@both_builds
@pytest.mark.parametrize("bad", [8.0 * (KEY_LIMIT + 1), -8.0 * (KEY_LIMIT + 1), float("nan")])
def test_bin_chunk_refuses_indices_a_key_cannot_hold(bad):
    """A kept pixel whose round(l * ndiv) is beyond KEY_LIMIT, or NaN, is an error, not a wrong key;
    the same value under excluded pixels (counts -1 or masked) is ignored."""
    axes = (np.array([0.0, 1.0, 2.0]), np.array([-0.5, 1.5]), np.array([-0.5, 1.5, 3.5]))
    hkl = np.ones((3, 2, 3, 3))
    hkl[:, :, 2, 2] = bad  # the last ix grid point: pixels x = 2, 3 take a quarter or more of it
    phi, iy, ix = np.array([0.0, 1.0]), np.arange(2.0), np.arange(4.0)
    block = prepare_miller_block(axes, hkl, phi, iy, ix)
    args = (block, phi, iy, ix, np.ones(2), (1, 1, 1))
    data = np.ones((2, 2, 4), np.int32)
    with pytest.raises(ValueError, match="too fine"):
        bin_chunk(data, None, *args)
    mask = np.zeros((2, 2, 4), bool)
    mask[..., 2:] = True
    assert bin_chunk(data, mask, *args)["pixels"].sum() == 8
    data[..., 2:] = -1
    assert bin_chunk(data, None, *args)["pixels"].sum() == 8


# --- partial observations -------------------------------------------------------------------------


@st.composite
def partial_rows(draw):
    """Partial rows as several storage chunks give them: a few voxels, each seen by several chunks."""
    n = draw(st.integers(0, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = np.zeros(n, PARTIAL_DTYPE)
    rows["key"] = pack_keys(rng.integers(-2, 3, n), rng.integers(-2, 3, n), rng.integers(-1, 2, n))
    rows["pixels"] = rng.integers(1, 40, n)
    rows["counts"] = rng.integers(0, 500, n)
    dphi = draw(st.sampled_from([0.1, 0.25, 1 / 3]))
    frame_mean = draw(st.floats(-180, 180)) + dphi * rng.integers(0, 40, n)
    rows["phi"] = frame_mean * rows["pixels"]
    rows["iy"] = rng.integers(0, 200, n) * rows["pixels"]
    rows["ix"] = rng.integers(0, 500, n) * rows["pixels"]
    rows["seconds"] = 0.1 * rows["pixels"]
    return rows


def pandas_sums_with_reduceat(rows) -> bool:
    """pandas 3.1 sums with np.add.reduceat (not Kahan) when the rows are already sorted by group;
    mdx2's multi-chunk tables never are (see kahan_reduceat), so such inputs are not compared."""
    return bool(np.all(np.diff(rows["key"]) >= 0)) and rows.size > 2


@both_builds
@SETTINGS
@given(rows=partial_rows(), max_spread=st.sampled_from([0.1, 0.5, 1.0, 2.5]))
def test_reduce_partials_equals_oracle(rows, max_spread):
    assume(not pandas_sums_with_reduceat(rows))
    fast = reduce_partials(rows, max_spread)
    slow = reduce_partials_oracle(rows, max_spread)
    assert_rows_equal(fast, slow)
    assert fast["pixels"].sum() == rows["pixels"].sum() and fast["counts"].sum() == rows["counts"].sum()


@both_builds
@SETTINGS
@given(data=st.data())
def test_reduce_partials_of_binned_chunks_equals_oracle(data):
    grid, stack, ndiv = data.draw(stacks())
    chunks = data.draw(chunkings(stack[0].shape))
    pieces = bin_all_chunks(grid, stack, chunks, ndiv, bin_chunk)
    rows = np.concatenate(pieces) if pieces else np.zeros(0, PARTIAL_DTYPE)
    assume(not pandas_sums_with_reduceat(rows))
    assert_rows_equal(reduce_partials(rows, 1.0), reduce_partials_oracle(rows, 1.0))


@both_builds
@SETTINGS
@given(
    rows=partial_rows(), max_spread=st.sampled_from([0.1, 1.0]), ndiv=st.sampled_from([(1, 1, 1), (3, 7, 10)])
)
def test_reduce_to_table_equals_finalize_of_reduce_partials(rows, max_spread, ndiv):
    """The reduce task's one-pass table is finalize(reduce_partials(...)) bit for bit."""
    from pipeline.io.tables import INTEGRATED_SCHEMA
    from pipeline.kernels.partials import reduce_to_table

    table = reduce_to_table(rows, max_spread, ndiv, np.dtype(list(INTEGRATED_SCHEMA.items())))
    columns = finalize(reduce_partials(rows, max_spread), ndiv)
    for name, dtype in INTEGRATED_SCHEMA.items():
        assert table[name].dtype == dtype
        np.testing.assert_array_equal(
            table[name].view(f"u{dtype.itemsize}"), columns[name].view(f"u{dtype.itemsize}")
        )


@both_builds
def test_kahan_reduceat_equals_pandas_groupby_sum():
    """Many groups in shuffled rows (pandas' Kahan path), including values where naive sums differ."""
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 12, 3000)
    group = np.repeat(np.arange(lengths.size), lengths)
    values = rng.uniform(-50, 400, group.size) * rng.choice([0.1, 1 / 3, 1.0], group.size)
    perm = rng.permutation(group.size)
    expected = pd.DataFrame({"g": group[perm], "v": values[perm]}).groupby("g").sum()["v"].to_numpy()
    order = np.argsort(group[perm], kind="stable")
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    np.testing.assert_array_equal(kahan_reduceat(values[perm][order][:, None], starts)[:, 0], expected)
    assert np.any(np.add.reduceat(values[perm][order], starts) != expected)  # the naive sum is not enough


@both_builds
def test_reduce_partials_splits_by_max_spread():
    rows = np.zeros(3, PARTIAL_DTYPE)
    rows["key"] = pack_keys([1, 1, 1], [0, 0, 0], [0, 0, 0])
    rows["pixels"] = 1
    rows["phi"] = [10.0, 10.9, 11.2]  # n = floor((m - 10) / 1) = 0, 0, 1
    out = reduce_partials(rows, 1.0)
    assert out["n"].tolist() == [0, 1] and out["pixels"].tolist() == [2, 1]


def test_reduce_partials_rejects_other_dtypes():
    with pytest.raises(TypeError):
        reduce_partials(np.zeros(3), 1.0)


# --- keys -----------------------------------------------------------------------------------------

indices = st.integers(-KEY_LIMIT, KEY_LIMIT)


@SETTINGS
@given(hkl=st.lists(st.tuples(indices, indices, indices), min_size=1, max_size=50))
def test_pack_unpack_round_trip_and_order(hkl):
    H, K, L = (np.array(v, dtype=np.int64) for v in zip(*hkl, strict=True))
    keys = pack_keys(H, K, L)
    for a, b in zip(unpack_keys(keys), (H, K, L), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.argsort(keys, kind="stable"), np.lexsort((L, K, H)))


# --- expressions ----------------------------------------------------------------------------------

EXPRESSIONS = json.loads((DATA / "expressions.json").read_text())


@pytest.mark.parametrize("case", EXPRESSIONS["cases"], ids=lambda c: c["text"][:40])
def test_expression_equals_numexpr(case):
    """Every ASU string mdx2 builds from cctbx (incl. change-of-basis forms), mdx2's reflection
    conditions and extra forms (1/2*h, floor-mod of negatives) give numexpr's truth table."""
    grid = np.array(EXPRESSIONS["grid"])
    h, k, l = (a.ravel() for a in np.meshgrid(grid, grid, grid, indexing="ij"))
    truth = np.unpackbits(np.frombuffer(base64.b64decode(case["truth"]), np.uint8), count=h.size).astype(bool)
    np.testing.assert_array_equal(parse_miller_expression(case["text"])(h, k, l), truth)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("((h-l)>=0)", [True, False, True]),
        ("1/2*h == 1", [True, False, False]),
        ("h % 3 == 2", [True, False, True]),  # numexpr/numpy floor mod: -1 % 3 == 2
        ("(-h+k+l) % 3 == 0", [True, True, False]),  # -4 % 3 == 2
        ("(h>=0) & ((k>0) | (l==0))", [True, False, False]),
    ],
)
def test_expression_values(text, expected):
    h, k, l = np.array([2, 0, -1]), np.array([1, 0, 0]), np.array([1, 3, -5])
    assert parse_miller_expression(text)(h, k, l).tolist() == expected


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "h.__class__",
        "h.real",
        "abs(h) > 0",
        "h[0] == 1",
        "(lambda: 1)()",
        "'h' == 'h'",
        "x > 0",
        "H > 0",
        "np > 0",
        "[h for h in k]",
        "h if k else l",
        "h := 1",
        "h @ k",
        "h ** 2 > 0",
        "h << 2",
        "b'h' == h",
        "{h: k}",
        "f'{h}'",
        "",
        "h >=",
        "-" * 200 + "h > 0",  # nests deeper than the parser allows
        "(h+" * 80 + "h" + ")" * 80 + " > 0",
        "h > 0" + " & (h > 0)" * 600,
    ],
)
def test_expression_parser_rejects(text):
    with pytest.raises(InputError):
        parse_miller_expression(text)


def test_expression_parser_rejects_non_strings():
    with pytest.raises(InputError):
        parse_miller_expression(b"h > 0")


# --- asymmetric unit ------------------------------------------------------------------------------

SYMMETRY = json.loads((DATA / "symmetry_cases.json").read_text())


@pytest.mark.parametrize("case", SYMMETRY["cases"], ids=lambda c: c["space_group"])
def test_to_asu_equals_mdx2_and_oracle(case):
    lo, hi = SYMMETRY["grid"]
    grid = np.arange(lo, hi + 1)
    H, K, L = (a.ravel() for a in np.meshgrid(grid, grid, grid, indexing="ij"))
    ops = np.array(case["ops"], dtype=float)
    asu = parse_miller_expression(case["asu"])
    ours = to_asu(H, K, L, ops, asu)
    np.testing.assert_array_equal(np.stack(ours), np.array(case["out"]))
    np.testing.assert_array_equal(np.stack(ours), np.stack(to_asu_oracle(H, K, L, ops, asu)))
    assert asu(*ours[:3]).all()


@SETTINGS
@given(hkl=hnp.arrays(np.int64, st.tuples(st.just(3), st.integers(0, 40)), elements=st.integers(-30, 30)))
def test_to_asu_equals_oracle_random(hkl):
    for case in SYMMETRY["cases"][::3]:
        ops, asu = np.array(case["ops"], dtype=float), parse_miller_expression(case["asu"])
        np.testing.assert_array_equal(
            np.stack(to_asu(*hkl, ops, asu)), np.stack(to_asu_oracle(*hkl, ops, asu))
        )


def test_to_asu_p1():
    H, K, L, op = to_asu([1, -2, 3], [0, 1, 2], [-3, 0, 4], None, None)
    assert (H.tolist(), K.tolist(), L.tolist(), op.tolist()) == ([1, -2, 3], [0, 1, 2], [3, 0, 4], [1, 0, 0])


@SETTINGS
@given(hkl=hnp.arrays(np.int64, st.tuples(st.just(3), st.integers(65, 400)), elements=st.integers(-12, 12)))
def test_guided_to_asu_equals_oracle_on_sorted_rows(hkl):
    """Sorted rows, more than the guided search's threshold: the guess-and-lower path, with the
    lowering limited to rows on the ASU's planes, and (the ASU rewritten with a %, so that it has no
    planes) lowering tested on every row."""
    hkl = hkl[:, np.lexsort(hkl[::-1])]
    for case in SYMMETRY["cases"][::2]:
        ops = np.array(case["ops"], dtype=float)
        for text in (case["asu"], f"({case['asu']}) & ((h - h) % 2 == 0)"):
            asu = parse_miller_expression(text)
            np.testing.assert_array_equal(
                np.stack(to_asu(*hkl, ops, asu)), np.stack(to_asu_oracle(*hkl, ops, asu))
            )


@pytest.mark.parametrize(
    ("text", "planes"),
    [
        ("(h>=0) & (((l>=h) & (k>h)) | ((l==h) & (k==h)))", lambda h, k, l: (h == 0) | (l == h) | (k == h)),
        ("(l>0) | ((l==0) & ((h>0) | ((h==0) & (k>=0))))", lambda h, k, l: (l == 0) | (h == 0) | (k == 0)),
        ("2*h - k >= 0", lambda h, k, l: 2 * h - k == 0),
        ("(h >= -k) ^ ~(+l < 3*h)", lambda h, k, l: (h == -k) | (l == 3 * h)),
    ],
)
def test_asu_planes(text, planes):
    """on_planes is where some comparison of the expression holds with equality."""
    g = np.arange(-3, 4)
    h, k, l = (a.ravel() for a in np.meshgrid(g, g, g, indexing="ij"))
    np.testing.assert_array_equal(parse_miller_expression(text).on_planes(h, k, l), planes(h, k, l))


@pytest.mark.parametrize(
    "text", ["(h + k + l) % 2 == 0", "h > 1", "h * k >= 0", "(h >= 0) & (h // 2 >= 0)", "(h > 0) == (k > 0)"]
)
def test_asu_planes_only_for_planes_through_the_origin(text):
    assert parse_miller_expression(text).on_planes(np.arange(3), np.arange(3), np.arange(3)) is None


# --- corrections ----------------------------------------------------------------------------------


def _uneven_axis(rng, n, lo, hi):
    return np.sort(rng.choice(np.linspace(lo, hi, 4 * n), size=n, replace=False))


def _points(rng, axis, n):
    """Coordinates below, inside and above ``axis``, including its points themselves."""
    span = axis[-1] - axis[0] if axis.size > 1 else 1.0
    inside = rng.uniform(axis[0] - 0.1 * span, axis[-1] + 0.1 * span, n)
    inside[: axis.size] = axis[: min(n, axis.size)]
    return rng.permutation(inside).astype(np.float32)


@both_builds
@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 300),
    block=st.sampled_from([7, 64, 1 << 16]),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    background=st.sampled_from(["none", "grid", "one phi", "nan"]),
    symmetry=st.sampled_from([None, *range(0, len(SYMMETRY["cases"]), 3)]),
)
def test_correct_rows_equals_oracle(seed, n, block, flags, background, symmetry):
    from pipeline.kernels import corrections
    from pipeline.kernels.corrections import CorrectionModel, correct_rows, correct_rows_oracle
    from pipeline.model import BackgroundGrid, CorrectionGrid

    rng = np.random.default_rng(seed)
    iy, ix = _uneven_axis(rng, 7, -0.5, 100.0), _uneven_axis(rng, 9, -0.5, 120.0)
    names = ("solid_angle", "attenuation", "efficiency", "polarization", "d3s")
    grid = CorrectionGrid(iy, ix, {name: rng.uniform(0.5, 1.5, (7, 9)) for name in names})
    bkg = None
    if background != "none":
        phi = np.array([0.5]) if background == "one phi" else _uneven_axis(rng, 3, 0.0, 10.0)
        b_iy, b_ix = _uneven_axis(rng, 4, 0.0, 100.0), _uneven_axis(rng, 5, 0.0, 120.0)
        rate = rng.uniform(0, 2, (phi.size, 4, 5))
        if background == "nan":
            rate[0, 1, 2] = np.nan
        bkg = BackgroundGrid(phi, b_iy, b_ix, rate)
    ops = asu = None
    if symmetry is not None:
        case = SYMMETRY["cases"][symmetry]
        ops, asu = np.array(case["ops"], dtype=float), parse_miller_expression(case["asu"])
    ub = rng.normal(size=(3, 3)) * 0.02 + np.eye(3) * 0.05
    attenuation, efficiency, polarization, lorentz = flags
    model = CorrectionModel(ub, ops, asu, grid, bkg, attenuation, efficiency, polarization, lorentz)
    ndiv = (2, 3, 1)
    rows = {
        **{c: (rng.integers(-20, 21, n) / d).astype(np.float32) for c, d in zip("hkl", ndiv, strict=True)},
        "phi": _points(rng, bkg.phi if bkg is not None else np.array([0.0, 10.0]), n),
        "iy": _points(rng, iy, n),
        "ix": _points(rng, ix, n),
        "seconds": rng.uniform(0.1, 2, n).astype(np.float32),
        "counts": rng.integers(0, 50, n).astype(np.int32),
        "pixels": rng.integers(1, 20, n).astype(np.int32),
        "n": rng.integers(1, 5, n).astype(np.float64),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(corrections, "BLOCK_ROWS", block)  # blocks of rows, the last one short
        ours = correct_rows(rows, ndiv, model)
    want = correct_rows_oracle(rows, ndiv, model)
    assert ours.keys() == want.keys()
    for name in want:
        assert ours[name].dtype == want[name].dtype, name
        np.testing.assert_allclose(ours[name], want[name], rtol=1e-6, atol=0, equal_nan=True, err_msg=name)


@both_builds
@settings(max_examples=60, deadline=None)
@given(
    hkl=hnp.arrays(np.int64, st.tuples(st.integers(0, 400), st.just(3)), elements=st.integers(-40, 40)),
    spread=st.sampled_from([1, 1000, KEY_LIMIT]),
)
def test_stable_key_order_equals_argsort(hkl, spread):
    """The radix sort of spilled runs gives numpy's stable order (narrow and wide key ranges, the
    timsort fallback), and take_rows gathers the same rows as fancy indexing."""
    from pipeline.kernels.sorting import concat_rows, stable_key_order, stable_key_order_oracle, take_rows

    H, K, L = hkl.T
    keys = pack_keys(np.clip(H * spread, -KEY_LIMIT, KEY_LIMIT), K, L)
    order = stable_key_order(keys)
    np.testing.assert_array_equal(order, stable_key_order_oracle(keys))
    rows = np.zeros(keys.size, PARTIAL_DTYPE)
    rows["key"] = keys
    rows["phi"] = np.arange(keys.size) * 0.5
    np.testing.assert_array_equal(take_rows(rows, order), rows[order])
    pieces = [rows[: keys.size // 3], rows[keys.size // 3 :]]
    np.testing.assert_array_equal(concat_rows(pieces, PARTIAL_DTYPE), np.concatenate(pieces))


@both_builds
def test_reduce_to_columns_equals_reduce_to_table():
    from pipeline.io.tables import INTEGRATED_SCHEMA
    from pipeline.kernels.partials import reduce_to_columns, reduce_to_table

    rng = np.random.default_rng(3)
    rows = np.zeros(500, PARTIAL_DTYPE)
    rows["key"] = pack_keys(rng.integers(-3, 3, 500), rng.integers(-3, 3, 500), rng.integers(-3, 3, 500))
    rows["pixels"] = rng.integers(1, 9, 500)
    rows["counts"] = rng.integers(0, 99, 500)
    for name in ("phi", "iy", "ix", "seconds"):
        rows[name] = rng.random(500) * rows["pixels"] * 10
    table = reduce_to_table(rows, 1.0, (2, 3, 4), np.dtype(list(INTEGRATED_SCHEMA.items())))
    columns = reduce_to_columns(rows, 1.0, (2, 3, 4), INTEGRATED_SCHEMA)
    for name, dtype in INTEGRATED_SCHEMA.items():
        assert columns[name].dtype == dtype and columns[name].flags.c_contiguous
        np.testing.assert_array_equal(columns[name], table[name])
    assert reduce_to_columns(rows[:0], 1.0, (1, 1, 1), INTEGRATED_SCHEMA)["h"].size == 0
