"""Regenerate tests/data/reintegrate/ from real mdx2 1.0.5 (run by make_goldens.sh, in the refkit venv).

For the golden datasets `cubic` and `mono` (already in tests/data, made by make_goldens.py), in a
temporary copy of each: mdx2.integrate at subdivide 1 1 1, mdx2.correct with the background,
mdx2.scale (cubic: all four models on small grids, as --mca2020; mono: the default scaling model
only), then mdx2.reintegrate with the options in CASES. Copies each scales.nxs and mdx2.reintegrate
output into tests/data/reintegrate/ and writes the manifest reintegrate.json that
tests/test_reintegrate.py reads.

Usage: bash tests/data/make_goldens.sh   (or, alone, in the refkit venv:
       python tests/data/make_reintegrate_goldens.py)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "reintegrate"

# dataset -> mdx2.scale options (after the corrected table)
SCALE = {
    "cubic": [
        "--mca2020", "--detector.nx", "10", "--detector.ny", "10", "--absorption.nx", "5",
        "--absorption.ny", "5", "--absorption.dphi", "2", "--scaling.dphi", "0.5", "--offset.dphi", "1",
        "--offset.ns", "8",
    ],
    "mono": [],
}  # fmt: skip

# (dataset, output file, our API's keywords); mdx2's arguments follow from them
CASES = [
    ("cubic", "cubic_222_scale_bkg.nxs", {"mask": "mask.nxs", "subdivide": [2, 2, 2], "scale": True,
                                          "background": "bkg_data_binned.nxs"}),
    ("cubic", "cubic_325_scale_bkg_intensity.nxs", {"subdivide": [3, 2, 5], "scale": True,
                                                    "background": "bkg_data_binned.nxs",
                                                    "output": "intensity"}),
    ("cubic", "cubic_111_plain.nxs", {"mask": "mask.nxs", "subdivide": [1, 1, 1]}),
    ("mono", "mono_232_scale_intensity.nxs", {"mask": "mask.nxs", "subdivide": [2, 3, 2], "scale": True,
                                              "output": "intensity"}),
]  # fmt: skip


def run(cmd, cwd):
    print("+", " ".join(cmd), f"  (in {cwd})", flush=True)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mdx2_args(opts: dict, scales: str) -> list[str]:
    args = ["--subdivide", *[str(x) for x in opts["subdivide"]]]
    if "mask" in opts:
        args += ["--mask", opts["mask"]]
    if opts.get("scale"):
        args += ["--scale", scales]
    if "background" in opts:
        args += ["--background", opts["background"]]
    if "output" in opts:
        args += ["--output", opts["output"]]
    return args


def main() -> int:
    import mdx2

    work = Path(tempfile.mkdtemp(prefix="reintegrate-goldens-"))
    manifest = {"mdx2_version": mdx2.__version__, "scales": {}, "cases": []}
    try:
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir()
        for name, scale_opts in SCALE.items():
            ds = work / name
            shutil.copytree(HERE / name, ds, ignore=shutil.ignore_patterns("mdx2"))
            run(
                ["mdx2.integrate", "geometry.nxs", "data.nxs", "--mask", "mask.nxs", "--outfile", "i111.nxs"],
                ds,
            )
            run(["mdx2.correct", "geometry.nxs", "i111.nxs", "--background", "bkg_data_binned.nxs",
                 "--outfile", "c111.nxs"], ds)  # fmt: skip
            run(["mdx2.scale", "c111.nxs", *scale_opts, "--outfile", "scales.nxs"], ds)
            shutil.copy2(ds / "scales.nxs", OUT / f"{name}_scales.nxs")
            manifest["scales"][name] = {
                "file": f"reintegrate/{name}_scales.nxs",
                "mdx2_scale_args": scale_opts,
            }
        for name, out, opts in CASES:
            args = mdx2_args(opts, "scales.nxs")
            run(["mdx2.reintegrate", "geometry.nxs", "data.nxs", *args, "--outfile", out], work / name)
            shutil.copy2(work / name / out, OUT / out)
            manifest["cases"].append(
                {"dataset": name, "reference": f"reintegrate/{out}", "options": opts, "mdx2_args": args}
            )
        (OUT / "reintegrate.json").write_text(json.dumps(manifest, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"tests/data/reintegrate: {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
