#!/usr/bin/env python
"""Turn an mdx2 image stack (data.nxs, e.g. a refkit dataset) into an Eiger-style NXmx master file.

Writes OUTDIR/NAME_master.h5 and OUTDIR/NAME_data_NNNNNN.h5 (several data files reached by external
links), pixels as uint16 (or --dtype uint32) in chunks of one frame compressed with bitshuffle-LZ4,
as Eiger detectors write them; with the omega scan, count_time, saturation_value and a pixel_mask.

Masked pixels (-1 in data.nxs) become: for pixels masked in every frame, every second one is flagged
in ``pixel_mask`` and holds an arbitrary count in the data (so only the mask hides it), the others
hold the dtype's maximum (Eiger's gap value); pixels masked only in some frames hold the maximum.
Integrating the master file therefore gives the same table as the data.nxs it was made from.

With --expt, also writes OUTDIR/NAME.expt: a copy of the DIALS experiment whose imageset names the
master file (relative name), for ``diffuse integrate geometry.nxs NAME.expt``.

    python scripts/nxs_to_eiger.py DATASET/data.nxs OUTDIR --frames-per-file 7 --expt DATASET/experiment.expt
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="mdx2 data.nxs (/entry/image_series)")
    ap.add_argument("outdir")
    ap.add_argument("--name", default="eiger")
    ap.add_argument("--dtype", choices=("uint16", "uint32"), default="uint16")
    ap.add_argument("--frames-per-file", type=int, default=7)
    ap.add_argument(
        "--expt", help="DIALS .expt of the data: phi0 and dphi from its scan, and a copy naming the master"
    )
    ap.add_argument("--frames", type=int, help="only the first N frames (small fixtures)")
    ap.add_argument("--gzip", action="store_true", help="gzip+shuffle instead of bitshuffle-LZ4 (benchmarks)")
    a = ap.parse_args(argv)

    out = Path(a.outdir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(a.dtype)
    top = np.iinfo(dtype).max
    with h5py.File(a.data, "r") as f:
        g = f["/entry/image_series"]
        data = g["data"]
        n, ny, nx = data.shape
        n = min(n, a.frames or n)
        phi = g["phi"][:n]
        exposure = g["exposure_times"][:n]
        # pixels masked in every frame: decide from a few frames (refkit gaps are static)
        always = np.all(data[: min(n, 3)] == -1, axis=0)
        if a.expt:
            scan = json.loads(Path(a.expt).read_text())["scan"][0]
            phi0, dphi = (float(v) for v in scan["oscillation"]) if "oscillation" in scan else (None, None)
            if phi0 is None:
                osc = scan["properties"]["oscillation"]
                phi0, dphi = float(osc[0]), float(osc[1]) - float(osc[0])
        else:
            dphi = float(phi[1] - phi[0]) if n > 1 else 1.0
            phi0 = float(phi[0] - dphi / 2)
        flagged = always.copy()
        flagged[:, 1::2] = False  # every second column of the static gaps: pixel_mask, the rest: max value
        rng = np.random.default_rng(0)
        filler = rng.integers(0, 100, size=(ny, nx)).astype(dtype)
        links = []
        for i, start in enumerate(range(0, n, a.frames_per_file)):
            stop = min(start + a.frames_per_file, n)
            block = data[start:stop]
            if block.max() >= top:
                raise SystemExit(f"counts up to {block.max()} do not fit below the {dtype} maximum {top}")
            raw = np.where(block == -1, top, block).astype(dtype)
            raw[:, flagged] = filler[flagged]
            fname = f"{a.name}_data_{i + 1:06d}.h5"
            comp = (
                dict(compression="gzip", compression_opts=1, shuffle=True)
                if a.gzip
                else hdf5plugin.Bitshuffle(cname="lz4")
            )
            with h5py.File(out / fname, "w") as df:
                ds = df.create_dataset("/entry/data/data", data=raw, chunks=(1, ny, nx), **comp)
                ds.attrs["image_nr_low"] = np.int32(start + 1)
                ds.attrs["image_nr_high"] = np.int32(stop)
            links.append(fname)

    with h5py.File(out / f"{a.name}_master.h5", "w") as m:
        m.attrs["default"] = "entry"
        entry = m.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        dg = entry.create_group("data")
        dg.attrs["NX_class"] = "NXdata"
        for i, fname in enumerate(links):
            dg[f"data_{i + 1:06d}"] = h5py.ExternalLink(fname, "/entry/data/data")
        det = m.create_group("/entry/instrument/detector")
        det.attrs["NX_class"] = "NXdetector"
        same = np.all(exposure == exposure[0])
        det["count_time"] = exposure[0] if same else exposure
        det["frame_time"] = exposure[0] if same else exposure
        det["saturation_value"] = np.int64(top - 1)
        det["bit_depth_image"] = np.int32(dtype.itemsize * 8)
        spec = det.create_group("detectorSpecific")
        pm = np.zeros((ny, nx), np.uint32)
        pm[flagged] = 1
        spec.create_dataset("pixel_mask", data=pm, compression="gzip")
        gon = m.create_group("/entry/sample/goniometer")
        gon["omega"] = phi0 + dphi * np.arange(n)
        gon["omega"].attrs["units"] = "deg"
        gon["omega_increment_set"] = dphi
        gon["omega_range_average"] = dphi
    if a.expt:
        doc = json.loads(Path(a.expt).read_text())
        doc["imageset"] = [{"__id__": "ImageSequence", "template": f"{a.name}_master.h5"}]
        (out / f"{a.name}.expt").write_text(json.dumps(doc, indent=1))
    print(f"wrote {out / (a.name + '_master.h5')} with {len(links)} data files, {n} x {ny} x {nx} {dtype}")


if __name__ == "__main__":
    os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
    main()
