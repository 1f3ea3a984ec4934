"""mdx2 1.0.5's maps for the tests of ``diffuse map``; runs in the refkit environment, never at test time
of the package itself (tests/test_map.py calls it through the refkit python, or uses its goldens).

    python tests/mdx2_map_cases.py goldens --refkit REFKIT           (from tests/data/make_goldens.sh)
    python tests/mdx2_map_cases.py heldout DIR --refkit REFKIT --hall H --cell A B C AL BE GA \
        --subdivide 2 2 2

``goldens`` scales and merges the committed corrected tables of tests/data/cubic and tests/data/mono
(mdx2.scale, mdx2.merge), makes the maps of :data:`GOLDEN_CASES` with mdx2.map and writes them, the
merged tables and ``cases.json`` into tests/data/map/. ``heldout`` makes a tiny refkit dataset in DIR
(another space group), runs mdx2.integrate, correct, scale and merge, then the maps of
:data:`HELDOUT_CASES`; everything in one process (mdx2's start-up is slow), skipped when DIR already
holds ``done.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLDEN_DIR = HERE / "data" / "map"

# (name, limits, signal, symmetry)
GOLDEN_CASES = {
    "cubic": [
        ("l0", (-3, 3, -3, 3, 0, 0), "intensity", True),
        ("box", (-2, 2, -1.5, 1.5, -1, 1), "intensity", True),
        ("count_h", (0.333, 0.333, -2, 2, -2, 2), "count", True),  # 0.333 * 3 rounds to 1
        ("nosym", (-1, 2, -1, 1, -0.6, 1.1), "intensity_error", False),
        ("halves", (-0.5, 0.5, -1.25, 1.25, -0.3, 0.3), "intensity", True),  # ties round to even
        ("empty", (20, 21, 0, 0, 0, 1), "intensity", True),
    ],
    "mono": [
        ("k0", (-4, 4, 0, 0, -4, 4), "intensity", True),
        ("box", (-2, 2, -2, 2, -2, 2), "intensity", True),
        ("nosym", (-2, 2, 0, 1, -2, 2), "count", False),
    ],
}
CORRECTED = {"cubic": "corrected_325_bkg.nxs", "mono": "corrected_222_bkg.nxs"}

HELDOUT_CASES = [
    ("l0", (-6, 6, -6, 6, 0, 0), "intensity", True),
    ("h1", (1, 1, -5, 5, -5, 5), "intensity", True),
    ("k_half", (-4, 4, 0.5, 0.5, -4, 4), "intensity", True),
    ("box", (-3, 3, -3, 3, -3, 3), "intensity", True),
    ("err", (-2.2, 2.7, -1.9, 2.1, -3, 0), "intensity_error", True),
    ("count", (-2, 2, -2, 2, -1, 1), "count", True),
    ("nosym", (-3, 3, -3, 3, -1, 1), "intensity", False),
]


@contextlib.contextmanager
def cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def mdx2(command: str, *args: str) -> None:
    """Run ``mdx2.<command>`` in this process (its start-up costs seconds as a subprocess)."""
    import importlib

    mod = importlib.import_module(f"mdx2.command_line.{command}")
    params = mod.parse_arguments([str(a) for a in args])
    getattr(mod, f"run_{command}")(params)


def make_maps(geom: Path, merged: Path, cases, outdir: Path) -> list[dict]:
    out = []
    for name, limits, signal, symmetry in cases:
        outfile = outdir / f"map_{name}.nxs"
        args = [geom, merged, "--limits", *limits, "--signal", signal, "--outfile", outfile]
        mdx2("map", *args, *([] if symmetry else ["--nosymmetry"]))
        out.append(
            {
                "name": name,
                "limits": list(limits),
                "signal": signal,
                "symmetry": symmetry,
                "file": outfile.name,
            }
        )
    return out


def scale_and_merge(directory: Path, corrected: str) -> None:
    with cwd(directory):
        mdx2("scale", corrected, "--outfile", "scales.nxs")
        mdx2("merge", corrected, "--scale", "scales.nxs", "--outfile", "merged.nxs")


def goldens() -> None:
    from loguru import logger

    logger.remove()
    manifest = {}
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for ds, cases in GOLDEN_CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            shutil.copy2(HERE / "data" / ds / "mdx2" / CORRECTED[ds], tmp / CORRECTED[ds])
            scale_and_merge(tmp, CORRECTED[ds])
            dest = GOLDEN_DIR / ds
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            shutil.copy2(tmp / "merged.nxs", dest / "merged.nxs")
            records = make_maps(HERE / "data" / ds / "geometry.nxs", dest / "merged.nxs", cases, dest)
        manifest[ds] = {"geometry": f"{ds}/geometry.nxs", "merged": f"map/{ds}/merged.nxs", "maps": records}
    (GOLDEN_DIR / "cases.json").write_text(json.dumps(manifest, indent=1) + "\n")


def heldout(directory: Path, refkit: Path, make_args: list[str], subdivide: list[str]) -> None:
    from loguru import logger

    logger.remove()
    if (directory / "done.json").exists():
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(refkit / "make_dataset.py"), str(directory), "--preset", "tiny", *make_args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with cwd(directory):
        mdx2("integrate", "geometry.nxs", "data.nxs", "--mask", "mask.nxs", "--subdivide", *subdivide)
        mdx2("correct", "geometry.nxs", "integrated.nxs", "--background", "bkg_data_binned.nxs")
    scale_and_merge(directory, "corrected.nxs")
    maps = directory / "maps"
    maps.mkdir()
    records = make_maps(directory / "geometry.nxs", directory / "merged.nxs", HELDOUT_CASES, maps)
    (directory / "done.json").write_text(json.dumps({"maps": records}, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["goldens", "heldout"])
    ap.add_argument("directory", nargs="?", type=Path)
    ap.add_argument("--refkit", type=Path, required=True)
    ap.add_argument("--subdivide", nargs=3, default=["2", "2", "2"])
    a, make_args = ap.parse_known_args()
    if a.what == "goldens":
        goldens()
    else:
        heldout(a.directory, a.refkit, make_args, a.subdivide)


if __name__ == "__main__":
    main()
