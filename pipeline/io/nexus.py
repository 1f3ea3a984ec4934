"""Low-level access to mdx2's NeXus files with h5py: opening with clear errors, mdx2's groups.

mdx2 writes HDF5 files through nexusformat: a root group with attribute ``mdx2_version``, one
``/entry`` (NXentry), and below it one group per mdx2 object carrying the attributes ``mdx2_module``
and ``mdx2_class``. We read and write that layout directly with h5py.

Files of mdx2's layout are self-contained, so the readers here refuse what would make HDF5 read
another file behind the caller's back (see SECURITY.md): an external link on the way to an object,
an object that lives in another file, a dataset with external raw storage (bytes of any file, e.g.
``/etc/passwd``, read as numbers) and, for the small arrays of :func:`read_array`, a virtual dataset.
Readers that legitimately follow links (an NXmx master file's data files) pass
``external_links=True``. :func:`read_array` also refuses a dataset whose declared size exceeds what
this machine could hold, before allocating anything (a hostile file can declare 10^12 elements).
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
    "check_self_contained",
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


def _external_link_on_path(f: h5py.File | h5py.Group, name: str) -> str | None:
    """The first external link met on the way from ``f`` to ``name`` (without following it)."""
    node = f.file if name.startswith("/") else f
    parts = [p for p in name.split("/") if p]
    for i, part in enumerate(parts):
        try:
            link = node.get(part, getlink=True)
        except (OSError, KeyError, RuntimeError):
            return None
        if isinstance(link, h5py.ExternalLink):
            return f"{node.name.rstrip('/')}/{part} -> {link.filename}:{link.path}"
        if link is None or i == len(parts) - 1:
            return None
        child = node.get(part)
        if not isinstance(child, h5py.Group):
            return None
        node = child
    return None


def check_self_contained(f: h5py.File | h5py.Group, name: str, obj) -> None:
    """Refuse ``obj`` (reached as ``f[name]``) if it lives in another file or keeps its raw data in
    external files (see the module docstring)."""
    filename = f.file.filename
    if obj.file.filename != filename:
        raise InputError(
            f"{filename!r}: {name!r} is a link into another file ({obj.file.filename!r}); "
            "refused: mdx2 files are self-contained"
        )
    if isinstance(obj, h5py.Dataset) and obj.external:
        files = ", ".join(repr(e[0]) for e in obj.external)
        raise InputError(
            f"{filename!r}: dataset {name!r} keeps its data in external files ({files}); "
            "refused: mdx2 files are self-contained"
        )


def require(
    f: h5py.File | h5py.Group, name: str, what: str = "", *, external_links: bool = False
) -> h5py.Group | h5py.Dataset:
    """Return ``f[name]``; if absent, raise an :class:`InputError` naming the file and the HDF5 path.
    Unless ``external_links``, links into other files and external raw storage are refused."""
    if not external_links and (link := _external_link_on_path(f, name)) is not None:
        raise InputError(
            f"{f.file.filename!r}: {name!r} goes through an external link ({link}); "
            "refused: mdx2 files are self-contained"
        )
    try:
        obj = f[name]
    except KeyError:
        obj = None
    except OSError as exc:  # a damaged file can fail while following links
        raise InputError(f"{f.file.filename!r}: cannot read {name!r}: {exc}") from exc
    if obj is None:
        hint = f" ({what})" if what else ""
        raise InputError(f"{f.file.filename!r} has no {name!r}{hint}; is it the right kind of mdx2 file?")
    if not external_links:
        check_self_contained(f, name, obj)
    return obj


def max_read_bytes() -> int:
    """The most :func:`read_array` reads into memory at once: half of this machine's RAM."""
    import psutil

    return psutil.virtual_memory().total // 2


def read_array(
    f: h5py.File | h5py.Group, name: str, what: str = "", *, external_links: bool = False
) -> np.ndarray:
    """Read a whole dataset into memory, with an :class:`InputError` naming the file when it is damaged,
    declares more data than this machine could hold, or (unless ``external_links``) is virtual."""
    ds = require(f, name, what, external_links=external_links)
    if not isinstance(ds, h5py.Dataset):
        raise InputError(f"{f.file.filename!r}: {name!r} is a group, expected a dataset")
    if ds.is_virtual and not external_links:
        raise InputError(
            f"{f.file.filename!r}: {name!r} is a virtual dataset (data from other files); "
            "refused: mdx2 files are self-contained"
        )
    nbytes = int(np.prod(ds.shape, dtype=object)) * ds.dtype.itemsize if ds.shape is not None else 0
    if nbytes > max_read_bytes():
        raise InputError(
            f"{f.file.filename!r}: dataset {ds.name} declares shape {ds.shape} ({nbytes / 1e9:.3g} GB), "
            f"more than this machine can hold; refused before reading (damaged or hostile file?)"
        )
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
