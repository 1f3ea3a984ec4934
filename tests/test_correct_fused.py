"""``correct``'s fused numba kernels == its numpy path (the oracle), bit for bit, every column.

Random tables on uneven grids (points on grid points, outside the grids, NaN coordinates, NaN in the
background), every flag, every recorded space group, rows sorted (the guided ASU search) and not,
tables cut into uneven pieces; the ASU expressions' truth tables against the numpy evaluator; the
cases the fused path leaves to numpy (other dtypes, expressions that are not made of planes, indices
beyond the ASU limit). Every test runs twice: with the kernels compiled ahead of time (the module
``make install`` builds; skipped where it is not built) and with numba's jitted kernels.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.kernels import corrections_fused as fused
from pipeline.kernels.corrections import CorrectionModel, correct_rows
from pipeline.model import BackgroundGrid, CorrectionGrid
from pipeline.symmetry.expressions import parse_miller_expression

SYMMETRY = json.loads((Path(__file__).parent / "data" / "symmetry_cases.json").read_text())
NAMES = ("solid_angle", "attenuation", "efficiency", "polarization", "d3s")


@pytest.fixture(autouse=True, params=["ahead", "jit"])
def kernels(request, monkeypatch):
    """Which build of the kernels the fused path runs: compiled ahead of time, or numba's jitted."""
    load = fused.load_kernels
    if request.param == "jit":
        monkeypatch.setattr(fused, "load_kernels", lambda ahead=True: load(ahead=False))
    elif not load().compiled_ahead:
        pytest.skip("correct's kernels are not compiled ahead of time here (make install builds them)")
    return request.param


def _axis(rng, n, lo, hi):
    return np.sort(rng.choice(np.linspace(lo, hi, 4 * n), size=n, replace=False))


def _points(rng, axis, n, nan=0.0):
    span = axis[-1] - axis[0]
    x = rng.uniform(axis[0] - 0.1 * span, axis[-1] + 0.1 * span, n)
    x[: axis.size] = axis[: min(n, axis.size)]  # exactly on grid points, the last one too
    x = rng.permutation(x)
    x[rng.random(n) < nan] = np.nan
    return x.astype(np.float32)


def _case(seed, n, background="grid", symmetry=None, flags=(True, True, True, False), sort=False, nan=0.01):
    rng = np.random.default_rng(seed)
    iy, ix = _axis(rng, 7, -0.5, 100.0), _axis(rng, 9, -0.5, 120.0)
    grid = CorrectionGrid(iy, ix, {name: rng.uniform(0.5, 1.5, (7, 9)) for name in NAMES})
    bkg = None
    if background != "none":
        phi = _axis(rng, 2 if background == "two phi" else 3, 0.0, 10.0)
        b_iy, b_ix = _axis(rng, 4, 0.0, 100.0), _axis(rng, 5, 0.0, 120.0)
        rate = rng.uniform(0, 2, (phi.size, 4, 5))
        if background == "nan":
            rate[0, 1, 2] = np.nan
        bkg = BackgroundGrid(phi, b_iy, b_ix, rate)
    ops = asu = None
    if symmetry is not None:
        case = SYMMETRY["cases"][symmetry]
        ops, asu = np.array(case["ops"], dtype=float), parse_miller_expression(case["asu"])
    ub = rng.normal(size=(3, 3)) * 0.02 + np.eye(3) * 0.05
    model = CorrectionModel(ub, ops, asu, grid, bkg, *flags)
    ndiv = (2, 3, 1)
    hkl = rng.integers(-25, 26, (3, n))
    if sort:
        hkl = hkl[:, np.lexsort(hkl[::-1])]
    rows = {
        **{c: (hkl[i] / d).astype(np.float32) for i, (c, d) in enumerate(zip("hkl", ndiv, strict=True))},
        "phi": _points(rng, bkg.phi if bkg is not None else np.array([0.0, 10.0]), n, nan),
        "iy": _points(rng, iy, n, nan),
        "ix": _points(rng, ix, n, nan),
        "seconds": rng.uniform(0.1, 2, n).astype(np.float32),
        "counts": rng.integers(0, 50, n).astype(np.int32),
        "pixels": rng.integers(1, 20, n).astype(np.int32),
        "n": rng.integers(1, 5, n).astype(np.float64),
    }
    if n:
        rows["seconds"][0] = 0.0  # a rate of inf (or NaN for 0 counts), as numpy gives
    return rows, ndiv, model


