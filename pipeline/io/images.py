"""The image stack of data.nxs (plain or virtual HDF5 dataset, or detector files) and masks over it.

The graph holds only :class:`ImageStack` and :class:`MaskStack` descriptors (paths, shapes, chunking,
small axis arrays); each task opens the files itself, so no h5py object or pixel array is pickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import InputError
from pipeline.io.chunks import ChunkReader
from pipeline.io.inputs import check_finite, check_mask_dtype
from pipeline.io.nexus import decode_str, open_nexus, read_array, require

__all__ = [
    "ImageStack",
    "MaskStack",
    "open_image_stack",
    "open_masks",
    "reads_release_the_gil",
    "storage_chunk_slices",
]

IMAGE_GROUP = "/entry/image_series"
MASK_DATASET = "/entry/mask/signal"
MASKED_VALUE = -1  # mdx2 marks pixels to exclude (module gaps, bad pixels) with -1 in the counts
MASK_CACHE_BYTES = 64 * 2**20  # decoded mask chunks kept per file: enough for the rows two bands share

Slices = tuple[slice, slice, slice]


@dataclass(frozen=True, eq=False)
class ImageStack:
    """Everything a task needs to read pixels from data.nxs, without holding the file open.

    ``storage_chunks`` is the work unit of mdx2's integrate: the chunk shape of the first virtual
    source (or of the dataset itself, or one frame); partial observations are split per chunk.
    """

    path: str
    dataset: str
    shape: tuple[int, int, int]
    storage_chunks: tuple[int, int, int]
    phi: np.ndarray
    iy: np.ndarray
    ix: np.ndarray
    exposure_times: np.ndarray
    sources: tuple[str, ...] = ()
    format: str = "hdf5"  # "hdf5", or detector files: "nxmx" (Eiger/NXmx master), "cbf"
    # (phi start, phi stop, file, dataset) of each phi slab stored whole in one file, so chunks can be
    # read from the slab's own file (the virtual dataset's sources, or the dataset itself)
    slabs: tuple[tuple[int, int, str, str], ...] = ()
    raw: object = None  # detector files only: a pipeline.io.rawimages.RawInfo

    @property
    def n_pixels(self) -> int:
        return int(np.prod(self.shape))

    def open(self):
        """Open the pixel array for reading; use as a context manager inside one task."""
        if self.format == "nxmx":
            from pipeline.io.nxmx import NxmxHandle

            return NxmxHandle(self)
        if self.format == "cbf":
            from pipeline.io.cbf import CbfHandle

            return CbfHandle(self)
        return _H5Handle(self)


@dataclass(frozen=True, eq=False)
class MaskStack:
    """One or more mask files (True = exclude) whose union is applied to the image stack."""

    paths: tuple[str, ...]
    shape: tuple[int, int, int]

    def read(self, slices: Slices) -> np.ndarray:
        """The union of all masks over ``slices`` as a bool array (opens the files for this one read)."""
        with self.open() as masks:
            return masks.read(slices)

    def open(self) -> _MaskHandle:
        """Keep the mask files open (with a large chunk cache) for the reads of one task."""
        return _MaskHandle(self.paths)


class _MaskHandle:
    def __init__(self, paths: tuple[str, ...]):
        self._files = [h5py.File(p, "r") for p in paths]
        # Mask chunks rarely align with the data's: keep decoded chunks that neighbouring reads share.
        self._readers = [ChunkReader(f[MASK_DATASET], cache_bytes=MASK_CACHE_BYTES) for f in self._files]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in self._files:
            f.close()

    def read(self, slices: Slices) -> np.ndarray:
        out = None
        for reader in self._readers:
            block = np.asarray(reader.read(slices), dtype=bool)
            out = block if out is None else (out | block)
        return out


class _H5Handle:
    """Open files of one task: reads go to the slab file holding them (fast whole-chunk path) or,
    for reads that straddle slabs, through the (virtual) dataset itself."""

    def __init__(self, stack: ImageStack):
        self._stack = stack
        self._files: dict[str, h5py.File] = {}
        self._readers: dict[int, ChunkReader] = {}
        self._ds = None

    def _file(self, path: str) -> h5py.File:
        if path not in self._files:
            self._files[path] = h5py.File(path, "r")
        return self._files[path]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in self._files.values():
            f.close()

    def read(self, slices: Slices, out: np.ndarray | None = None) -> np.ndarray:
        """The pixels of ``slices``; ``out``: a buffer they may be decoded into (see
        :meth:`~pipeline.io.chunks.ChunkReader.read`; the result may be a view of it)."""
        p = slices[0]
        for i, (start, stop, path, dataset) in enumerate(self._stack.slabs):
            if start <= p.start and p.stop <= stop:
                if i not in self._readers:
                    self._readers[i] = ChunkReader(self._file(path)[dataset])
                return self._readers[i].read((slice(p.start - start, p.stop - start), *slices[1:]), out)
        if self._ds is None:
            self._ds = ChunkReader(self._file(self._stack.path)[self._stack.dataset])
        return self._ds.read(slices, out)


def storage_chunk_slices(shape: tuple[int, ...], chunks: tuple[int, ...], axis: int) -> list[slice]:
    """``range(0, n, c)`` slices along one axis, the last one shorter when ``c`` does not divide ``n``."""
    n, c = shape[axis], chunks[axis]
    return [slice(start, min(start + c, n)) for start in range(0, n, c)]


def is_detector_images(path: str | os.PathLike) -> bool:
    """True for the detector's own files: a DIALS ``.expt``, an NXmx master file, CBF files (one file,
    a ``#`` template, a glob pattern or a list file)."""
    name = str(path)
    if name.endswith((".expt", ".json")) or "#" in name or any(c in name for c in "*?["):
        return True
    if name.lower().endswith((".cbf", ".txt", ".lst", ".list")):
        return True
    from pipeline.io.nxmx import is_nxmx

    return Path(name).is_file() and is_nxmx(name)


