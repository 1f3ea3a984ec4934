"""NXmx / Eiger HDF5 master files read directly, as an image stack for ``integrate`` and ``import-data``.

A master file holds the metadata and reaches the pixels through HDF5 external links
(``/entry/data/data_000001`` -> ``NAME_data_000001.h5:/entry/data/data``), a virtual dataset, or a
dataset of its own. Pixels are unsigned integers (uint16 or uint32, also int32) stored in chunks of
one frame compressed with bitshuffle-LZ4, which :class:`~pipeline.io.chunks.ChunkReader` decodes
with the GIL released.

Counts follow mdx2's data.nxs: -1 where dxtbx masks a pixel (``pixel_mask`` != 0, the dtype's
maximum: Eiger's gap and dead pixels, values at or above ``saturation_value``, values that do not
fit in int32).

Links are never followed by HDF5: each one is resolved here and allowed only when its target file
lies inside the master file's directory (a relative name, no absolute path, no ``..`` or symlink
leading out). The data files are then opened by their resolved path.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reads that go through h5py)
import numpy as np

from pipeline.errors import InputError
from pipeline.io.chunks import ChunkReader
from pipeline.io.rawimages import RawInfo, frame_centres, to_counts, valid_limit

__all__ = ["NxmxHandle", "is_nxmx", "open_nxmx_stack", "resolve_link_target"]

OMEGA_PATHS = (
    "/entry/sample/goniometer/omega",
    "/entry/sample/transformations/omega",
    "/entry/sample/sample_omega/omega",
)
MASK_PATHS = (
    "/entry/instrument/detector/pixel_mask",
    "/entry/instrument/detector/detectorSpecific/pixel_mask",
)
DETECTOR = "/entry/instrument/detector"
RAW_CACHE_BYTES = 1 << 30  # decoded storage chunks kept per open stack: the frames of one binning slab


def is_nxmx(path: str | os.PathLike) -> bool:
    """True for an HDF5 file with ``/entry/data`` holding image data but no mdx2 image series."""
    try:
        with h5py.File(path, "r") as f:
            if "/entry/image_series" in f or "/entry/data" not in f:
                return False
            group = f["/entry/data"]
            return isinstance(group, h5py.Group) and any(k == "data" or k.startswith("data_") for k in group)
    except OSError:
        return False


def resolve_link_target(master: Path, name: str) -> Path:
    """The file an external link (or virtual source) of ``master`` names, refused unless it lies
    inside the master's directory: a relative name without ``..`` whose real path stays there."""
    if name == ".":
        return master.resolve()
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise InputError(
            f"{str(master)!r} links to {name!r}: data files must be named relative to the master file's "
            "directory (no absolute path, no '..'); links elsewhere are refused"
        )
    base = master.resolve().parent
    target = (master.parent / name).resolve()
    if not target.is_relative_to(base):
        raise InputError(
            f"{str(master)!r} links to {name!r}, which resolves to {str(target)!r} outside {str(base)!r} "
            "(a symbolic link?); links outside the master file's directory are refused"
        )
    if not target.exists():
        raise InputError(f"{str(master)!r}: data file {name!r} not found (looked for {str(target)!r})")
    return target


