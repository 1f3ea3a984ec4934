"""Low-level access to mdx2's NeXus files with h5py: opening with clear errors, mdx2's groups.

mdx2 writes HDF5 files through nexusformat: a root group with attribute ``mdx2_version``, one
``/entry`` (NXentry), and below it one group per mdx2 object carrying the attributes ``mdx2_module``
and ``mdx2_class``. We read and write that layout directly with h5py.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4/blosc filters so every reader can decode Eiger data)
import numpy as np

from pipeline.errors import InputError

__all__ = [
    "MDX2_FORMAT_VERSION",
    "create_nxdata",
    "decode_str",
    "open_nexus",
    "read_array",
    "require",
    "write_mdx2_root_attrs",
]

#: The mdx2 file-format version our files declare in ``mdx2_version`` (mdx2 warns on any other value).
MDX2_FORMAT_VERSION = "1.0.5"


def open_nexus(path: str | os.PathLike, what: str = "NeXus file") -> h5py.File:
    """Open ``path`` read-only, raising :class:`InputError` that names the file when it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise InputError(f"{what} {str(path)!r} is a directory, expected an HDF5/NeXus file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(
            f"{what} {str(path)!r} is not a readable HDF5/NeXus file (truncated or another format?): {exc}"
        ) from exc


def require(f: h5py.File | h5py.Group, name: str, what: str = "") -> h5py.Group | h5py.Dataset:
    """Return ``f[name]``; if absent, raise an :class:`InputError` naming the file and the HDF5 path."""
    try:
        obj = f[name]
    except KeyError:
        obj = None
    except OSError as exc:  # a damaged file can fail while following links
        raise InputError(f"{f.file.filename!r}: cannot read {name!r}: {exc}") from exc
    if obj is None:
        hint = f" ({what})" if what else ""
        raise InputError(f"{f.file.filename!r} has no {name!r}{hint}; is it the right kind of mdx2 file?")
    return obj


def read_array(f: h5py.File | h5py.Group, name: str, what: str = "") -> np.ndarray:
    """Read a whole dataset into memory, with an :class:`InputError` naming the file when it is damaged."""
    ds = require(f, name, what)
    if not isinstance(ds, h5py.Dataset):
        raise InputError(f"{f.file.filename!r}: {name!r} is a group, expected a dataset")
    try:
        return ds[()]
    except OSError as exc:
        raise InputError(
            f"{f.file.filename!r}: cannot read dataset {name!r} (truncated file?): {exc}"
        ) from exc


def decode_str(value) -> str:
    """HDF5 string scalars arrive as bytes, numpy bytes or str depending on how they were written."""
    if isinstance(value, np.ndarray):
        value = value[()]
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8")
    return str(value)


def write_mdx2_root_attrs(f: h5py.File) -> h5py.Group:
    """Give a new file mdx2's root layout; returns the ``/entry`` group."""
    from pipeline._version import __version__

    f.attrs["mdx2_version"] = MDX2_FORMAT_VERSION
    f.attrs["creator"] = "diffuse-pipeline"
    f.attrs["creator_version"] = __version__
    f.attrs["NX_class"] = "NXroot"
    entry = f.require_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    return entry


def create_nxdata(
    parent: h5py.Group,
    name: str,
    *,
    axes: list[str] | tuple[str, ...],
    signal: str = "signal",
    mdx2_module: str | None = "mdx2.geometry",
    mdx2_class: str | None = "GridData",
) -> h5py.Group:
    """Create an NXdata group in mdx2's layout (attributes only; the caller writes the datasets)."""
    group = parent.create_group(name)
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = signal
    group.attrs["axes"] = np.array(list(axes), dtype=h5py.string_dtype())
    if mdx2_module is not None:
        group.attrs["mdx2_module"] = mdx2_module
    if mdx2_class is not None:
        group.attrs["mdx2_class"] = mdx2_class
    return group
