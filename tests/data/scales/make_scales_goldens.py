"""Regenerate tests/data/scales/ with mdx2 1.0.5 (run by tests/data/make_goldens.sh, in the refkit venv).

Makes a refkit ``small`` dataset, runs mdx2.integrate / correct / scale --mca2020 (all four models;
a 30 x 30 detector grid keeps the file small), copies ``scales.nxs`` here and evaluates each model with
mdx2's own ``interp`` at random points, inside, on and outside the control grid, in float32 and float64:
``interp.npz`` is what :mod:`pipeline.kernels.scaling_models` must reproduce bit for bit.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from mdx2.io import loadobj

HERE = Path(__file__).parent
REFKIT = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[3] / "shared" / "refkit"


def run(*cmd, cwd):
    subprocess.run([str(c) for c in cmd], cwd=cwd, check=True, capture_output=True)


def points(rng, axes, n=1000):
    """Random coordinates spanning 10% beyond each axis, plus every control point exactly."""
    cols = []
    for w in axes:
        lo, hi = float(w[0]), float(w[-1])
        pad = 0.1 * (hi - lo)
        c = rng.uniform(lo - pad, hi + pad, n)
        c[: w.size] = w[: min(w.size, n)]
        cols.append(c)
    return cols


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run(sys.executable, REFKIT / "make_dataset.py", tmp / "ds", "--preset", "small", "--no-bkg", cwd=tmp)
        ds = tmp / "ds"
        run(
            "mdx2.integrate",
            "geometry.nxs",
            "data.nxs",
            "--mask",
            "mask.nxs",
            "--subdivide",
            "2",
            "2",
            "2",
            "--nproc",
            "2",
            cwd=ds,
        )
        run("mdx2.correct", "geometry.nxs", "integrated.nxs", cwd=ds)
        run(
            "mdx2.scale",
            "corrected.nxs",
            "--mca2020",
            "True",
            "--detector.nx",
            "30",
            "--detector.ny",
            "30",
            "--outfile",
            "scales.nxs",
            cwd=ds,
        )
        shutil.copy(ds / "scales.nxs", HERE / "scales_mca2020.nxs")
    rng = np.random.default_rng(7)
    out = {}
    f = HERE / "scales_mca2020.nxs"
    for name, axes_of in (
        ("scaling_model", lambda m: [m.x]),
        ("absorption_model", lambda m: [m.x, m.y, m.z]),
        ("detector_model", lambda m: [m.x, m.y]),
        ("offset_model", lambda m: [m.x, m.y]),
    ):
        model = loadobj(str(f), name)
        cols = points(rng, axes_of(model))
        for dtype in (np.float32, np.float64):
            c = [col.astype(dtype) for col in cols]
            out[f"{name}/{np.dtype(dtype).name}/coords"] = np.stack(c)
            out[f"{name}/{np.dtype(dtype).name}/values"] = model.interp(*c)
    np.savez_compressed(HERE / "interp.npz", **out)


if __name__ == "__main__":
    main()
