"""scales.nxs models: read in mdx2's layout, evaluated bit for bit as mdx2 1.0.5, written back loadable.

Goldens: tests/data/scales/ (mdx2.scale --mca2020 on a refkit dataset and mdx2's own ``interp`` values at
random points; regenerate with tests/data/scales/make_scales_goldens.py via tests/data/make_goldens.sh).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.io.scales import Scales, read_scales, write_scales
from pipeline.kernels import scaling_models as sm

DATA = Path(__file__).parent / "data" / "scales"
GOLDEN = DATA / "scales_mca2020.nxs"
REFKIT_PYTHON = Path("/tmp/mdx2ref/bin/python")

COORDS = {"scaling": 1, "absorption": 3, "detector": 2, "offset": 2}


def test_reads_all_four_models():
    scales = read_scales(GOLDEN)
    assert [g for g, _ in scales.items()] == [
        "scaling_model",
        "absorption_model",
        "detector_model",
        "offset_model",
    ]
    assert scales.absorption.u.shape == (
        scales.absorption.ix.size,
        scales.absorption.iy.size,
        scales.absorption.phi.size,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["scaling", "absorption", "detector", "offset"])
def test_interp_is_mdx2_bit_for_bit(name, dtype):
    golden = np.load(DATA / "interp.npz")
    model = getattr(read_scales(GOLDEN), name)
    coords = golden[f"{name}_model/{dtype}/coords"]
    want = golden[f"{name}_model/{dtype}/values"]
    got = model.interp(*coords)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    outside = want == 0
    assert outside.any() and (~outside).any()  # the points cover both sides of the grid edge


@settings(max_examples=40, deadline=None)
@given(
    n=st.sampled_from([2, 3, 7]),
    seed=st.integers(0, 2**16),
    dims=st.integers(1, 3),
)
def test_fast_interp_equals_the_oracle(n, seed, dims):
    rng = np.random.default_rng(seed)
    axes = [np.sort(rng.choice(np.linspace(-5, 5, 50), size=n, replace=False)) for _ in range(dims)]
    u = rng.normal(size=tuple(a.size for a in axes))
    coords = [rng.uniform(-6, 6, 60) for _ in range(dims)]
    coords[0][:n] = axes[0]  # exactly on control points, including the last one
    fast = {1: sm.interp1, 2: sm.interp2, 3: sm.interp3}[dims]
    slow = {1: sm.interp1_oracle, 2: sm.interp2_oracle, 3: sm.interp3_oracle}[dims]
    np.testing.assert_allclose(fast(*coords, *axes, u), slow(*coords, *axes, u), rtol=1e-12, atol=1e-12)


def test_absent_models_are_neutral():
    x = np.linspace(0, 1, 5, dtype=np.float32)
    assert np.all(sm.ScalingModel(np.array([0.0, 1.0])).interp(x) == 1.0)
    assert np.all(sm.OffsetModel(np.array([0.0, 1.0]), np.array([0.0, 1.0])).interp(x, x) == 0.0)


def test_write_then_read_round_trips(tmp_path):
    scales = read_scales(GOLDEN)
    out = write_scales(tmp_path / "s.nxs", scales)
    again = read_scales(out)
    for (g1, m1), (g2, m2) in zip(scales.items(), again.items(), strict=True):
        assert g1 == g2
        for name in (*m1.AXES, "u"):
            a, b = getattr(m1, name), getattr(m2, name)
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.skipif(not REFKIT_PYTHON.exists(), reason="needs the refkit venv (mdx2 1.0.5)")
def test_mdx2_loads_what_we_write(tmp_path):
    out = write_scales(tmp_path / "s.nxs", read_scales(GOLDEN))
    code = (
        "import sys; from mdx2.io import loadobj\n"
        "for n in ('scaling_model','absorption_model','detector_model','offset_model'):\n"
        "    m = loadobj(sys.argv[1], n); print(n, type(m).__name__, m.u.shape)\n"
    )
    run = subprocess.run([REFKIT_PYTHON, "-c", code, out], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "DetectorModel" in run.stdout and "AbsorptionModel" in run.stdout


def test_bad_scales_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_scales(tmp_path / "missing.nxs")
    other = tmp_path / "other.nxs"
    with h5py.File(other, "w") as f:
        f.create_group("entry/hkl_table")
    with pytest.raises(InputError, match="holds none of"):
        read_scales(other)
    bad = tmp_path / "bad.nxs"
    shutil.copy(GOLDEN, bad)
    with h5py.File(bad, "r+") as f:
        u = f["entry/scaling_model/u"][()]
        u[1] = np.nan
        f["entry/scaling_model/u"][...] = u
    with pytest.raises(InputError, match="non-finite value at flat index 1"):
        read_scales(bad)
    with h5py.File(bad, "r+") as f:
        del f["entry/scaling_model/u"]
        f["entry/scaling_model/u"] = np.ones(2)
    with pytest.raises(InputError, match="u has shape"):
        read_scales(bad)
    assert Scales().empty
