"""Golden outputs of mdx2.find_peaks and mdx2.mask_peaks for tests/test_peaks.py (run by make_goldens.sh).

Runs inside the refkit environment (mdx2 1.0.5), never at test time. For the `cubic` and `mono` test
datasets already in tests/data/ it runs, in a temporary copy of the dataset directory:

    mdx2.find_peaks geometry.nxs data.nxs --count_threshold T --sigma_cutoff S --outfile peaks.nxs
    mdx2.mask_peaks geometry.nxs data.nxs peaks.nxs --sigma_cutoff S2 [--bragg] --outfile mask_*.nxs

and copies the outputs to tests/data/peaks/<dataset>/ with a manifest peaks.json (the options).

Usage: bash tests/data/make_goldens.sh  (or, in the refkit env: python tests/data/make_peaks_goldens.py)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "peaks"

CASES = {
    "cubic": {"count_threshold": 20.0, "sigma_cutoff": 3.0, "masks": {"mask_3.nxs": [3.0, False]}},
    "mono": {
        "count_threshold": 10.0,
        "sigma_cutoff": 2.5,
        "masks": {"mask_2.nxs": [2.0, False], "mask_bragg.nxs": [3.0, True]},
    },
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    manifest = {}
    for name, case in CASES.items():
        dest = OUT / name
        dest.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / name
            shutil.copytree(HERE / name, work, ignore=shutil.ignore_patterns("mdx2"))
            run = dict(cwd=work, check=True, capture_output=True)
            subprocess.run(
                [
                    "mdx2.find_peaks",
                    "geometry.nxs",
                    "data.nxs",
                    "--count_threshold",
                    str(case["count_threshold"]),
                    "--sigma_cutoff",
                    str(case["sigma_cutoff"]),
                    "--outfile",
                    "peaks.nxs",
                ],
                **run,
            )
            shutil.copy(work / "peaks.nxs", dest / "peaks.nxs")
            for out, (sigma, bragg) in case["masks"].items():
                cmd = [
                    "mdx2.mask_peaks",
                    "geometry.nxs",
                    "data.nxs",
                    "peaks.nxs",
                    "--sigma_cutoff",
                    str(sigma),
                    "--outfile",
                    out,
                ]
                if bragg:
                    cmd.append("--bragg")
                subprocess.run(cmd, **run)
                shutil.copy(work / out, dest / out)
        manifest[name] = case
    (OUT / "peaks.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
