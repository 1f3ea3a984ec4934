"""The one way outputs are written: under a temporary sibling name, renamed into place when complete.

A crash, an error or a killed process never leaves a file under its final name that could be taken
for a complete output: the temporary (``.NAME.tmp-PID-XXXX``) is removed on error, and a killed
process leaves only such a hidden name. Every writer of the package (NeXus tables and grids, parquet
parts and directories, run logs, reports, work-directory records) goes through this module.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.errors import DiskFullError, InputError

__all__ = [
    "as_disk_full",
    "atomic_h5",
    "atomic_path",
    "check_output_path",
    "close_h5_discarding",
    "discard",
    "disk_full",
    "free_bytes",
    "prepare_outdir",
    "publish",
    "save_figure_atomic",
    "save_npy_atomic",
    "temp_sibling",
    "write_json_atomic",
    "write_text_atomic",
]


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def check_output_path(path: str | os.PathLike, overwrite: bool, *, is_dir: bool = False) -> Path:
    """The rule for an output file (or, with ``is_dir``, an output directory written whole, such as a
    parquet dataset): its parent directory must exist (it is not created), and an
    existing output is refused unless ``overwrite``; a directory where a file is expected (or the
    reverse) is refused even with ``overwrite``. Call it before any work starts."""
    path = Path(path)
    parent = _parent(path)
    if not parent.is_dir():
        if parent.exists():
            raise InputError(f"output {str(path)!r}: {str(parent)!r} is not a directory")
        raise InputError(
            f"output directory {str(parent)!r} of {str(path)!r} does not exist (create it first; "
            "only --outdir directories are created)"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output directory {str(parent)!r} of {str(path)!r} is not writable")
    if path.exists() or path.is_symlink():
        if path.is_dir() and not is_dir:
            raise InputError(f"output {str(path)!r} is a directory; expected a file name")
        if is_dir and not path.is_dir():
            raise InputError(f"output {str(path)!r} is a file; expected a directory (written whole)")
        if not overwrite:
            raise InputError(f"output {str(path)!r} already exists; pass --overwrite to replace it")
    return path


def prepare_outdir(path: str | os.PathLike) -> Path:
    """The rule for ``--outdir``: created (with its parents) if missing; an existing file is refused.
    Returns the directory; the files the command writes inside follow :func:`check_output_path`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output directory {str(path)!r} is a file; expected a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output directory {str(path)!r}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"output directory {str(path)!r} is not writable")
    return path


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# how libraries report ENOSPC when they drop the errno: numpy's short write, HDF5 and Arrow messages
_FULL_TEXT = re.compile(
    r"No space left on device|Disk quota exceeded|\d+ requested and \d+ written|errno = 28\b"
)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (or of its nearest
    existing parent); None when it cannot be told."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def disk_full(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised from) says a write ran out of space."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError):
            return True
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if isinstance(exc, OSError | RuntimeError) and _FULL_TEXT.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def as_disk_full(exc: BaseException, path: str | os.PathLike) -> DiskFullError | None:
    """A :class:`DiskFullError` for ``path`` if ``exc`` is a write that ran out of space, else None."""
    if isinstance(exc, DiskFullError):
        return exc
    if not disk_full(exc):
        return None
    return DiskFullError(str(path), free_bytes(path))


def temp_sibling(path: str | os.PathLike, *, is_dir: bool = False, suffix: str = "") -> Path:
    """Create (empty) and return a new hidden temporary file or directory next to ``path``."""
    path = Path(path)
    prefix = f".{path.name}.tmp-{os.getpid()}-"
    if is_dir:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=_parent(path)))
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=_parent(path))
    os.close(fd)
    return Path(name)


