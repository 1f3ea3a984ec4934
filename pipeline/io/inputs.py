"""One validation layer for the paths a command is given, and for the arrays read from input files.

:data:`KINDS` names every kind of path a command takes (``geometry``, ``data``, ``mask``, ``table``,
``outfile``, ``outdir`` ...); :func:`check_path` checks one path against its kind before any work
starts: an input exists, is a file or a directory as expected, is readable, and is the right kind of
file (an HDF5 file with the expected ``/entry/...`` group, a parquet dataset, a JSON
experiment list); an output follows :func:`pipeline.io.atomic.check_output_path` (parent directory
must exist, existing outputs refused without ``--overwrite``) or :func:`~pipeline.io.atomic.prepare_outdir`
(``--outdir``: created). Every failure is an :class:`~pipeline.errors.InputError` naming the path.

:func:`check_finite` and :func:`check_mask_dtype` check arrays read from files for values that would
break the computation, naming the file, the dataset and the first bad index.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.io.atomic import check_output_path

__all__ = ["KINDS", "PathKind", "check_finite", "check_input", "check_mask_dtype", "check_path"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZARR_CACHE_REMOVED = (
    "zarr image caches ('diffuse convert') are no longer read: integrating from them was not faster than "
    "from data.nxs (docs/SPEED.md); integrate data.nxs and its mask instead"
)


@dataclass(frozen=True)
class PathKind:
    """What a path argument must be.

    ``role``: ``input``, ``output`` (a file, or with ``is_dir`` a directory written whole),
    ``outdir`` (a directory that is created) or ``workdir`` (scratch directory, created by the run).
    ``is_dir`` for inputs: False = a file, True = a directory, None = either (``dir_kind`` says which
    directory: ``parquet``). ``groups``: HDF5 groups an input file must hold (all of them,
    or one with ``any_group``).
    """

    name: str
    role: str = "input"
    is_dir: bool | None = False
    groups: tuple[str, ...] = ()
    any_group: bool = False  # True: one of ``groups`` is enough (scales files hold any of four models)
    dir_kind: str = ""
    suffixes: tuple[str, ...] = ()
    what: str = ""

    @property
    def is_output(self) -> bool:
        return self.role != "input"


def _kinds(*kinds: PathKind) -> dict[str, PathKind]:
    return {k.name: k for k in kinds}


KINDS: dict[str, PathKind] = _kinds(
    PathKind("geometry", groups=("/entry/miller_index",), what="geometry file (mdx2.import_geometry)"),
    PathKind(
        "geometry-corrections",
        groups=("/entry/corrections", "/entry/crystal", "/entry/symmetry"),
        what="geometry file (mdx2.import_geometry)",
    ),
    PathKind("geometry-symmetry", groups=("/entry/symmetry",), what="geometry file (mdx2.import_geometry)"),
    PathKind(
        "geometry-all",
        groups=("/entry/miller_index", "/entry/corrections", "/entry/crystal", "/entry/symmetry"),
        what="geometry file (mdx2.import_geometry)",
    ),
    PathKind("data", groups=("/entry/image_series",), what="image stack (data.nxs from mdx2.import_data)"),
    PathKind("data-file", groups=("/entry/image_series",), what="image stack (data.nxs, mdx2.import_data)"),
    PathKind(
        "images",
        is_dir=None,
        what="image stack (data.nxs) or detector images (NXmx/Eiger master file, CBF "
        "template/list, or the DIALS .expt naming them)",
    ),
    PathKind(
        "raw-images",
        what="detector images (NXmx/Eiger master file, CBF template/list, or the DIALS .expt naming them)",
    ),
    PathKind("mask", groups=("/entry/mask",), what="mask file (mdx2 layout)"),
    PathKind(
        "peaks",
        groups=("/entry/peak_model", "/entry/peaks"),
        what="peaks file (mdx2.find_peaks or diffuse find-peaks)",
    ),
    PathKind(
        "background",
        groups=("/entry/binned_image_series",),
        what="binned background (mdx2.bin_image_series)",
    ),
    PathKind(
        "scales",
        groups=(
            "/entry/scaling_model",
            "/entry/absorption_model",
            "/entry/detector_model",
            "/entry/offset_model",
        ),
        any_group=True,
        what="scales file (mdx2.scale)",
    ),
    PathKind(
        "table",
        is_dir=None,
        groups=("/entry/hkl_table",),
        dir_kind="parquet",
        what="hkl table (NeXus file or parquet dataset)",
    ),
    PathKind("expt", suffixes=(".expt", ".json"), what="DIALS experiment list (JSON)"),
    # a scales file holds any of /entry/{scaling,absorption,detector,offset}_model: io.scales checks which
    PathKind("file", what="input file"),
    PathKind("outfile", role="output"),
    PathKind("outdir-whole", role="output", is_dir=True),  # parquet dataset
    PathKind("outdir", role="outdir", is_dir=True),
    PathKind("workdir", role="workdir", is_dir=True),
)


def _readable(path: Path, st: os.stat_result) -> bool:
    """Readable by this process, and by someone: a file with no read permission bit at all (chmod 000)
    counts as unreadable even for root, so the rule does not depend on who runs it."""
    want = os.R_OK | (os.X_OK if stat.S_ISDIR(st.st_mode) else 0)
    return os.access(path, want) and bool(st.st_mode & 0o444)


def check_input(path: str | os.PathLike, kind: PathKind | str, option: str = "") -> Path:
    """Check input ``path`` against ``kind`` (see :class:`PathKind`); ``option`` names the argument."""
    kind = KINDS[kind] if isinstance(kind, str) else kind
    path = Path(path)
    label = f"{option} " if option else ""
    what = kind.what or kind.name
    if kind.name in ("images", "raw-images"):
        return _check_images(path, kind, label, what)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{label}{str(path)!r} does not exist (expected: {what})") from None
    except OSError as exc:
        raise InputError(f"{label}{str(path)!r} cannot be read: {exc.strerror}") from None
    is_dir = stat.S_ISDIR(st.st_mode)
    if is_dir and kind.name == "data" and (path / "zarr.json").is_file():
        raise InputError(f"{label}{str(path)!r}: {ZARR_CACHE_REMOVED}")
    if is_dir and kind.is_dir is False:
        raise InputError(f"{label}{str(path)!r} is a directory, expected a file ({what})")
    if not is_dir and kind.is_dir is True:
        raise InputError(f"{label}{str(path)!r} is a file, expected a directory ({what})")
    if not _readable(path, st):
        mode = stat.filemode(st.st_mode)
        raise InputError(f"{label}{str(path)!r} is not readable (permissions {mode})")
    if is_dir:
        _check_directory(path, kind, label, what)
    elif kind.groups:
        _check_hdf5(path, kind, label, what)
    elif kind.name == "expt":
        _check_json(path, label, what)
    return path


def _check_directory(path: Path, kind: PathKind, label: str, what: str) -> None:
    if kind.dir_kind == "parquet":
        if not any(path.glob("*.parquet")) and not any(path.glob("*/*.parquet")):
            raise InputError(
                f"{label}{str(path)!r} is a directory without .parquet files; expected a parquet "
                f"dataset or a NeXus file with {kind.groups[0]}"
            )


def _check_hdf5(path: Path, kind: PathKind, label: str, what: str) -> None:
    import h5py

    expected = (" or " if kind.any_group else ", ").join(kind.groups)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise InputError(f"{label}{str(path)!r} cannot be read: {exc.strerror}") from None
    if head != HDF5_SIGNATURE and not h5py.is_hdf5(path):
        raise InputError(
            f"{label}{str(path)!r} is not a readable HDF5/NeXus file (another format?); "
            f"expected: {what} with {expected}"
        )
    try:
        with h5py.File(path, "r") as f:
            missing = [g for g in kind.groups if g not in f]
            if kind.any_group and len(missing) < len(kind.groups):
                missing = []
    except (OSError, KeyError, RuntimeError) as exc:
        raise InputError(
            f"{label}{str(path)!r} is not a readable HDF5/NeXus file (truncated?): {exc}"
        ) from None
    if missing and kind.any_group:
        raise InputError(f"{label}{str(path)!r} has none of {', '.join(missing)}; expected: {what}")
    if missing:
        raise InputError(
            f"{label}{str(path)!r} has no {', '.join(missing)}; expected: {what} with {expected}"
        )


def _check_images(path: Path, kind: PathKind, label: str, what: str) -> Path:
    """Detector images (a CBF template or glob needs one matching file; a ``.expt`` valid JSON; an NXmx
    master ``/entry/data``), or for ``images`` also an mdx2 image stack."""
    name = str(path)
    if "#" in name or any(c in name for c in "*?["):
        from pipeline.io.cbf import expand_images

        try:
            expand_images(name)
        except InputError as exc:
            raise InputError(f"{label}{exc} (expected: {what})") from None
        return path
    if path.suffix in (".expt", ".json"):
        return check_input(path, "expt", label.strip())
    if path.suffix.lower() in (".cbf", ".txt", ".lst", ".list"):
        return check_input(path, "file", label.strip())
    if path.is_file():
        import h5py

        try:
            with h5py.File(path, "r") as f:
                nxmx = "/entry/data" in f and "/entry/image_series" not in f
        except OSError:
            nxmx = False
        if nxmx:
            return path
    if kind.name == "raw-images":
        check_input(path, PathKind("raw", groups=("/entry/data",), what=what), label.strip())
        return path
    return check_input(path, "data", label.strip())


def _check_json(path: Path, label: str, what: str) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(
            f"{label}{str(path)!r} is not valid JSON (truncated?); expected: {what} ({exc})"
        ) from None
    if not isinstance(doc, dict) or "experiment" not in doc:
        raise InputError(f"{label}{str(path)!r} has no 'experiment' list; expected: {what}")


def check_path(
    path: str | os.PathLike, kind: PathKind | str, *, overwrite: bool = False, option: str = ""
) -> Path:
    """Check ``path`` against ``kind``: an input with :func:`check_input`, an output with the output
    rule (:func:`~pipeline.io.atomic.check_output_path`; ``outdir``: must not be a file; it is created
    by :func:`~pipeline.io.atomic.prepare_outdir` once every path passed)."""
    kind = KINDS[kind] if isinstance(kind, str) else kind
    if kind.role == "input":
        return check_input(path, kind, option)
    path = Path(path)
    if kind.role == "output":
        try:
            return check_output_path(path, overwrite, is_dir=kind.is_dir is True)
        except InputError as exc:
            raise InputError(f"{option} {exc}" if option else str(exc)) from None
    label = f"{option} " if option else ""
    if path.exists() and not path.is_dir():
        raise InputError(f"{label}{str(path)!r} is a file; expected a directory")
    if kind.role == "workdir" and not path.exists():
        try:
            check_output_path(path, True, is_dir=True)  # its parent must exist
        except InputError as exc:
            raise InputError(f"{label}{exc}") from None
    ancestor = next((p for p in path.absolute().parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise InputError(f"{label}{str(path)!r} cannot be created: {str(ancestor)!r} is a file")
    return path


def check_finite(array, file: str | os.PathLike, dataset: str, *, what: str = "values") -> None:
    """Refuse NaN or inf in ``array`` read from ``file``/``dataset``, naming the first bad index."""
    a = np.asarray(array)
    if a.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(a)
    if bad.any():
        first = np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape) if a.ndim else ()
        index = ", ".join(str(int(i)) for i in first)
        raise InputError(
            f"{str(file)!r}: {dataset} holds {int(bad.sum())} NaN or inf {what} "
            f"(first at index [{index}]: {a[first]}); expected finite numbers"
        )


def check_mask_dtype(dtype, file: str | os.PathLike, dataset: str) -> None:
    """A mask must be bool (or integer 0/1, as some writers store it); floats and strings are refused."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "bui":
        raise InputError(f"mask file {str(file)!r}: {dataset} has dtype {dtype}, expected bool")
