"""Could a re-read cache make integrate >= 1.5x faster? (It could not: `diffuse convert` was removed.)

    .venv/bin/python benchmarks/cache_experiment.py /work/data/medium /scratch/medium_lz4.nxs lz4
    .venv/bin/python benchmarks/cache_experiment.py /work/data/medium /scratch/medium_raw.nxs none

Writes the dataset's images with the mask folded in (-1, mdx2's own marker) as one plain (not
virtual) dataset with the same chunks, bitshuffle-LZ4 (read by our direct-chunk LZ4 decoder,
pipeline.io.bitshuffle) or uncompressed, in data.nxs's layout; integrating it (without --mask) gives
the same table as data.nxs + mask.nxs. Time ``diffuse integrate`` on both and compare the map tasks'
read/mask/bin/spill seconds in the run logs (results: benchmarks/results/cache_decision/, docs/SPEED.md).
"""

from __future__ import annotations

import sys
import time

import h5py
import hdf5plugin


def main() -> int:
    src, out, codec = sys.argv[1], sys.argv[2], sys.argv[3]
    f = h5py.File(src + "/data.nxs", "r")
    m = h5py.File(src + "/mask.nxs", "r")
    d, mask = f["/entry/image_series/data"], m["/entry/mask/signal"]
    source = d.virtual_sources()[0]  # mdx2's data.nxs: a virtual dataset over datastore/
    with h5py.File(f"{src}/{source.file_name}", "r") as first:
        chunks = first[source.dset_name].chunks
    kw = dict(hdf5plugin.Bitshuffle(cname="lz4")) if codec == "lz4" else {}
    t = time.time()
    with h5py.File(out, "w") as g:
        e = g.create_group("entry")
        e.attrs.update(f["entry"].attrs)
        s = e.create_group("image_series")
        s.attrs.update(f["entry/image_series"].attrs)
        for k in ("exposure_times", "ix", "iy", "phi"):
            s.create_dataset(k, data=f["entry/image_series"][k][()])
            s[k].attrs.update(f["entry/image_series"][k].attrs)
        ds = s.create_dataset("data", shape=d.shape, dtype=d.dtype, chunks=chunks, **kw)
        for a in range(0, d.shape[0], chunks[0]):
            for b in range(0, d.shape[1], chunks[1]):
                block = d[a : a + chunks[0], b : b + chunks[1], :]
                block[mask[a : a + chunks[0], b : b + chunks[1], :]] = -1
                ds[a : a + chunks[0], b : b + chunks[1], :] = block
    print(f"written {out} ({codec}, chunks {chunks}) in {time.time() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