def _assert_same(ours, want):
    assert ours.keys() == want.keys()
    for name in want:
        assert ours[name].dtype == want[name].dtype, name
        assert ours[name].tobytes() == want[name].tobytes(), name


def _pieces(rows, cuts):
    edges = [0, *cuts, len(rows["h"])]
    return [{c: a[lo:hi] for c, a in rows.items()} for lo, hi in itertools.pairwise(edges)]


@pytest.mark.parametrize("background", ["none", "grid", "two phi", "nan"])
@pytest.mark.parametrize("flags", [(True, True, True, False), (False, True, False, True), (False,) * 4])
def test_fused_equals_numpy_corrections(background, flags):
    rows, ndiv, model = _case(1, 3000, background, None, flags)
    assert fused.fused_plan(rows, ndiv, model) is not None
    _assert_same(correct_rows(rows, ndiv, model), correct_rows(rows, ndiv, model, fused=False))


@pytest.mark.parametrize(
    "symmetry", range(len(SYMMETRY["cases"])), ids=lambda i: SYMMETRY["cases"][i]["space_group"]
)
def test_fused_equals_numpy_every_space_group(symmetry):
    for sort in (True, False):
        rows, ndiv, model = _case(symmetry, 2500, "grid", symmetry, sort=sort)
        plan = fused.fused_plan(rows, ndiv, model)
        assert plan is not None and not plan.p1
        _assert_same(correct_rows(rows, ndiv, model), correct_rows(rows, ndiv, model, fused=False))


@pytest.mark.parametrize("seed", range(4))
def test_fused_equals_numpy_on_uneven_pieces(seed):
    """Pieces of a sorted table (as the row ranges of tasks), each corrected on its own, against the
    numpy path on the whole table."""
    rows, ndiv, model = _case(seed, 5000, "nan", 14, sort=True)
    cuts = sorted(np.random.default_rng(seed).choice(np.arange(1, 5000), 5, replace=False).tolist())
    parts = [correct_rows(p, ndiv, model) for p in _pieces(rows, [1, *cuts])]
    ours = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    _assert_same(ours, correct_rows(rows, ndiv, model, fused=False))


def test_fused_empty_and_p1():
    for n in (0, 1, 70):
        rows, ndiv, model = _case(3, n, "grid", None)
        _assert_same(correct_rows(rows, ndiv, model), correct_rows(rows, ndiv, model, fused=False))


@pytest.mark.parametrize(
    "text",
    [
        *{c["asu"] for c in SYMMETRY["cases"]},
        "(h >= -k) ^ ~(+l < 3*h)",
        "not (0 <= h < k) or (2*h - k == l)",
        "(h != k) & ((l > 0) | (h + k + l >= 0))",
    ],
)
def test_asu_table_equals_expression(text):
    asu = parse_miller_expression(text)
    table = fused.compile_asu(asu)
    assert table is not None
    g = np.arange(-6, 7)
    h, k, l = (a.ravel() for a in np.meshgrid(g, g, g, indexing="ij"))
    forms = table.forms @ np.stack((h, k, l))  # (F, P)
    bits = np.zeros(h.size, dtype=np.int64)
    codes = [np.equal, np.not_equal, np.less, np.less_equal, np.greater, np.greater_equal]
    for j, (a, b, code) in enumerate(table.comparisons):
        bits |= codes[code](forms[a], forms[b]).astype(np.int64) << j
    np.testing.assert_array_equal(table.table[bits], asu(h, k, l))


@pytest.mark.parametrize(
    "text", ["(h + k + l) % 2 == 0", "h > 1", "h * k >= 0", "(h > 0) == (k > 0)", "~True | (h > 0)"]
)
def test_asu_table_only_for_planes(text):
    assert fused.compile_asu(parse_miller_expression(text)) is None


