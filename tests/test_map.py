"""``diffuse map`` against mdx2.map 1.0.5: the kernel against its oracle, the goldens of tests/data/map
(mdx2's maps of mdx2's merged tables of the cubic and monoclinic datasets), datasets kept apart
(other space groups, made and mapped by mdx2 live through refkit; skipped without it), the file
layout, the PNG and bad input."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.api.map import make_map
from pipeline.errors import ConfigError, InputError
from pipeline.io.geometry import read_symmetry
from pipeline.io.grids import read_map
from pipeline.kernels.maps import (
    TableIndex,
    grid_axes,
    map_block,
    map_block_oracle,
    map_block_orbits,
    map_dtype,
    orbits,
)
from pipeline.qc.map_slice import choose_slice
from pipeline.symmetry.expressions import parse_miller_expression

DATA = Path(__file__).parent / "data"
CASES = json.loads((DATA / "map" / "cases.json").read_text())
GOLDEN = [(ds, case) for ds, entry in CASES.items() for case in entry["maps"]]
REFKIT = Path(os.environ.get("DIFFUSE_REFKIT", Path(__file__).parents[2] / "shared" / "refkit"))
if not (REFKIT / "setup.sh").exists():
    REFKIT = Path("/work/shared/refkit")
HELDOUT_ROOT = Path(os.environ.get("DIFFUSE_MAP_HELDOUT", "/tmp/diffuse-map-heldout"))
# name -> (make_dataset options, subdivide); none of these space groups is tuned on in tests/data
HELDOUT = {
    "p212121": (["--hall", " P 2ac 2ab", "--cell", "50", "60", "70", "90", "90", "90"], "2 2 2"),
    "p6322": (["--hall", " P 6c 2c", "--cell", "60", "60", "90", "90", "90", "120"], "2 2 3"),
    "c2": (["--hall", " C 2y", "--cell", "100", "50", "60", "90", "110", "90"], "3 2 2"),
    "p4": (["--hall", " P 4", "--cell", "60", "60", "80", "90", "90", "90"], "2 2 2"),
    "r3": (["--hall", " R 3", "--cell", "80", "80", "60", "90", "90", "120"], "2 2 2"),
    "p1bar": (["--hall", "-P 1", "--cell", "50", "60", "70", "80", "95", "105"], "2 2 2"),
}


def _mdx2_map(path: Path) -> tuple[h5py.File, h5py.Group]:
    f = h5py.File(path, "r")
    name = next(iter(f["entry"]))
    return f, f["entry"][name]


def assert_same_map(ours: Path, ref: Path, signal: str) -> None:
    """Same group name and attributes, same axes (exactly), same values and dtype (NaN where NaN)."""
    fr, gr = _mdx2_map(ref)
    with fr, h5py.File(ours, "r") as fo:
        go = fo["entry"][signal]
        assert gr.name == go.name
        for attr in ("NX_class", "signal", "mdx2_module", "mdx2_class"):
            assert go.attrs[attr] == gr.attrs[attr], attr
        assert list(go.attrs["axes"]) == list(gr.attrs["axes"])
        for axis in ("h", "k", "l"):
            assert go[axis].dtype == gr[axis].dtype
            np.testing.assert_array_equal(go[axis][()], gr[axis][()])
        a, b = go["signal"][()], gr["signal"][()]
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # NaN at the same places counts as equal


# --- kernel ------------------------------------------------------------------------------------------


def _cubic_symmetry():
    sym = read_symmetry(DATA / "cubic" / "geometry.nxs")
    return sym.laue_group_operators, parse_miller_expression(sym.reciprocal_space_asu)


@pytest.mark.parametrize("splits", [[7], [1, 3, 3], [2, 2, 2, 1]])
def test_blocks_match_the_oracle(splits):
    ops, asu = _cubic_symmetry()
    rng = np.random.default_rng(5)
    ndiv = (2, 3, 1)
    axes = grid_axes((-1.5, 1.5, -1, 1.34, -2, 2), ndiv)
    H, K, L = (rng.integers(-8, 9, 400) for _ in range(3))
    keep = np.asarray(asu(H, K, L), dtype=bool)
    keys = np.unique(np.stack([H[keep], K[keep], L[keep]]), axis=1)
    table = {
        "h": keys[0] / ndiv[0],
        "k": keys[1] / ndiv[1],
        "l": keys[2] / ndiv[2],
        "intensity": rng.normal(size=keys.shape[1]).astype(np.float32),
    }
    index = TableIndex.from_table(table["h"], table["k"], table["l"], ndiv, table["intensity"])
    assert axes.shape[0] == sum(splits)
    for symmetry in (True, False):
        bounds = np.cumsum([0, *splits])
        got = np.concatenate(
            [map_block(axes, a, b, index, ops, asu, symmetry) for a, b in itertools.pairwise(bounds)]
        )
        want = map_block_oracle(axes, 0, axes.shape[0], table, ndiv, "intensity", ops, asu, symmetry)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
        orb = orbits(index, ops, asu, symmetry)
        for use_numba in (False, True):
            fast = [map_block_orbits(axes, a, b, orb, use_numba) for a, b in itertools.pairwise(bounds)]
            np.testing.assert_array_equal(np.concatenate(fast), want)
        assert np.isfinite(got).any()


SYMMETRY_CASES = json.loads((DATA / "symmetry_cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", SYMMETRY_CASES, ids=[c["hall"].strip() for c in SYMMETRY_CASES])
def test_orbits_fast_path_equals_pointwise(case):
    """Rows sent to their orbits give what mapping every point to the ASU gives (16 settings, rows
    inside and outside the ASU, several blocks)."""
    ops = np.asarray(case["ops"], dtype=float)
    asu = parse_miller_expression(case["asu"])
    rng = np.random.default_rng(len(case["hall"]))
    ndiv = (2, 1, 3)
    H, K, L = (rng.integers(-9, 10, 3000) for _ in range(3))
    keys = np.unique(np.stack([H, K, L]), axis=1)
    index = TableIndex(keys[0], keys[1], keys[2], rng.normal(size=keys.shape[1]))
    axes = grid_axes((-3, 2.5, -4, 3, -2, 2.4), ndiv)
    for symmetry in (True, False):
        orb = orbits(index, ops, asu, symmetry)
        assert orb is not None  # every case here has an ASU with one member per orbit
        for a, b in ((0, 4), (4, 9), (9, axes.shape[0])):
            want = map_block(axes, a, b, index, ops, asu, symmetry)
            for use_numba in (False, True):
                np.testing.assert_array_equal(map_block_orbits(axes, a, b, orb, use_numba), want)
            assert np.isfinite(want).any()


def test_limits_round_half_to_even_as_mdx2():
    axes = grid_axes((-0.5, 0.5, 0.25, 0.75, 2.5, 2.5), (3, 2, 1))  # -1.5, 1.5, 0.5, 1.5, 2.5
    assert axes.lo == (-2, 0, 2) and axes.hi == (2, 2, 2)
    np.testing.assert_array_equal(axes.axis(0), np.arange(-2, 3) / 3)


def test_map_dtype_as_numpy_where_with_nan():
    for dt in ("float32", "float64", "int32", "int64", "uint8"):
        assert map_dtype(dt) == np.where([True], np.zeros(1, dtype=dt), np.nan).dtype


def test_choose_slice():
    axes = {"h": np.arange(3.0), "k": np.arange(4.0), "l": np.arange(-2.0, 3.0)}
    assert choose_slice((3, 4, 5), axes) == (2, 2)  # l = 0
    assert choose_slice((3, 1, 5), axes) == (1, 0)
    assert choose_slice((3, 4, 5), {**axes, "l": np.arange(1.0, 6.0)}) == (2, 2)  # middle


# --- goldens (mdx2 1.0.5 outputs) ----------------------------------------------------------------------


@pytest.mark.parametrize("ds,case", GOLDEN, ids=[f"{d}-{c['name']}" for d, c in GOLDEN])
def test_golden_maps(ds, case, tmp_path):
    entry = CASES[ds]
    out = tmp_path / "map.nxs"
    result = make_map(
        DATA / entry["geometry"],
        DATA / entry["merged"],
        limits=case["limits"],
        signal=case["signal"],
        symmetry=case["symmetry"],
        outfile=out,
        png=case["name"] in ("l0", "k0"),
    )
    assert_same_map(out, DATA / "map" / ds / case["file"], case["signal"])
    assert result.filled == int(np.count_nonzero(~np.isnan(read_map(out).values)))
    if case["name"] in ("l0", "k0"):
        assert Path(result.png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_blocks_on_the_cluster(client, tmp_path):
    """The cluster executor, with blocks of 5 H planes, writes the same file."""
    from pipeline.config import MapParams
    from pipeline.graph.map import run_map

    case = next(c for c in CASES["cubic"]["maps"] if c["name"] == "box")
    params = MapParams(
        DATA / "cubic" / "geometry.nxs", DATA / "map" / "cubic" / "merged.nxs", limits=case["limits"],
        outfile=tmp_path / "map.nxs", png=False, cells_per_task=5 * 7 * 11,
    )  # fmt: skip
    result = run_map(params, client)
    assert result.shape == (13, 7, 11) and result.tasks == 3
    assert_same_map(tmp_path / "map.nxs", DATA / "map" / "cubic" / case["file"], "intensity")
    assert not list(tmp_path.glob(".*work*"))


def test_pointwise_fallback_gives_the_golden(tmp_path, monkeypatch):
    """Where the fast path does not apply, every point is mapped to the ASU: same file."""
    import pipeline.graph.map as graph_map

    monkeypatch.setattr(graph_map, "orbits_of_rows", lambda *a: None)
    case = next(c for c in CASES["mono"]["maps"] if c["name"] == "box")
    make_map(
        DATA / "mono" / "geometry.nxs", DATA / "map" / "mono" / "merged.nxs", limits=case["limits"],
        outfile=tmp_path / "map.nxs", png=False,
    )  # fmt: skip
    assert_same_map(tmp_path / "map.nxs", DATA / "map" / "mono" / case["file"], "intensity")


def test_cli_writes_map_and_png(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app

    monkeypatch.chdir(tmp_path)
    args = ["map", str(DATA / "cubic" / "geometry.nxs"), str(DATA / "map" / "cubic" / "merged.nxs")]
    r = CliRunner().invoke(
        app, [*args, "--limits", "-3", "3", "-3", "3", "0", "0", "--outfile", "s.nxs", "-q"]
    )
    assert r.exit_code == 0, r.output
    assert_same_map(tmp_path / "s.nxs", DATA / "map" / "cubic" / "map_l0.nxs", "intensity")
    assert (tmp_path / "s.png").exists()
    r = CliRunner().invoke(app, [*args, "--signal", "nope", "--outfile", "t.nxs", "--no-png", "-q"])
    assert r.exit_code == 1 and "no column 'nope'" in r.output and "intensity_error" in r.output
    assert not (tmp_path / "t.nxs").exists()


# --- bad input -----------------------------------------------------------------------------------------


def test_bad_input(tmp_path):
    geom = DATA / "cubic" / "geometry.nxs"
    merged = DATA / "map" / "cubic" / "merged.nxs"
    with pytest.raises(InputError, match="repeated"):
        make_map(
            geom, DATA / "cubic" / "mdx2" / "corrected_325_bkg.nxs", outfile=tmp_path / "a.nxs", png=False
        )
    with pytest.raises(ConfigError, match="kmin must be <= kmax"):
        make_map(geom, merged, limits=(0, 1, 2, 1, 0, 0), outfile=tmp_path / "a.nxs")
    with pytest.raises(ConfigError, match="6 numbers"):
        make_map(geom, merged, limits=(0, 1, 2), outfile=tmp_path / "a.nxs")
    with pytest.raises(InputError, match="no column 'h'"):
        make_map(geom, merged, signal="h", outfile=tmp_path / "a.nxs")
    with pytest.raises(InputError, match="symmetry"):
        make_map(DATA / "cubic" / "mask.nxs", merged, outfile=tmp_path / "a.nxs")
    assert not list(tmp_path.iterdir())


# --- datasets kept apart, against mdx2 live (refkit) --------------------------------------------------


def _heldout_dir(name: str) -> Path:
    directory = HELDOUT_ROOT / name
    if (directory / "done.json").exists():
        return directory
    if not (REFKIT / "setup.sh").exists() or not Path("/tmp/mdx2ref/bin/python").exists():
        pytest.skip("refkit (mdx2 1.0.5) not available")
    options, subdivide = HELDOUT[name]
    script = Path(__file__).with_name("mdx2_map_cases.py")
    quoted = " ".join(f"'{o}'" for o in options)
    cmd = (
        f"source '{REFKIT}/setup.sh' >/dev/null && python '{script}' heldout '{directory}' "
        f"--refkit '{REFKIT}' --subdivide {subdivide} {quoted} --frames 12"
    )
    subprocess.run(["bash", "-c", cmd], check=True, capture_output=True)
    return directory


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HELDOUT))
def test_heldout_space_groups(name, tmp_path):
    directory = _heldout_dir(name)
    records = json.loads((directory / "done.json").read_text())["maps"]
    for case in records:
        out = tmp_path / f"{case['name']}.nxs"
        make_map(
            directory / "geometry.nxs", directory / "merged.nxs", limits=case["limits"],
            signal=case["signal"], symmetry=case["symmetry"], outfile=out, png=False,
        )  # fmt: skip
        assert_same_map(out, directory / "maps" / case["file"], case["signal"])