def open_detector_images(path: str | os.PathLike, exposure_time: float | None = None) -> ImageStack:
    """The image stack of detector files (see :func:`is_detector_images`); a ``.expt`` names the files
    and gives phi and exposure times, else they come from the files."""
    from pipeline.io import cbf, nxmx

    name = str(path)
    scan = None
    if name.endswith((".expt", ".json")):
        from pipeline.io.rawimages import read_expt_scan

        scan = read_expt_scan(name)
        name = scan.images[0]
        if len(scan.images) == 1 and not name.lower().endswith(".cbf"):
            if not Path(name).is_file():
                raise InputError(f"{str(path)!r} names image file {name!r}, which does not exist")
            return nxmx.open_nxmx_stack(name, exposure_time, scan=scan)
        return cbf.open_cbf_stack(name, exposure_time, scan=scan)
    if name.lower().endswith((".h5", ".hdf5", ".nxs", ".nx5")) or (
        Path(name).is_file() and nxmx.is_nxmx(name)
    ):
        return nxmx.open_nxmx_stack(name, exposure_time)
    return cbf.open_cbf_stack(name, exposure_time)


def open_image_stack(path: str | os.PathLike, exposure_time: float | None = None) -> ImageStack:
    """Describe the image stack in ``path`` (data.nxs, or the detector's own files: an NXmx/Eiger
    master file, CBF files, or the DIALS ``.expt`` naming them).

    Checks that the axes and exposure times agree with the data's shape and that every source file of
    a virtual dataset exists (HDF5 would silently read a missing source as -1, i.e. as masked pixels).
    ``exposure_time`` replaces the exposure time of every frame (for files that recorded zeros).
    """
    path = Path(path)
    if path.is_dir() and (path / "zarr.json").exists():
        from pipeline.io.inputs import ZARR_CACHE_REMOVED

        raise InputError(f"{str(path)!r}: {ZARR_CACHE_REMOVED}")
    if is_detector_images(path):
        return open_detector_images(path, exposure_time)
    with open_nexus(path, "data file") as f:
        group = require(f, IMAGE_GROUP, "image series written by mdx2.import_data")
        signal = decode_str(group.attrs.get("signal", "data"))
        ds = require(group, signal, "image data")
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 3:
            raise InputError(f"{str(path)!r}: {ds.name} must be a 3-D dataset (frames, y, x)")
        shape = tuple(int(n) for n in ds.shape)
        phi = np.asarray(read_array(group, "phi"), dtype=np.float64)
        iy = np.asarray(read_array(group, "iy"), dtype=np.float64)
        ix = np.asarray(read_array(group, "ix"), dtype=np.float64)
        exposure = np.asarray(read_array(group, "exposure_times"), dtype=np.float64).reshape(-1)
        for name, axis, n in (("phi", phi, shape[0]), ("iy", iy, shape[1]), ("ix", ix, shape[2])):
            check_finite(axis, path, f"{IMAGE_GROUP}/{name}", what="frame angles" if name == "phi" else name)
            if axis.shape != (n,):
                raise InputError(
                    f"{str(path)!r}: {IMAGE_GROUP}/{name} has shape {axis.shape}, "
                    f"but the data has shape {shape} (expected {n} values)"
                )
        if exposure.shape != (shape[0],):
            raise InputError(
                f"{str(path)!r}: {IMAGE_GROUP}/exposure_times has {exposure.size} values, "
                f"but the data has {shape[0]} frames"
            )
        sources: tuple[str, ...] = ()
        if ds.is_virtual:
            sources, chunks, slabs = _check_virtual_sources(path, ds)
        else:
            chunks = ds.chunks
            slabs = ((0, shape[0], str(path.resolve()), ds.name),)
        dataset = ds.name
    if chunks is None:
        chunks = (1, shape[1], shape[2])
    if exposure_time is not None:
        exposure = np.full(shape[0], float(exposure_time))
    return ImageStack(
        path=str(path.resolve()),
        dataset=dataset,
        shape=shape,
        storage_chunks=tuple(int(c) for c in chunks),
        phi=phi,
        iy=iy,
        ix=ix,
        exposure_times=exposure,
        sources=sources,
        slabs=slabs,
    )