def discard(tmp: Path) -> None:
    """Remove a temporary made by :func:`temp_sibling` (file or directory); missing is fine."""
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def publish(tmp: Path, path: str | os.PathLike) -> Path:
    """Rename a finished temporary to its final name (replacing what was there); files get mode 644.

    A file already there is removed first, and the temporary then renamed to a free name: ext4 writes
    out the whole new file before a rename *over* an existing one returns (``auto_da_alloc``, its
    guard for programs that do not fsync: 0.1 s for a 200 MB table), a rename to a free name does
    not. Nothing under ``path`` is ever incomplete; a crash between the two steps leaves no file
    there (the new one is still under its temporary name)."""
    path = Path(path)
    if tmp.is_dir():
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    else:
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):  # else the rename replaces it, as always
                path.unlink()
        os.replace(tmp, path)
        os.chmod(path, 0o644)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it to ``path`` only if the block succeeds.
    A write that runs out of space is raised as :class:`~pipeline.errors.DiskFullError` naming ``path``."""
    try:
        tmp = temp_sibling(path, is_dir=is_dir, suffix=suffix)
    except OSError as exc:
        if (full := as_disk_full(exc, path)) is not None:
            raise full from exc
        raise
    try:
        yield tmp
    except BaseException as exc:
        discard(tmp)
        full = as_disk_full(exc, path)
        if full is not None and (full is not exc or full.path.startswith(str(tmp))):
            # name the output, not the temporary (or a file inside a temporary directory)
            raise DiskFullError(str(path), free_bytes(path)) from exc
        raise
    publish(tmp, path)


def close_h5_discarding(f) -> None:
    """Close an h5py ``File`` whose content is thrown away, so that the close cannot fail.

    HDF5 writes metadata and cached chunks on close; when that write fails (a full disk), h5py is left
    with objects it cannot free and the process crashes later (a segfault, exit 139). So HDF5's file
    descriptor is first pointed at an anonymous in-memory file: what it writes on close goes there.
    """
    if f is None or not f.id.valid:
        return
    with contextlib.suppress(AttributeError, OSError, RuntimeError, ValueError):
        fd = f.id.get_vfd_handle()
        sink = os.memfd_create("discarded-hdf5")
        try:
            os.dup2(sink, fd)
        finally:
            os.close(sink)
    with contextlib.suppress(OSError, RuntimeError):
        f.close()


def close_h5_keeping(f, path: str | os.PathLike) -> None:
    """Flush and close an h5py ``File`` that is kept; a full disk is a :class:`DiskFullError` naming
    ``path``. A flush that fails leaves the file closable (a close that fails does not): then it is
    closed as discarded and the error raised."""
    try:
        f.flush()
    except BaseException as exc:
        close_h5_discarding(f)
        raise (as_disk_full(exc, path) or exc) from exc
    f.close()


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, *, in_memory: bool = True, **file_options) -> Iterator:
    """An ``h5py.File`` open for writing, renamed to ``path`` when the block succeeds; on any error
    nothing is left (a full disk is a :class:`DiskFullError` naming ``path``).

    ``in_memory`` (for files that fit in memory: geometry, peaks, masks, scales): HDF5 writes into a
    buffer, which is then written to the temporary sibling with plain file writes. HDF5 writes some
    data only when an object is freed or the file closed; on a full disk such a write fails where
    h5py cannot raise (``__dealloc__``), the file looks complete and the process may crash later, so
    large writes are better done where a failure is an exception. Otherwise (large files: image
    stacks) the file is written in place and closed safely on error (:func:`close_h5_discarding`).
    """
    import h5py

    with atomic_path(path) as tmp:
        if in_memory:
            buffer = io.BytesIO()
            with h5py.File(buffer, "w", **file_options) as f:
                yield f
            with open(tmp, "wb") as out:  # a full disk is an OSError here
                out.write(buffer.getbuffer())
            return
        f = h5py.File(tmp, "w", **file_options)
        try:
            yield f
        except BaseException:
            close_h5_discarding(f)
            raise
        close_h5_keeping(f, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj, **dump_options) -> Path:
    return write_text_atomic(path, json.dumps(obj, **dump_options))


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)
    return Path(path)


def save_figure_atomic(fig, path: str | os.PathLike, **savefig_options) -> Path:
    """``fig.savefig`` through a temporary sibling (the format is taken from ``path``'s suffix)."""
    path = Path(path)
    options = {"format": path.suffix.lstrip(".") or "png", **savefig_options}
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, **options)
    return path
