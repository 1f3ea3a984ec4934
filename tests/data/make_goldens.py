"""Regenerate the golden fixtures in tests/data/ from real mdx2 1.0.5 (run by make_goldens.sh).

Runs inside the refkit virtual environment (mdx2 1.0.5 + cctbx + refkit's dxtbx stand-ins), never at
test time. For each dataset below it calls refkit's make_dataset.py, runs ``mdx2.integrate`` and
``mdx2.correct`` inside the dataset directory (the virtual dataset's sources are relative paths),
and copies the inputs and mdx2's outputs here. It also records, from cctbx/numexpr/mdx2 themselves:

  expressions.json      Miller-index expressions (every distinct reciprocal-space ASU string mdx2
                        builds for the 530 Hall settings cctbx lists, mdx2's reflection conditions,
                        and hand-written change-of-basis forms) with numexpr's truth table on a grid
  symmetry_cases.json   Laue operators + ASU of a few space groups/settings and mdx2's
                        ``Symmetry.to_asu`` result on a grid of integer (H, K, L)
  goldens.json          the manifest test_golden.py reads: datasets, and each mdx2 output with the
                        options that made it

Usage: bash tests/data/make_goldens.sh   (or: make goldens)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# name -> make_dataset.py options; all on the `tiny` preset (one 195 x 487 Pilatus module).
# The storage chunks are odd on purpose: uneven edge chunks, and every axis order of mdx2's
# interpolation (argsort of the chunk's (nphi, ny, nx)): final axis ix in `cubic`, phi in `mono`,
# iy in `zero`.
DATASETS = {
    "cubic": ["--frames", "12", "--chunks", "5", "64", "100"],
    "mono": [
        "--frames", "12", "--chunks", "12", "10", "11",
        "--hall", " I 2y", "--cell", "80.1", "60.3", "50.7", "90", "104.5", "90",
        "--phi0", "37.5", "--axis", "0", "1", "0", "--crystal-seed", "11",
    ],
    "zero": [
        "--frames", "8", "--chunks", "8", "50", "30", "--zero-exposure",
        "--hall", " P 1", "--cell", "50", "60", "70", "80", "95", "105", "--no-bkg", "--seed", "3",
    ],
}  # fmt: skip

# Outputs of mdx2.integrate: (dataset, file, options as our API's keywords)
INTEGRATE = [
    ("cubic", "integrated_111.nxs", {"mask": "mask.nxs", "subdivide": [1, 1, 1]}),
    ("cubic", "integrated_325.nxs", {"mask": "mask.nxs", "subdivide": [3, 2, 5]}),
    ("mono", "integrated_222.nxs", {"mask": "mask.nxs", "subdivide": [2, 2, 2]}),
    ("zero", "integrated_222.nxs", {"subdivide": [2, 2, 2]}),  # no mask; seconds are 0
]
# Outputs of mdx2.correct: (dataset, file, integrated table it corrects, options as our API's keywords)
CORRECT = [
    ("cubic", "corrected_325_bkg.nxs", "integrated_325.nxs", {"background": "bkg_data_binned.nxs"}),
    ("cubic", "corrected_111_p1.nxs", "integrated_111.nxs", {"p1": True}),
    ("mono", "corrected_222_bkg.nxs", "integrated_222.nxs", {"background": "bkg_data_binned.nxs"}),
    ("mono", "corrected_222_lorentz.nxs", "integrated_222.nxs", {"lorentz": True, "polarization": False}),
]
INPUTS = ["geometry.nxs", "data.nxs", "mask.nxs", "bkg_data_binned.nxs", "experiment.expt", "dataset.json"]

# Space groups/settings whose to_asu mdx2 computes for symmetry_cases.json (Hall symbols).
SYMMETRY_HALLS = [
    " P 1", "-P 1", " P 2yb", " C 2y", " I 2y", " A 2y", " P -2yac", " C -2xac", " P 2 2",
    " P 2 -2b", " P 4 2", " P 31 2\"", " P 3*", " P 6", " I 2b 2c 3", " P 4 2 3",
]  # fmt: skip

# Extra expressions (besides cctbx's ASUs and mdx2's reflection conditions) for the parser's tests.
EXTRA_EXPRESSIONS = [
    "(1/2*h+1/2*k)>=0",
    "((1/2*h-1/2*k)>0) | (((1/2*h-1/2*k)==0) & ((l)>=0))",
    "(-h % 4 == 1) | (h % -3 == -1)",
    "(h - 2*k + l) % 3 == 0",
    "(h//2 == k) | (-l//3 == 1)",
    "~((h > 0) & (k < 0)) ^ (l == 0)",
    "(h >= -k) & (k > l - 1)",
    "True",
]
GRID = np.arange(-6, 7)


def run(cmd, cwd):
    print("+", " ".join(cmd), f"  (in {cwd})", flush=True)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mdx2_integrate_args(opts):
    args = ["--subdivide", *[str(x) for x in opts["subdivide"]]]
    if "mask" in opts:
        args += ["--mask", opts["mask"]]
    return args


def mdx2_correct_args(opts):
    args = []
    if "background" in opts:
        args += ["--background", opts["background"]]
    for flag in ("attenuation", "efficiency", "polarization", "lorentz", "p1"):
        if flag in opts:
            args.append(f"--{flag}" if opts[flag] else f"--no{flag}")
    return args


def make_datasets(refkit: Path, work: Path) -> dict:
    manifest = {"mdx2_version": None, "datasets": {}, "integrate": [], "correct": []}
    import mdx2

    manifest["mdx2_version"] = mdx2.__version__
    for name, options in DATASETS.items():
        src = work / name
        run(
            [sys.executable, str(refkit / "make_dataset.py"), str(src), "--preset", "tiny", *options],
            cwd=work,
        )
        for out, opts in ((o, p) for d, o, p in INTEGRATE if d == name):
            run(
                ["mdx2.integrate", "geometry.nxs", "data.nxs", *mdx2_integrate_args(opts), "--outfile", out],
                src,
            )
        for out, table, opts in ((o, t, p) for d, o, t, p in CORRECT if d == name):
            run(["mdx2.correct", "geometry.nxs", table, *mdx2_correct_args(opts), "--outfile", out], src)
        dest = HERE / name
        shutil.rmtree(dest, ignore_errors=True)
        (dest / "datastore").mkdir(parents=True)
        (dest / "mdx2").mkdir()
        for f in INPUTS:
            if (src / f).exists():
                shutil.copy2(src / f, dest / f)
        for f in sorted(
            (src / "datastore").glob("data_*.nxs")
        ):  # not bkg_data_*: only the binned bkg is used
            shutil.copy2(f, dest / "datastore" / f.name)
        for out in [o for d, o, _ in INTEGRATE if d == name] + [o for d, o, _, _ in CORRECT if d == name]:
            shutil.copy2(src / out, dest / "mdx2" / out)
        info = json.loads((src / "dataset.json").read_text())
        manifest["datasets"][name] = {"make_dataset": ["--preset", "tiny", *options], "info": info}
    for d, out, opts in INTEGRATE:
        manifest["integrate"].append(
            {
                "dataset": d,
                "reference": f"{d}/mdx2/{out}",
                "options": opts,
                "mdx2_args": mdx2_integrate_args(opts),
            }
        )
    for d, out, table, opts in CORRECT:
        manifest["correct"].append(
            {
                "dataset": d,
                "reference": f"{d}/mdx2/{out}",
                "integrated": f"{d}/mdx2/{table}",
                "options": opts,
                "mdx2_args": mdx2_correct_args(opts),
            }
        )
    return manifest


def asu_string(sym) -> str:
    """mdx2.dxtbx_machinery.Experiment.reciprocal_space_asu, called on a stand-in crystal."""
    from mdx2.dxtbx_machinery import Experiment

    class Crystal:
        def get_crystal_symmetry(self):
            return sym

    e = Experiment.__new__(Experiment)
    e._crystal = Crystal()
    return e.reciprocal_space_asu, e.laue_group_operators


def crystal_symmetry(hall: str):
    from cctbx import crystal, sgtbx

    group = sgtbx.space_group(hall)
    cell = group.info().any_compatible_unit_cell(volume=1000.0)
    return crystal.symmetry(unit_cell=cell, space_group=group)


def make_expressions() -> list:
    import numexpr as ne
    from cctbx import sgtbx
    from mdx2.dxtbx_machinery import lookup_reflection_conditions

    texts = []
    for s in sgtbx.space_group_symbol_iterator():
        try:
            text, _ = asu_string(crystal_symmetry(s.hall()))
        except RuntimeError:  # cctbx cannot write some change-of-basis ops as hkl; mdx2 fails there too
            continue
        if text not in texts:
            texts.append(text)
    for c in "PFIABCDHR":
        text = lookup_reflection_conditions(c)
        if text not in texts:
            texts.append(text)
    texts += [t for t in EXTRA_EXPRESSIONS if t not in texts]
    h, k, l = (a.ravel() for a in np.meshgrid(GRID, GRID, GRID, indexing="ij"))
    out = []
    for text in texts:
        truth = np.broadcast_to(ne.evaluate(text, local_dict={"h": h, "k": k, "l": l}), h.shape)
        out.append({"text": text, "truth": base64.b64encode(np.packbits(truth.astype(bool))).decode()})
    return out


def make_symmetry_cases() -> list:
    from mdx2.geometry import Symmetry

    grid = np.arange(-4, 5)
    H, K, L = (a.ravel() for a in np.meshgrid(grid, grid, grid, indexing="ij"))
    cases = []
    for hall in SYMMETRY_HALLS:
        sym = crystal_symmetry(hall)
        text, ops = asu_string(sym)
        h, k, l, op = Symmetry(laue_group_operators=ops, reciprocal_space_asu=text).to_asu(H, K, L)
        cases.append(
            {
                "hall": hall,
                "space_group": str(sym.space_group_info()),
                "asu": text,
                "ops": ops.astype(int).tolist(),
                "out": np.stack((h, k, l, op)).astype(int).tolist(),
            }
        )
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refkit", type=Path, required=True)
    ap.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="goldens-"))
    try:
        manifest = make_datasets(a.refkit, work)
        (HERE / "goldens.json").write_text(json.dumps(manifest, indent=1) + "\n")
        (HERE / "expressions.json").write_text(
            json.dumps(
                {"grid": GRID.tolist(), "order": "h,k,l C order", "cases": make_expressions()}, indent=0
            )
            + "\n"
        )
        (HERE / "symmetry_cases.json").write_text(
            json.dumps({"grid": [-4, 4], "cases": make_symmetry_cases()}) + "\n"
        )
    finally:
        if a.keep:
            print("work directory kept:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    sizes = sum(f.stat().st_size for f in HERE.rglob("*") if f.is_file() and "geometry" not in f.parts)
    print(f"tests/data: {sizes / 1e6:.2f} MB (without tests/data/geometry/)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
