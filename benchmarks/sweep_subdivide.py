"""Subdivide versus memory and time on one dataset (the issue's sweep on the refkit `medium` preset).

    .venv/bin/python benchmarks/sweep_subdivide.py /tmp/ds_medium [--subdivisions 1,2,4,6,8,10]
        [--workers 2] [--mdx2 /tmp/mdx2ref/bin/mdx2.integrate] [--out benchmarks/results/sweep_medium]

The dataset directory holds geometry.nxs, data.nxs and mask.nxs (refkit's make_dataset.py or
`diffuse simulate`). Same code as `diffuse bench sweep`; writes sweep.csv and sweep.png.
"""

import argparse
import logging
import sys
from pathlib import Path

from pipeline.api.bench import plot_sweep, sweep_subdivide, write_csv
from pipeline.cli.bench import parse_subdivisions


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--subdivisions", default="1,2,4,6,8,10")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit")
    ap.add_argument("--mdx2", help="path of mdx2.integrate (refkit) to sweep it too")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep"))
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ds = a.dataset
    masks = [str(ds / "mask.nxs")] if (ds / "mask.nxs").exists() else []
    subs = parse_subdivisions(a.subdivisions)
    rows = sweep_subdivide(
        str(ds / "geometry.nxs"), str(ds / "data.nxs"), masks, subs, a.out, a.workers, a.memory_limit, a.mdx2
    )
    write_csv(rows, a.out / "sweep.csv")
    plot_sweep(rows, a.out / "sweep.png", title=f"{ds.name}: {a.workers} workers")
    for r in rows:
        print(r)
    return 0 if all(r.returncode == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
