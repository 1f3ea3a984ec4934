"""What the detector-file readers (NXmx/Eiger HDF5, CBF) share.

* the counts convention: every reader returns int32 counts with -1 where mdx2's data.nxs would hold
  -1 (pixels dxtbx masks: the dtype's maximum, negative values, ``pixel_mask`` != 0, values at or
  above the detector's count cutoff);
* the default binning grid, as ``mdx2.import_data`` chooses its chunks (frames from the oscillation
  width, y and x the stride of the detector modules);
* the scan read from a DIALS ``.expt`` (image files, frames, phi, exposure times), and the check of a
  scan against the geometry's Miller grid.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.kernels.aot import kernel

__all__ = [
    "ExptScan",
    "RawInfo",
    "check_scan_against_grid",
    "default_binning_chunks",
    "frame_centres",
    "read_expt_scan",
    "to_counts",
]

# (fast, slow) size of one module and the gap between modules of the detectors dxtbx knows by
# their tiling (dxtbx.format.FormatPilatusHelpers.sensor_active_areas): Pilatus and Eiger.
MODULE_TILINGS = (((487, 195), (7, 17)), ((1028, 512), (12, 38)))


def default_stack_frames(dphi: float) -> int:
    """mdx2's ``_default_stack_from_rotation_angle``: frames per chunk (5-6 degrees, or 40-50 frames)."""
    if dphi == 0:
        numer, denom = 0, 1
    else:
        numer = 180
        denom = int(np.round(numer / dphi))
    if denom < numer * 7:
        if 5 * denom % numer == 0:
            return 5 * denom // numer
        if 6 * denom % numer == 0:
            return 6 * denom // numer
        return 10
    for mult, n in ((2, 50), (2, 40), (2, 45), (4, 50), (4, 45)):
        if mult * n * numer % denom == 0:
            return n
    return 40


def default_binning_chunks(dphi: float, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The chunks ``mdx2.import_data`` would write: (frames from dphi, module stride y, module stride x).

    The module stride is that of a Pilatus or Eiger tiling when the image size fits one, else the
    whole image (a detector dxtbx does not tile).
    """
    nphi, ny, nx = shape
    stride_y, stride_x = ny, nx
    for (mx, my), (gx, gy) in MODULE_TILINGS:
        if (nx + gx) % (mx + gx) == 0 and (ny + gy) % (my + gy) == 0:
            n_y, n_x = ny // my, nx // mx
            stride_y = my + ((ny - n_y * my) // (n_y - 1) if n_y > 1 else 0)
            stride_x = mx + ((nx - n_x * mx) // (n_x - 1) if n_x > 1 else 0)
            break
    return (min(default_stack_frames(dphi), nphi), stride_y, stride_x)


def frame_centres(phi0: float, dphi: float, n: int) -> np.ndarray:
    """Frame-centre angles exactly as mdx2 computes them (``calc_scan_axes(centered=True)``)."""
    return phi0 + dphi * np.linspace(0.5, n - 0.5, n)


@kernel(
    nogil=True,
    cache=True,
    signatures=[
        (f"{t}[:, :, ::1]", "boolean[:, ::1]", "boolean", "int64", "int32[:, :, ::1]")
        for t in ("uint16", "uint32", "int32", "int64")
    ],
)
def _to_counts(raw, mask, use_mask, limit, out):
    nphi, ny, nx = raw.shape
    for p in range(nphi):
        for y in range(ny):
            for x in range(nx):
                v = raw[p, y, x]
                if v < 0 or v > limit or (use_mask and mask[y, x]):
                    out[p, y, x] = -1
                else:
                    out[p, y, x] = np.int32(v)


def to_counts(
    raw: np.ndarray, mask: np.ndarray | None, limit: int, out: np.ndarray | None = None
) -> np.ndarray:
    """int32 counts of ``raw`` (frames, y, x) with -1 where a pixel is masked: ``mask[y, x]`` True,
    the value negative or above ``limit`` (the largest valid count). Runs without the GIL."""
    if out is None:
        out = np.empty(raw.shape, dtype=np.int32)
    empty = np.zeros((1, 1), dtype=np.bool_)
    _to_counts(raw, empty if mask is None else mask, mask is not None, np.int64(limit), out)
    return out


def valid_limit(dtype: np.dtype, cutoff: float | None = None) -> int:
    """Largest count that is not masked: below the dtype's maximum (Eiger's gap and bad pixels), within
    int32 (mdx2's data.nxs type), and below ``cutoff`` (the detector's saturation) when known."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu":
        raise InputError(f"image data must be integers (uint16, uint32, int32), got {dtype}")
    limit = min(int(np.iinfo(dtype).max) - 1, int(np.iinfo(np.int32).max) - 1)
    if cutoff is not None and np.isfinite(cutoff) and cutoff > 0:
        limit = min(limit, int(np.ceil(cutoff)) - 1)
    return limit


