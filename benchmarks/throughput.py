"""Throughput of integrate's parts, in pixels per second per core: read, kernel, whole run.

    .venv/bin/python benchmarks/throughput.py DATASET_DIR [--subdivisions 1,4,10] [--workers 2]
        [--block-pixels 25e6,75e6,150e6,300e6] [--out benchmarks/results/throughput]

DATASET_DIR holds geometry.nxs, data.nxs, mask.nxs (refkit make_dataset.py or `diffuse simulate`);
without one, `--simulate PRESET` makes it with pipeline.simulate. Measures, on one core:

* read (h5py): data + mask of every storage chunk through h5py (zlib inflate, C unshuffle);
* read (ours): the same through pipeline.io (libdeflate inflate of raw chunks, numba unshuffle);
* kernel: bin_chunk on chunks already in memory, per subdivision (checked against the numpy oracle
  on a slice of one chunk);
and on one local cluster of ``--workers`` processes (started once; its start-up is printed, not
counted), the whole ``pipeline.integrate`` per subdivision and per task size
(``integrate.target-task-pixels``), checking that every task size gives the identical table.
Writes throughput.csv and throughput.png.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import dask.config
import h5py
import numpy as np

from pipeline.cli.bench import parse_subdivisions
from pipeline.io.geometry import read_miller_grid
from pipeline.io.images import open_image_stack, open_masks, reads_release_the_gil, storage_chunk_slices
from pipeline.kernels.binning import bin_chunk, bin_chunk_oracle
from pipeline.kernels.interpolate import prepare_miller_block


def _chunks(stack, limit):
    along = [storage_chunk_slices(stack.shape, stack.storage_chunks, a) for a in range(3)]
    every = [(a, b, c) for a in along[0] for b in along[1] for c in along[2]]
    step = max(1, len(every) // limit)
    return every[::step][:limit]


def read_h5py(stack, masks, chunks):
    t0 = time.process_time()
    with h5py.File(stack.path, "r") as f:
        ds = f[stack.dataset]
        mf = [h5py.File(p, "r") for p in masks.paths] if masks else []
        for sl in chunks:
            ds[sl]
            for m in mf:
                m["/entry/mask/signal"][sl]
        for m in mf:
            m.close()
    return time.process_time() - t0


def read_ours(stack, masks, chunks):
    t0 = time.process_time()
    with stack.open() as images:
        handle = masks.open() if masks else None
        for sl in chunks:
            images.read(sl)
            if handle:
                handle.read(sl)
        if handle:
            handle.__exit__(None, None, None)
    return time.process_time() - t0


def kernel(stack, masks, grid, chunks, ndiv):
    loaded = []
    with stack.open() as images:
        for sl in chunks:
            loaded.append((sl, np.array(images.read(sl)), masks.read(sl) if masks else None))
    axes, hkl = (grid.phi, grid.iy, grid.ix), grid.hkl
    seconds = 0.0
    for sl, data, mask in loaded:
        args = (stack.phi[sl[0]], stack.iy[sl[1]], stack.ix[sl[2]], stack.exposure_times[sl[0]], ndiv)
        t0 = time.process_time()
        block = prepare_miller_block(axes, hkl, *args[:3])
        bin_chunk(data, mask, block, *args)
        seconds += time.process_time() - t0
    # correctness while timing: the fast kernel equals the oracle on part of the first chunk
    sl, data, mask = loaded[0]
    part = (sl[0], slice(sl[1].start, sl[1].start + 16), sl[2])
    d, m = data[:, :16], None if mask is None else mask[:, :16]
    args = (stack.phi[part[0]], stack.iy[part[1]], stack.ix[part[2]], stack.exposure_times[part[0]], ndiv)
    block = prepare_miller_block(axes, hkl, *args[:3])
    fast, slow = (
        np.sort(bin_chunk(d, m, block, *args), order="key"),
        np.sort(bin_chunk_oracle(d, m, block, *args), order="key"),
    )
    assert np.array_equal(fast, slow), "kernel differs from its oracle"
    return seconds


def whole(ds, sub, client, block_pixels, out):
    import pipeline

    masks = [str(ds / "mask.nxs")] if (ds / "mask.nxs").exists() else None
    with dask.config.set({"diffuse.integrate.target-task-pixels": block_pixels}):
        t0 = time.perf_counter()
        r = pipeline.integrate(
            ds / "geometry.nxs",
            ds / "data.nxs",
            mask=masks,
            subdivide=sub,
            outfile=out,
            overwrite=True,
            client=client,
        )
        wall = time.perf_counter() - t0
    with h5py.File(out, "r") as f:
        digest = hash(
            b"".join(f["/entry/hkl_table"][c][()].tobytes() for c in ("h", "k", "l", "n", "counts"))
        )
    return wall, r, digest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, nargs="?")
    ap.add_argument("--simulate", help="make the dataset with pipeline.simulate (preset name)")
    ap.add_argument("--subdivisions", default="1,4,10")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-pixels", default="25e6,75e6,150e6,300e6")
    ap.add_argument("--sample-chunks", type=int, default=24, help="chunks timed for read and kernel")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/throughput"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    ds = a.dataset
    if ds is None:
        import pipeline

        ds = a.out / "dataset"
        pipeline.simulate(ds, preset=a.simulate or "demo", overwrite=True)
    stack = open_image_stack(ds / "data.nxs")
    masks = open_masks([ds / "mask.nxs"], stack.shape) if (ds / "mask.nxs").exists() else None
    grid = read_miller_grid(ds / "geometry.nxs")
    chunks = _chunks(stack, a.sample_chunks)
    n_px = sum(np.prod([s.stop - s.start for s in c]) for c in chunks)
    rows = []

    def add(measure, sub, block, workers, seconds, pixels):
        rate = pixels / seconds / workers / 1e6
        rows.append(
            {
                "measure": measure,
                "subdivide": sub,
                "block_pixels": block,
                "workers": workers,
                "seconds": round(seconds, 3),
                "pixels": int(pixels),
                "mpx_per_s_per_core": round(rate, 1),
            }
        )
        print(f"{measure:22} sub {sub:8} block {block:>10} : {rate:7.1f} Mpx/s per core", flush=True)

    read_ours(stack, masks, chunks[:1])  # warm caches and numba
    add("read (h5py)", "-", "-", 1, read_h5py(stack, masks, chunks), n_px)
    add("read (ours)", "-", "-", 1, read_ours(stack, masks, chunks), n_px)
    subs = parse_subdivisions(a.subdivisions)
    for sub in subs:
        label = "x".join(map(str, sub))
        add("kernel", label, "-", 1, kernel(stack, masks, grid, chunks, sub), n_px)
    blocks = [float(b) for b in a.block_pixels.split(",")]
    from pipeline.cluster import connect

    t0 = time.perf_counter()
    with connect("local", workers=a.workers, threads_ok=reads_release_the_gil(ds / "data.nxs")) as client:
        print(f"cluster of {a.workers} workers up in {time.perf_counter() - t0:.1f} s (not counted below)")
        whole(ds, subs[0], client, blocks[0], a.out / "t.nxs")  # warm the workers
        for sub in subs:
            label = "x".join(map(str, sub))
            wall, r, _ = whole(ds, sub, client, blocks[len(blocks) // 2], a.out / "t.nxs")
            add("integrate (whole)", label, int(blocks[len(blocks) // 2]), a.workers, wall, r.pixels_read)
        sub = subs[len(subs) // 2]
        digests = set()
        for block in blocks:
            wall, r, digest = whole(ds, sub, client, block, a.out / "t.nxs")
        digests.add(digest)
        add(
            f"integrate by block ({r.map_tasks} tasks)",
            "x".join(map(str, sub)),
            int(block),
            a.workers,
            wall,
            r.pixels_read,
        )
    assert len(digests) == 1, "task size changed the result"
    (a.out / "t.nxs").unlink(missing_ok=True)
    with open(a.out / "throughput.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, a.out / "throughput.png", ds.name)
    print(f"-> {a.out / 'throughput.csv'}, {a.out / 'throughput.png'}")
    return 0


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels = [f"{r['measure']}\n{r['subdivide']} {r['block_pixels']}" for r in rows]
    ax.barh(range(len(rows)), [r["mpx_per_s_per_core"] for r in rows], color="tab:blue")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("million pixels per second per core")
    ax.set_title(f"{title}: throughput of read, kernel and whole integrate")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