def _slabs(master: Path, f: h5py.File) -> list[tuple[int, int, str, str]]:
    """(first frame, stop, file, dataset) of every block of frames, in frame order."""
    group = f["/entry/data"]
    pieces = []
    names = sorted(k for k in group if k.startswith("data_"))
    if not names and "data" in group:
        names = ["data"]
    for name in names:
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            target = resolve_link_target(master, link.filename)
            try:
                with h5py.File(target, "r") as df:
                    if link.path not in df or not isinstance(df[link.path], h5py.Dataset):
                        raise InputError(f"data file {str(target)!r} has no dataset {link.path!r}")
                    ds = df[link.path]
                    low = ds.attrs.get("image_nr_low")
                    pieces.append(
                        (int(low) - 1 if low is not None else None, ds.shape, str(target), link.path)
                    )
            except OSError as exc:
                raise InputError(f"data file {str(target)!r} is not a readable HDF5 file: {exc}") from exc
            continue
        ds = group[name]  # hard or soft link inside the master file
        if not isinstance(ds, h5py.Dataset):
            raise InputError(f"{str(master)!r}: /entry/data/{name} is not a dataset")
        if ds.is_virtual:
            for vds in ds.virtual_sources():
                target = resolve_link_target(master, vds.file_name)
                (p0, _, _), (p1, _, _) = vds.vspace.get_select_bounds()
                with h5py.File(target, "r") as sf:
                    if vds.dset_name not in sf:
                        raise InputError(f"virtual source {str(target)!r} has no dataset {vds.dset_name!r}")
                    shape = sf[vds.dset_name].shape
                if vds.src_space.get_select_type() != h5py.h5s.SEL_ALL or shape[0] != p1 - p0 + 1:
                    raise InputError(
                        f"{str(master)!r}: virtual dataset {ds.name} maps part of {vds.file_name!r}; "
                        "only whole source datasets (blocks of frames) are supported"
                    )
                pieces.append((int(p0), shape, str(target), vds.dset_name))
        else:
            pieces.append((0, ds.shape, str(master.resolve()), ds.name))
    if not pieces:
        raise InputError(f"{str(master)!r}: /entry/data holds no image data (data_NNNNNN links or data)")
    slabs, start = [], 0
    for low, shape, path, dataset in sorted(pieces, key=lambda p: (p[0] is None, p[0] or 0)):
        if len(shape) != 3:
            raise InputError(f"{path!r}: {dataset} has shape {shape}; expected (frames, y, x)")
        first = start if low is None else low
        if first != start:
            raise InputError(f"{str(master)!r}: frames {start}..{first - 1} are missing from the data files")
        slabs.append((first, first + int(shape[0]), path, dataset))
        start = first + int(shape[0])
    return slabs


def _first(f: h5py.File, paths) -> h5py.Dataset | None:
    for p in paths:
        if p in f and isinstance(f[p], h5py.Dataset):
            return f[p]
    return None


def _scalar(f: h5py.File, path: str) -> np.ndarray | None:
    if path in f and isinstance(f[path], h5py.Dataset):
        return np.asarray(f[path][()], dtype=np.float64).reshape(-1)
    return None


def _scan(master: Path, f: h5py.File, n: int) -> tuple[float, float]:
    """(phi0, dphi) in degrees: the first omega and the increment (omega_increment_set, or the step)."""
    omega = _first(f, OMEGA_PATHS)
    if omega is None:
        raise InputError(
            f"{str(master)!r} records no rotation angles (looked for {', '.join(OMEGA_PATHS)}); "
            "pass the DIALS .expt instead of the master file to take phi from it"
        )
    values = np.asarray(omega[()], dtype=np.float64).reshape(-1)
    if values.size not in (1, n):
        raise InputError(f"{str(master)!r}: {omega.name} has {values.size} angles for {n} frames")
    parent = omega.parent
    dphi = None
    for name in ("omega_increment_set", "omega_range_average"):
        if name in parent:
            dphi = float(np.asarray(parent[name][()]).reshape(-1)[0])
            break
    if dphi is None and "vector" in omega.attrs and values.size > 1:
        dphi = float(values[1] - values[0])
    if dphi is None and values.size > 1:
        dphi = float(values[1] - values[0])
    if dphi is None or not np.isfinite(dphi) or dphi <= 0:
        raise InputError(f"{str(master)!r}: no positive rotation per frame (omega_increment_set) found")
    phi0 = float(values[0])
    if values.size == n and n > 1:
        off = np.abs(values - (phi0 + dphi * np.arange(n))).max()
        if off > 1e-3 * dphi:
            raise InputError(
                f"{str(master)!r}: {omega.name} is not a uniform scan of {dphi:g} deg per frame "
                f"(off by up to {off:g} deg)"
            )
    return phi0, dphi