@dataclass(frozen=True)
class RawInfo:
    """Detector-file details of an image stack read from NXmx or CBF files."""

    pixel_mask: tuple[str, str] | None  # (file, dataset) of the (y, x) pixel mask, nonzero = exclude
    limit: int  # largest valid count; larger (and negative) values are masked
    file_chunks: tuple[int, int, int]  # the files' own storage chunks
    dtype: str  # the files' pixel type
    first: int  # first frame of the scan in the files
    phi0: float  # start of the scan (degrees)
    dphi: float  # degrees per frame


@dataclass(frozen=True)
class ExptScan:
    """The images and scan of the first experiment of a DIALS ``.expt``."""

    images: tuple[str, ...]  # one master file (HDF5) or one file per frame (CBF)
    first: int  # index of the first frame in the image file (0-based)
    n: int  # number of frames
    phi0: float
    dphi: float
    exposure_times: np.ndarray


def _expand_template(template: str, first: int, last: int) -> list[str]:
    hashes = template.count("#")
    head = template[: template.index("#")]
    tail = template[template.index("#") + hashes :]
    return [f"{head}{i:0{hashes}d}{tail}" for i in range(first, last + 1)]


def read_expt_scan(path: str | os.PathLike) -> ExptScan:
    """Image files, frames, phi and exposure times of the first experiment of a DIALS ``.expt``.

    Relative image paths are taken relative to the ``.expt``'s directory. Exposure times follow
    mdx2 (``Experiment.exposure_times``): a list with only its first value set is filled with it.
    """
    from pipeline.io.expt import read_expt

    path = Path(path)
    expt = read_expt(path)
    doc = json.loads(path.read_text())
    exp = doc["experiment"][0]
    isets = doc.get("imageset") or []
    index = exp.get("imageset", 0)
    if not isinstance(index, int) or not 0 <= index < len(isets):
        raise InputError(f"{str(path)!r}: experiment 0 names no imageset (image files unknown)")
    iset = isets[index]
    first, last = expt.scan.image_range
    names: list[str]
    if "template" in iset and "#" in iset["template"]:
        names = _expand_template(iset["template"], first, last)
        frame0 = 0
    elif "template" in iset or "master" in iset:
        names = [iset.get("master") or iset["template"]]
        frame0 = first - 1
    elif isinstance(iset.get("images"), list) and iset["images"]:
        names = list(iset["images"])
        if len(names) == 1:
            frame0 = first - 1
        else:
            names = names[first - 1 : last]
            frame0 = 0
    else:
        raise InputError(f"{str(path)!r}: imageset {index} has neither a template nor a list of images")
    images = tuple(str(Path(n) if os.path.isabs(n) else path.parent / n) for n in names)
    scan = doc["scan"][exp.get("scan", 0)]
    props = scan.get("properties") if isinstance(scan.get("properties"), dict) else scan
    n = expt.scan.num_images
    times = np.asarray(props.get("exposure_time", [0.0] * n), dtype=np.float64).reshape(-1)
    if times.size == 1 and n > 1:
        times = np.full(n, times[0])
    if np.count_nonzero(times) == 1 and times[0] > 0:  # mdx2's fix for CBF headers read only once
        times[:] = times[0]
    if times.shape != (n,):
        raise InputError(f"{str(path)!r}: scan has {n} images but {times.size} exposure times")
    return ExptScan(images, frame0, n, expt.scan.phi0, expt.scan.dphi, times)


def check_scan_against_grid(source: str, geometry: str, grid, phi0: float, dphi: float, shape) -> None:
    """Refuse images whose scan or image size disagree with the Miller grid of ``geometry``.

    mdx2's geometry grid spans the scan's edges: phi from phi0 to phi0 + n * dphi, iy from -0.5 to
    ny - 0.5 and ix from -0.5 to nx - 0.5 (``calc_scan_axes(centered=False)``).
    """
    n, ny, nx = shape
    expected = {
        "phi": (phi0, phi0 + n * dphi, grid.phi),
        "iy": (-0.5, ny - 0.5, grid.iy),
        "ix": (-0.5, nx - 0.5, grid.ix),
    }
    for name, (lo, hi, axis) in expected.items():
        tol = 1e-6 * max(1.0, abs(lo), abs(hi))
        if abs(axis[0] - lo) > tol or abs(axis[-1] - hi) > tol:
            what = (
                f"a scan from {phi0:g} deg in {n} frames of {dphi:g} deg ({lo:g} to {hi:g})"
                if name == "phi"
                else f"{name} from {lo:g} to {hi:g} ({ny} x {nx} pixels)"
            )
            raise InputError(
                f"{source!r} has {what}, but geometry {geometry!r} was made for {name} from "
                f"{axis[0]:g} to {axis[-1]:g}; were they made from the same experiment?"
            )