def test_numpy_path_where_fused_does_not_apply():
    rows, ndiv, model = _case(5, 300, "grid", 9)
    assert fused.fused_plan({**rows, "h": rows["h"].astype(np.float64)}, ndiv, model) is None
    assert fused.fused_plan(rows, (2, 3, np.int64(1)), model) is None
    odd_asu = parse_miller_expression("(h >= 0) & ((h + k) % 2 == 0)")
    odd = CorrectionModel(model.ub_matrix, model.ops, odd_asu, model.corrections, model.background)
    assert fused.fused_plan(rows, ndiv, odd) is None
    flat = CorrectionGrid(np.array([1.0]), model.corrections.ix, {n: np.ones((1, 9)) for n in NAMES})
    one_row = CorrectionModel(model.ub_matrix, None, None, flat, None)
    assert fused.fused_plan(rows, ndiv, one_row) is None
    _assert_same(correct_rows(rows, ndiv, one_row), correct_rows(rows, ndiv, one_row, fused=False))


def test_fused_leaves_errors_to_numpy():
    rows, ndiv, model = _case(6, 200, "grid", 14)
    rows["h"][17] = 2.0**29  # x ndiv 2: beyond the ASU limit
    with pytest.raises(ValueError, match="beyond 2\\*\\*29"):
        correct_rows(rows, ndiv, model)
    rows["h"][17] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        correct_rows(rows, ndiv, model)


GOLDENS = json.loads((Path(__file__).parent / "data" / "goldens.json").read_text())["correct"]


@pytest.mark.parametrize("case", GOLDENS, ids=lambda c: Path(c["reference"]).stem)
def test_correct_command_fused_equals_numpy(case, tmp_path, monkeypatch):
    """The whole threads executor (plain reads, both kernels, direct writes) on the golden tables,
    fused forced (they are below ``FUSED_MIN_ROWS``) against the numpy path: every column's bytes."""
    import h5py

    import pipeline
    from pipeline.graph import correct as graph

    data = Path(__file__).parent / "data"
    opts = dict(case["options"])
    if "background" in opts:
        opts["background"] = data / case["dataset"] / opts["background"]
    tables = {}
    for name, limit in (("fused", 0), ("numpy", 1 << 62)):
        monkeypatch.setattr(graph, "FUSED_MIN_ROWS", limit)
        out = tmp_path / f"{name}.nxs"
        pipeline.correct(
            data / case["dataset"] / "geometry.nxs", data / case["integrated"], outfile=out, **opts
        )
        with h5py.File(out, "r") as f:
            g = f["entry/hkl_table"]
            tables[name] = {c: (g[c].dtype, g[c][()].tobytes()) for c in g}
    assert tables["fused"] == tables["numpy"]


def test_ahead_of_time_kernels_load_without_numba(kernels):
    if kernels != "ahead":
        pytest.skip("the module compiled ahead of time only")
    code = (
        "import sys; from pipeline.kernels import corrections_fused as f; k = f.load_kernels(); "
        "print(k.compiled_ahead, 'numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_ahead_of_time_module_is_named_after_its_source(tmp_path, monkeypatch, kernels):
    """A module built from another version of the kernels' source is never loaded."""
    import importlib.util

    from pipeline.kernels import aot
    from pipeline.kernels import corrections_numba as source

    if kernels != "jit":
        pytest.skip("once")
    name = aot.ahead_name(source)
    edited = tmp_path / "corrections_numba.py"
    edited.write_bytes(Path(source.__file__).read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(source, "__file__", str(edited))
    assert aot.ahead_name(source) != name
    assert importlib.util.find_spec(f"pipeline.kernels.{aot.ahead_name(source)}") is None


def test_arrays_the_module_does_not_take_go_to_the_jitted_kernels(kernels):
    """Strided columns (a structured table's fields) give the same bits (the jitted kernels take them)."""
    rows, ndiv, model = _case(7, 300, symmetry=0, sort=True)
    table = np.empty(300, dtype=[(c, a.dtype) for c, a in rows.items()])
    for c, a in rows.items():
        table[c] = a
    strided = {c: table[c] for c in rows}
    assert not strided["h"].flags.c_contiguous
    _assert_same(correct_rows(strided, ndiv, model), correct_rows(rows, ndiv, model, fused=False))