def _exposure(master: Path, f: h5py.File, n: int) -> np.ndarray:
    t = _scalar(f, f"{DETECTOR}/count_time")
    if t is None:
        t = _scalar(f, f"{DETECTOR}/frame_time")
    if t is None:
        return np.zeros(n)  # refused later by check_exposure_times, which names --exposure-time
    if t.size == 1:
        return np.full(n, t[0])
    if t.size != n:
        raise InputError(f"{str(master)!r}: {DETECTOR}/count_time has {t.size} values for {n} frames")
    return t


def open_nxmx_stack(path: str | os.PathLike, exposure_time: float | None = None, scan=None):
    """Describe the image stack of an NXmx master file as an :class:`~pipeline.io.images.ImageStack`.

    ``scan`` (an :class:`~pipeline.io.rawimages.ExptScan`) gives frames, phi and exposure times from a
    DIALS ``.expt`` instead of the file; the file's own angles, when recorded, must agree with it.
    The binning grid (``storage_chunks``) defaults to the chunks mdx2.import_data would write.
    """
    from pipeline.io.images import ImageStack
    from pipeline.io.rawimages import default_binning_chunks

    master = Path(path)
    try:
        f = h5py.File(master, "r")
    except OSError as exc:
        raise InputError(f"{str(master)!r} is not a readable HDF5 file: {exc}") from exc
    with f:
        slabs = _slabs(master, f)
        with h5py.File(slabs[0][2], "r") as df:
            ds = df[slabs[0][3]]
            frame_shape = tuple(int(n) for n in ds.shape[1:])
            dtype = ds.dtype
            file_chunks = tuple(int(c) for c in (ds.chunks or (1, *frame_shape)))
        for _, _, p, d in slabs[1:]:
            with h5py.File(p, "r") as df:
                if tuple(df[d].shape[1:]) != frame_shape or df[d].dtype != dtype:
                    raise InputError(
                        f"{p!r}: {d} has frames {tuple(df[d].shape[1:])} of {df[d].dtype}, but the first "
                        f"data file has {frame_shape} of {dtype}"
                    )
        total = slabs[-1][1]
        saturation = _scalar(f, f"{DETECTOR}/saturation_value")
        limit = valid_limit(dtype, None if saturation is None else float(saturation[0]) + 1)
        mask_ds = _first(f, MASK_PATHS)
        pixel_mask = None
        if mask_ds is not None:
            if tuple(mask_ds.shape) != frame_shape:
                raise InputError(
                    f"{str(master)!r}: {mask_ds.name} has shape {tuple(mask_ds.shape)}, "
                    f"frames are {frame_shape}"
                )
            pixel_mask = (str(master.resolve()), mask_ds.name)
        if scan is None:
            first, n = 0, total
            phi0, dphi = _scan(master, f, total)
            exposure = _exposure(master, f, total)
        else:
            first, n = scan.first, scan.n
            if first < 0 or first + n > total:
                raise InputError(
                    f"the .expt's scan takes frames {first + 1}..{first + n} of {str(master)!r}, "
                    f"which holds {total} frames"
                )
            phi0, dphi, exposure = scan.phi0, scan.dphi, scan.exposure_times
            if _first(f, OMEGA_PATHS) is not None:
                fphi0, fdphi = _scan(master, f, total)
                fphi0 += first * fdphi
                if abs(fphi0 - phi0) > 1e-3 * dphi or abs(fdphi - dphi) > 1e-6 * max(1.0, dphi):
                    raise InputError(
                        f"the .expt's scan starts at {phi0:g} deg in steps of {dphi:g} deg, but "
                        f"{str(master)!r} records {fphi0:g} deg in steps of {fdphi:g} deg"
                    )
    # in stack frames: frame 0 of a slab's dataset is stack frame ``start`` (negative when the scan
    # starts inside it); slabs outside the scan are dropped
    slabs = [(a - first, b - first, p, d) for a, b, p, d in slabs if b > first and a < first + n]
    if exposure_time is not None:
        exposure = np.full(n, float(exposure_time))
    shape = (n, *frame_shape)
    return ImageStack(
        path=str(master.resolve()),
        dataset="/entry/data",
        shape=shape,
        storage_chunks=default_binning_chunks(dphi, shape),
        phi=frame_centres(phi0, dphi, n),
        iy=np.arange(frame_shape[0], dtype=np.float64),
        ix=np.arange(frame_shape[1], dtype=np.float64),
        exposure_times=np.asarray(exposure, dtype=np.float64),
        sources=tuple(dict.fromkeys(p for _, _, p, _ in slabs)),
        format="nxmx",
        slabs=tuple((a, b, p, d) for a, b, p, d in slabs),
        raw=RawInfo(pixel_mask, limit, file_chunks, str(dtype), first, phi0, dphi),
    )