def _check_source_name(path: Path, name: str) -> None:
    """A virtual dataset's source must lie in the directory of ``path`` or below it, named relative to
    it (as mdx2.import_data writes ``datastore/...``): an absolute path or one that climbs out with
    ``..`` is refused, so a data file cannot make us read files elsewhere on the machine. The check is
    on the name as written; a symlink the user placed under the directory is followed."""
    parts = Path(name).parts
    if os.path.isabs(name) or ".." in parts:
        raise InputError(
            f"{str(path)!r}: virtual dataset source {name!r} is outside the directory of the data file "
            "(absolute or with '..'); refused: keep the sources (or symlinks to them) in that directory "
            "and name them relative to it"
        )


def _check_virtual_sources(path: Path, ds: h5py.Dataset):
    """Resolve each virtual source next to data.nxs; return the sources, the first one's chunks and
    the phi slabs that are stored whole in one source (for direct chunk reads)."""
    resolved = []
    slabs = []
    first_chunks = None
    for i, vds in enumerate(ds.virtual_sources()):
        name = vds.file_name
        _check_source_name(path, name)
        src = path if name == "." else path.parent / name
        if not src.exists():
            raise InputError(
                f"{str(path)!r}: virtual dataset source {name!r} not found (looked for {str(src)!r}); "
                "keep the datastore/ directory next to data.nxs"
            )
        try:
            with h5py.File(src, "r") as sf:
                if vds.dset_name not in sf:
                    raise InputError(f"virtual dataset source {str(src)!r} has no dataset {vds.dset_name!r}")
                sds = require(sf, vds.dset_name, "image data")
                if vds.src_space.shape and sds.shape != vds.src_space.shape:
                    raise InputError(
                        f"virtual dataset source {str(src)!r}: {vds.dset_name} has shape {sds.shape}, "
                        f"but {str(path)!r} maps {vds.src_space.shape} from it"
                    )
                if i == 0:
                    first_chunks = sds.chunks
                (p0, y0, x0), (p1, y1, x1) = vds.vspace.get_select_bounds()
                whole = (p1 - p0 + 1, y1 - y0 + 1, x1 - x0 + 1) == sds.shape == (p1 - p0 + 1, *ds.shape[1:])
                if whole and vds.src_space.get_select_type() == h5py.h5s.SEL_ALL:
                    slabs.append((int(p0), int(p1) + 1, str(src.resolve()), vds.dset_name))
        except OSError as exc:
            raise InputError(
                f"virtual dataset source {str(src)!r} is not a readable HDF5 file (truncated?): {exc}"
            ) from exc
        resolved.append(str(src.resolve()))
    return tuple(resolved), first_chunks, tuple(slabs)


def reads_release_the_gil(data: str | os.PathLike, masks=()) -> bool:
    """True when every read of ``data`` and ``masks`` takes the fast path of
    :class:`~pipeline.io.chunks.ChunkReader` (raw chunks inflated with the GIL released), or are
    detector files read with the GIL released: then threads of one process read in parallel. Other
    HDF5 filters decode inside h5py, which lets one thread at a time in. Any problem gives False (the
    run reports it properly)."""
    try:
        stack = open_image_stack(data)
        if stack.format == "nxmx":
            from pipeline.io.nxmx import fast_reads

            if not fast_reads(stack):
                return False
            paths = []
        elif stack.format == "cbf":
            paths = []
        else:
            if not stack.slabs:
                return False
            paths = [(path, dataset) for _, _, path, dataset in stack.slabs]
        paths += [(str(m), MASK_DATASET) for m in masks]
        for path, dataset in paths:
            with h5py.File(path, "r") as f:
                if not ChunkReader(f[dataset]).fast:
                    return False
        return True
    except Exception:  # only a hint: the run itself reports bad input
        return False


def open_masks(paths: list[str | os.PathLike] | tuple, shape: tuple[int, int, int]) -> MaskStack | None:
    """Check each mask file (``/entry/mask/signal``, bool, True = exclude) against the data's shape."""
    if not paths:
        return None
    checked = []
    for p in paths:
        with open_nexus(p, "mask file") as f:
            ds = require(f, MASK_DATASET, "mask written by mdx2.mask_peaks or diffuse find-hot-pixels")
            if tuple(ds.shape) != tuple(shape):
                raise InputError(
                    f"mask file {str(p)!r}: {MASK_DATASET} has shape {tuple(ds.shape)}, "
                    f"but the data has shape {tuple(shape)}"
                )
            check_mask_dtype(ds.dtype, p, MASK_DATASET)
        checked.append(str(Path(p).resolve()))
    return MaskStack(tuple(checked), tuple(shape))