@functools.lru_cache(maxsize=4)
def _pixel_mask(path: str, dataset: str, stamp: tuple[int, int]) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return np.asarray(f[dataset][()]) != 0


def read_pixel_mask(pixel_mask) -> np.ndarray | None:
    """The (y, x) bool mask (True = exclude) of ``pixel_mask = (file, dataset)``, cached per process."""
    if pixel_mask is None:
        return None
    st = os.stat(pixel_mask[0])
    return _pixel_mask(pixel_mask[0], pixel_mask[1], (st.st_mtime_ns, st.st_size))


class NxmxHandle:
    """Open data files of one task; ``read`` returns int32 counts with -1 where masked.

    Decoded storage chunks are kept (up to the frames of one binning slab, at most
    :data:`RAW_CACHE_BYTES`): binning chunks narrower than a frame read the same frames again.
    """

    def __init__(self, stack):
        self._stack = stack
        self._files: dict[str, h5py.File] = {}
        self._readers: dict[int, ChunkReader] = {}
        self._mask = read_pixel_mask(stack.raw.pixel_mask)
        fc = stack.raw.file_chunks
        chunk_bytes = int(np.prod(fc)) * np.dtype(stack.raw.dtype).itemsize
        per_slab = (
            -(-stack.storage_chunks[0] // fc[0]) * -(-stack.shape[1] // fc[1]) * -(-stack.shape[2] // fc[2])
        )
        self._cache_bytes = min(RAW_CACHE_BYTES, per_slab * chunk_bytes)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in self._files.values():
            f.close()

    def _reader(self, i: int) -> ChunkReader:
        if i not in self._readers:
            _, _, path, dataset = self._stack.slabs[i]
            if path not in self._files:
                self._files[path] = h5py.File(path, "r")
            self._readers[i] = ChunkReader(self._files[path][dataset], cache_bytes=self._cache_bytes)
        return self._readers[i]

    def read(self, slices, out=None) -> np.ndarray:
        """The pixels of ``slices`` as int32 counts (``out``, a buffer HDF5 stacks may decode into,
        is not used here)."""
        p, ys, xs = slices
        out = np.empty((p.stop - p.start, ys.stop - ys.start, xs.stop - xs.start), dtype=np.int32)
        mask = None if self._mask is None else self._mask[ys, xs]
        for i, (start, stop, _, _) in enumerate(self._stack.slabs):
            lo, hi = max(p.start, start), min(p.stop, stop)
            if lo < hi:
                raw = self._reader(i).read((slice(lo - start, hi - start), ys, xs))
                to_counts(raw, mask, self._stack.raw.limit, out[lo - p.start : hi - p.start])
        return out


def fast_reads(stack) -> bool:
    """True when every data file decodes on the direct (GIL-free) path."""
    for _, _, path, dataset in stack.slabs:
        with h5py.File(path, "r") as f:
            if not ChunkReader(f[dataset]).fast:
                return False
    return True
