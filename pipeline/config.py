"""Parameters of each step: frozen dataclasses validated once, at the boundary.

Defaults live in ``pipeline/pipeline.yaml`` (registered with :mod:`dask.config` under ``diffuse`` once
dask is imported);
command-line flags and keyword arguments override them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import yaml

from pipeline.errors import ConfigError

__all__ = [
    "ClusterSpec",
    "CorrectParams",
    "FindPeaksParams",
    "IntegrateParams",
    "MapParams",
    "MaskPeaksParams",
    "MergeParams",
    "ReintegrateParams",
    "ScaleParams",
    "Tuning",
    "get_default",
    "non_default_items",
]

_DEFAULTS_FILE = Path(__file__).with_name("pipeline.yaml")
with open(_DEFAULTS_FILE) as _f:
    _DEFAULTS = yaml.safe_load(_f)


_REGISTERED = False


def _dask_config():
    """:mod:`dask.config` with the package defaults registered (again, if a ``dask.config.set`` block
    that added the first ``diffuse`` key has removed them on leaving)."""
    global _REGISTERED
    import dask.config

    if not _REGISTERED or "diffuse" not in dask.config.config:
        dask.config.update_defaults(_DEFAULTS)
        _REGISTERED = True
    return dask.config


if "dask" in sys.modules:  # registered now, as before ``import dask`` was left to when it is needed
    _dask_config()


@functools.cache
def _config_files_mention_diffuse() -> bool:
    """Whether a file of the user's dask config (where dask looks for it) mentions ``diffuse``."""
    import site

    dirs = [os.getenv("DASK_ROOT_CONFIG", "/etc/dask"), os.path.join(sys.prefix, "etc", "dask")]
    dirs += [os.path.join(prefix, "etc", "dask") for prefix in site.PREFIXES]
    dirs.append(os.path.join(os.path.expanduser("~"), ".config", "dask"))
    for d in dirs:
        try:
            names = os.listdir(d) if os.path.isdir(d) else [d] if os.path.isfile(d) else []
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name) if os.path.isdir(d) else name
            if path.endswith((".yaml", ".yml", ".json")):
                try:
                    with open(path, errors="replace") as f:
                        if "diffuse" in f.read():
                            return True
                except OSError:
                    continue
    return False


_OVERRIDES: list[dict] = []  # the ``diffuse.*`` keys of the cluster config files in force, innermost last


@contextlib.contextmanager
def config_overrides(settings: dict) -> Iterator[None]:
    """Within the block, :func:`get_default` gives the ``diffuse.*`` keys of ``settings`` (dotted names,
    as a cluster config file's) before anything else, as ``dask.config.set(settings)`` would, without
    importing dask (a cluster of threads in this process needs no dask)."""
    own = {k[len("diffuse.") :].replace("_", "-"): v for k, v in settings.items() if k.startswith("diffuse.")}
    _OVERRIDES.append(own)
    try:
        yield
    finally:
        _OVERRIDES.remove(own)


def get_default(key: str):
    """A package default, e.g. ``get_default("integrate.max-spread")`` (after user config overrides
    and the cluster config file in force, :func:`config_overrides`).

    Read from :mod:`dask.config` when dask is imported or the user's dask config may override it (a
    ``DASK_*`` environment variable, a config file mentioning ``diffuse``); otherwise from
    ``pipeline.yaml`` itself, so that a step run in this process (``correct``) does not pay for
    ``import dask`` (~0.1 s)."""
    for own in reversed(_OVERRIDES):
        if key.replace("_", "-") in own:
            return own[key.replace("_", "-")]
    if (
        "dask" in sys.modules
        or any(k.startswith("DASK_") for k in os.environ)
        or _config_files_mention_diffuse()
    ):
        config = _dask_config()
        value = config.get(f"diffuse.{key}", _DEFAULTS)
        if value is _DEFAULTS:  # a set block's own "diffuse" keys since: the defaults go under them
            config.update_defaults(_DEFAULTS)
            value = config.get(f"diffuse.{key}")
        return value
    value = _DEFAULTS["diffuse"]
    for part in key.split("."):
        value = value[part if part in value else part.replace("_", "-")]
    return value


def _as_path(value, name: str) -> str:
    """An absolute path: tasks may run in other directories (a remote scheduler, SLURM jobs)."""
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"{name} must be a path, got {value!r}")
    return os.path.abspath(os.fspath(value))


def _as_optional_path(value, name: str) -> str | None:
    return None if value is None else _as_path(value, name)


def _subdivide(value) -> tuple[int, int, int]:
    try:
        values = tuple(value)
    except TypeError:
        values = (value,) * 3
    if len(values) != 3:
        raise ConfigError(f"subdivide must have 3 values (h, k, l), got {value!r}")
    out = []
    for axis, v in zip("hkl", values, strict=True):
        if isinstance(v, bool) or int(v) != v:
            raise ConfigError(f"subdivide along {axis} must be a whole number, got {v!r}")
        if int(v) <= 0:
            raise ConfigError(f"subdivide along {axis} must be >= 1, got {v!r}")
        if int(v) > 1000:
            raise ConfigError(
                f"subdivide along {axis} must be <= 1000, got {v!r} (each voxel index must fit a 21-bit "
                f"field of the sort key; {int(v)}^3 voxels per cell, "
                f"{8 * int(v) ** 3 / 1e9:.3g} GB at 8 bytes per voxel of one cell, far finer than pixels)"
            )
        out.append(int(v))
    return tuple(out)


def chunks_option(value, what: str = "chunks") -> tuple[int, int, int] | None:
    """``--chunks F Y X``: three whole numbers, each >= 1 or -1 (the default for that axis); None."""
    if value is None:
        return None
    try:
        values = tuple(value)
    except TypeError:
        raise ConfigError(f"{what} must be 3 numbers (frames, y, x), got {value!r}") from None
    if len(values) != 3:
        raise ConfigError(f"{what} must be 3 numbers (frames, y, x), got {value!r}")
    out = []
    for axis, v in zip(("frames", "y", "x"), values, strict=True):
        try:
            whole = not isinstance(v, bool) and int(v) == v
        except (TypeError, ValueError):
            whole = False
        if not whole or not (int(v) >= 1 or int(v) == -1):
            raise ConfigError(
                f"{what} along {axis} must be a whole number >= 1 (or -1 for the default), got {v!r}"
            )
        out.append(int(v))
    return tuple(out)


def _positive(key: str, kind=float, allow_zero: bool = False):
    value = get_default(key)
    try:
        number = kind(float(value))
    except (TypeError, ValueError):
        raise ConfigError(f"diffuse.{key} must be a number, got {value!r}") from None
    if not (number >= 0 if allow_zero else number > 0):
        raise ConfigError(f"diffuse.{key} must be {'>=' if allow_zero else '>'} 0, got {value!r}")
    return number


@dataclass(frozen=True)
class Tuning:
    """How the work is cut up (not what is computed): ``pipeline.yaml``'s ``integrate``, ``reduce`` and
    ``correct`` sizes, read once when a step's parameters are made and passed to its tasks.

    Graph code reads these fields, never the global dask config, so a run's tasks all see the values
    the run started with, wherever they execute.
    """

    target_task_pixels: float = 150e6
    min_tasks_per_worker: int = 3
    max_run_rows: int = 2_000_000
    held_run_bytes: float = 512e6
    held_run_seconds: float = 10.0
    partition_memory_fraction: float = 0.25
    bytes_per_partial_row: float = 200
    max_partition_rows: int = 4_000_000
    correct_rows_per_task: int = 524288
    scale_rows_per_partition: int = 2_000_000

    @classmethod
    def from_config(cls) -> Tuning:
        return cls(
            target_task_pixels=_positive("integrate.target-task-pixels"),
            min_tasks_per_worker=_positive("integrate.min-tasks-per-worker", int),
            max_run_rows=_positive("integrate.max-run-rows", int),
            held_run_bytes=_positive("integrate.held-run-bytes", allow_zero=True),
            held_run_seconds=_positive("integrate.held-run-seconds", allow_zero=True),
            partition_memory_fraction=_positive("reduce.partition-memory-fraction"),
            bytes_per_partial_row=_positive("reduce.bytes-per-partial-row"),
            max_partition_rows=_positive("reduce.max-partition-rows", int),
            correct_rows_per_task=_positive("correct.rows-per-task", int),
            scale_rows_per_partition=_positive("scale.rows-per-partition", int),
        )

    def rows_in(self, worker_memory: int, cap: int) -> int:
        """Partial rows that fit a worker's share of memory for one partition, at most ``cap``."""
        by_memory = int(worker_memory * self.partition_memory_fraction // self.bytes_per_partial_row)
        return max(1, min(by_memory, cap))


@dataclass(frozen=True)
class IntegrateParams:
    """What ``integrate`` needs, as mdx2.integrate's options plus where and how to write."""

    geometry: str
    data: str
    mask: tuple[str, ...] = ()
    subdivide: tuple[int, int, int] | None = None  # None: diffuse.integrate.subdivide
    max_spread: float | None = None  # None: diffuse.integrate.max-spread
    exposure_time: float | None = None
    outfile: str | None = "integrated.nxs"
    parquet: str | None = None
    overwrite: bool = False
    workdir: str | None = None
    resume: bool = False
    keep_workdir: bool = False
    tuning: Tuning = field(default_factory=Tuning.from_config, compare=False)
    chunks: tuple[int, int, int] | None = None  # binning grid (frames, y, x); None: the data's chunks

    def __post_init__(self):
        set_ = object.__setattr__
        object.__setattr__(self, "chunks", chunks_option(self.chunks))
        set_(self, "geometry", _as_path(self.geometry, "geometry"))
        set_(self, "data", _as_path(self.data, "data"))
        masks = self.mask
        if masks is None:
            masks = ()
        elif isinstance(masks, str | os.PathLike):
            masks = (masks,)
        set_(self, "mask", tuple(_as_path(m, "mask") for m in masks))
        if self.subdivide is None:
            set_(self, "subdivide", get_default("integrate.subdivide"))
        set_(self, "subdivide", _subdivide(self.subdivide))
        if self.max_spread is None:
            set_(self, "max_spread", get_default("integrate.max-spread"))
        try:
            spread = float(self.max_spread)
        except (TypeError, ValueError):
            raise ConfigError(f"max_spread must be a number of degrees, got {self.max_spread!r}") from None
        if not spread > 0 or spread == float("inf"):
            raise ConfigError(f"max_spread must be > 0 degrees, got {self.max_spread!r}")
        set_(self, "max_spread", spread)
        if self.exposure_time is not None:
            t = float(self.exposure_time)
            if not t > 0 or t == float("inf"):
                raise ConfigError(f"exposure_time must be > 0 seconds, got {self.exposure_time!r}")
            set_(self, "exposure_time", t)
        if self.outfile is None and self.parquet is None:
            raise ConfigError("nothing to write: give an outfile (NeXus) and/or a parquet directory")
        for name in ("outfile", "parquet", "workdir"):
            set_(self, name, _as_optional_path(getattr(self, name), name))


@dataclass(frozen=True)
class ReintegrateParams(IntegrateParams):
    """What ``reintegrate`` needs: integrate's binning (``max_spread`` is not used: mdx2.reintegrate
    sums every observation of a voxel) plus mdx2.reintegrate's ``scale``, ``background`` and
    ``output`` (``counts`` or ``intensity``)."""

    outfile: str | None = "reintegrated.nxs"
    scale: str | None = None
    background: str | None = None
    output: str = "counts"

    def __post_init__(self):
        super().__post_init__()
        for name in ("scale", "background"):
            object.__setattr__(self, name, _as_optional_path(getattr(self, name), name))
        if self.output not in ("counts", "intensity"):
            raise ConfigError(f"output must be 'counts' or 'intensity', got {self.output!r}")


@dataclass(frozen=True)
class CorrectParams:
    """What ``correct`` needs, as mdx2.correct's options plus where and how to write."""

    geometry: str
    integrated: str
    background: str | None = None
    attenuation: bool = True
    efficiency: bool = True
    polarization: bool = True
    lorentz: bool = False
    p1: bool = False
    outfile: str | None = "corrected.nxs"
    parquet: str | None = None
    overwrite: bool = False
    tuning: Tuning = field(default_factory=Tuning.from_config, compare=False)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "geometry", _as_path(self.geometry, "geometry"))
        set_(self, "integrated", _as_path(self.integrated, "integrated"))
        for name in ("background", "outfile", "parquet"):
            set_(self, name, _as_optional_path(getattr(self, name), name))
        for name in ("attenuation", "efficiency", "polarization", "lorentz", "p1", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.outfile is None and self.parquet is None:
            raise ConfigError("nothing to write: give an outfile (NeXus) and/or a parquet directory")


MERGE_SPLITS = ("randomHalf", "weightedRandomHalf", "Friedel")


@dataclass(frozen=True)
class MergeParams:
    """What ``merge`` needs, as mdx2.merge's options (``scales`` optional) plus where and how to write."""

    tables: tuple[str, ...]
    scales: tuple[str, ...] = ()
    outlier: float | None = None
    split: str | None = None
    geometry: str | None = None
    seed: int | None = None
    scaling: bool = True
    offset: bool = True
    absorption: bool = True
    detector: bool = True
    outfile: str = "merged.nxs"
    overwrite: bool = False
    workdir: str | None = None  # None: .<outfile>.work next to the output
    resume: bool = False
    keep_workdir: bool = False
    tuning: Tuning = field(default_factory=Tuning.from_config, compare=False)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "workdir", _as_optional_path(self.workdir, "workdir"))
        tables = (self.tables,) if isinstance(self.tables, str | os.PathLike) else tuple(self.tables or ())
        if not tables:
            raise ConfigError("merge needs at least one corrected table")
        set_(self, "tables", tuple(_as_path(t, "table") for t in tables))
        scales = (self.scales,) if isinstance(self.scales, str | os.PathLike) else tuple(self.scales or ())
        set_(self, "scales", tuple(_as_path(s, "scale") for s in scales))
        if self.scales and len(self.scales) != len(self.tables):
            raise ConfigError(
                f"number of scale files ({len(self.scales)}) must match the number of tables "
                f"({len(self.tables)})"
            )
        set_(self, "geometry", _as_optional_path(self.geometry, "geometry"))
        set_(self, "outfile", _as_path(self.outfile, "outfile"))
        if self.outlier is not None:
            if (
                isinstance(self.outlier, bool)
                or not isinstance(self.outlier, int | float)
                or not self.outlier > 0
            ):
                raise ConfigError(f"outlier must be a number > 0 (sigma), got {self.outlier!r}")
            set_(self, "outlier", float(self.outlier))
        if self.split is not None and self.split not in MERGE_SPLITS:
            raise ConfigError(f"split must be one of {', '.join(MERGE_SPLITS)}, got {self.split!r}")
        if self.split == "Friedel" and self.geometry is None:
            raise ConfigError("--split Friedel needs --geometry (the Laue group operators of geometry.nxs)")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32
        ):
            raise ConfigError(f"seed must be a whole number in [0, 2**32), got {self.seed!r}")
        for name in ("scaling", "offset", "absorption", "detector", "overwrite", "resume", "keep_workdir"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")


def non_default_items(params) -> dict:
    """The parameters that differ from their defaults (what a log should show, as DIALS' diff_phil)."""
    out = {}
    for f in fields(params):
        if f.name == "tuning":  # recorded whole when it differs from the package defaults
            if getattr(params, f.name) != Tuning():
                out[f.name] = getattr(params, f.name)
            continue
        value = getattr(params, f.name)
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if default is MISSING or value != default:
            out[f.name] = value
    return out


@dataclass(frozen=True)
class ClusterSpec:
    """Where a step computes, as the command line says it: ``--cluster`` and the options that size it.

    ``cluster``: ``local`` | ``slurm`` | a cluster config ``.yaml`` | ``tcp://host:port`` | a scheduler
    file ``.json`` (None: ``diffuse.cluster.default``). ``workers``: local worker processes, SLURM
    jobs, or workers to wait for; ``memory_limit`` per worker process; ``partition``, ``account``,
    ``walltime`` override a SLURM config. :func:`pipeline.cluster.connect` checks which apply.
    """

    cluster: str | None = None
    workers: int | None = None
    memory_limit: str | int | None = None
    partition: str | None = None
    account: str | None = None
    walltime: str | None = None

    def __post_init__(self):
        if self.cluster is not None:
            object.__setattr__(self, "cluster", os.fspath(self.cluster))
        w = self.workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ConfigError(f"workers must be a whole number >= 1, got {w!r}")

    @classmethod
    def of(cls, value: ClusterSpec | str | os.PathLike | None) -> ClusterSpec:
        """A spec from what a caller passed as ``cluster=``: a ClusterSpec, a cluster name/path, or None."""
        return value if isinstance(value, ClusterSpec) else cls(cluster=value)

    @property
    def name(self) -> str:
        """The cluster spec string, the configured default when none was given."""
        return str(self.cluster or get_default("cluster.default"))


@dataclass(frozen=True)
class MapParams:
    """What ``map`` needs, as mdx2.map's options plus where and how to write.

    ``png``: True writes a slice of the map beside ``outfile`` (``map.nxs`` -> ``map.png``), a path
    writes it there, False writes none. ``cells_per_task``: grid points one task maps (its memory is
    about 40 bytes per point).
    """

    geometry: str
    merged: str
    limits: tuple[float, float, float, float, float, float] = (0, 10, 0, 10, 0, 10)
    signal: str = "intensity"
    symmetry: bool = True
    outfile: str = "map.nxs"
    png: bool | str = True
    overwrite: bool = False
    cells_per_task: int = 4_000_000

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "geometry", _as_path(self.geometry, "geometry"))
        set_(self, "merged", _as_path(self.merged, "merged"))
        set_(self, "outfile", _as_path(self.outfile, "outfile"))
        try:
            limits = tuple(float(x) for x in self.limits)
        except (TypeError, ValueError):
            raise ConfigError(
                f"limits must be 6 numbers (hmin hmax kmin kmax lmin lmax), got {self.limits!r}"
            ) from None
        if len(limits) != 6:
            raise ConfigError(
                f"limits must be 6 numbers (hmin hmax kmin kmax lmin lmax), got {self.limits!r}"
            )
        for i, axis in enumerate("hkl"):
            lo, hi = limits[2 * i], limits[2 * i + 1]
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ConfigError(f"limits along {axis} must be finite, got {lo} {hi}")
            if lo > hi:
                raise ConfigError(
                    f"limits: {axis}min must be <= {axis}max, got {axis}min={lo:g}, {axis}max={hi:g}"
                )
        set_(self, "limits", limits)
        if not isinstance(self.signal, str) or not self.signal:
            raise ConfigError(f"signal must be a column name, got {self.signal!r}")
        for name in ("symmetry", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.png is not True and self.png is not False:
            set_(self, "png", _as_path(self.png, "png"))
        if self.png_path == self.outfile:
            raise ConfigError(f"the PNG would replace the map {self.outfile!r}: give --png another path")
        c = self.cells_per_task
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ConfigError(f"cells_per_task must be a whole number >= 1, got {c!r}")

    @property
    def png_path(self) -> str | None:
        if self.png is False:
            return None
        if self.png is True:
            return str(Path(self.outfile).with_suffix(".png"))
        return self.png


@dataclass(frozen=True)
class FindPeaksParams:
    """``find-peaks``: mdx2.find_peaks's options (pixels above ``count_threshold``; Gaussian model with
    one round of outlier rejection at ``sigma_cutoff``)."""

    count_threshold: float
    sigma_cutoff: float = 3.0
    chunks: tuple[int, int, int] | None = None  # the chunks mdx2 read the data by (order of the peaks)
    geometry: str | None = None  # the files, for the run log and the output rule
    data: str | None = None
    outfile: str | None = None
    overwrite: bool = False

    def __post_init__(self):
        object.__setattr__(self, "chunks", chunks_option(self.chunks))
        for name in ("geometry", "data", "outfile"):
            object.__setattr__(self, name, _as_optional_path(getattr(self, name), name))
        for name in ("count_threshold", "sigma_cutoff"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{name} must be a number, got {value!r}") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, value)
        if not self.sigma_cutoff > 0:
            raise ConfigError(f"sigma_cutoff must be > 0, got {self.sigma_cutoff!r}")


@dataclass(frozen=True)
class MaskPeaksParams:
    """``mask-peaks``: mdx2.mask_peaks's options (contour level ``sigma_cutoff``; ``bragg`` keeps the
    peaks and masks everything else)."""

    sigma_cutoff: float = 3.0
    bragg: bool = False
    chunks: tuple[int, int, int] | None = None  # the chunks mdx2 computed the mask by
    geometry: str | None = None  # the files, for the run log and the output rule
    data: str | None = None
    peaks: str | None = None
    outfile: str | None = None
    overwrite: bool = False

    def __post_init__(self):
        object.__setattr__(self, "chunks", chunks_option(self.chunks))
        for name in ("geometry", "data", "peaks", "outfile"):
            object.__setattr__(self, name, _as_optional_path(getattr(self, name), name))
        try:
            value = float(self.sigma_cutoff)
        except (TypeError, ValueError):
            raise ConfigError(f"sigma_cutoff must be a number, got {self.sigma_cutoff!r}") from None
        if not value > 0 or value == float("inf"):
            raise ConfigError(f"sigma_cutoff must be > 0 and finite, got {self.sigma_cutoff!r}")
        object.__setattr__(self, "sigma_cutoff", value)
        if not isinstance(self.bragg, bool):
            raise ConfigError(f"bragg must be True or False, got {self.bragg!r}")


@dataclass(frozen=True)
class ImportDataParams:
    """What ``import-data`` needs: detector images in, mdx2's data.nxs layout out."""

    images: str  # NXmx master file, CBF template/list, .expt naming them (kept as given: templates)
    chunks: tuple[int, int, int] | None = None  # None: what mdx2.import_data would choose
    datastore: str = "datastore"  # relative to the outfile's directory, as mdx2 writes it
    outfile: str = "data.nxs"
    exposure_time: float | None = None
    overwrite: bool = False

    def __post_init__(self):
        set_ = object.__setattr__
        if not isinstance(self.images, str | os.PathLike):
            raise ConfigError(f"images must be a path, got {self.images!r}")
        images = os.fspath(self.images)
        set_(self, "images", images if ("#" in images or "*" in images) else os.path.abspath(images))
        object.__setattr__(self, "chunks", chunks_option(self.chunks))
        store = os.fspath(self.datastore)
        if not store or os.path.isabs(store) or ".." in Path(store).parts:
            raise ConfigError(
                f"datastore must be a directory name relative to the output file's directory (no absolute "
                f"path, no '..'), got {store!r}: data.nxs names its source files relative to itself"
            )
        set_(self, "datastore", store)
        set_(self, "outfile", _as_path(self.outfile, "outfile"))
        if self.exposure_time is not None:
            t = float(self.exposure_time)
            if not t > 0 or t == float("inf"):
                raise ConfigError(f"exposure_time must be > 0 seconds, got {self.exposure_time!r}")
            set_(self, "exposure_time", t)


# ------------------------------------------------------------------------------------------- scale


def _check_fields(obj, what: str, positive=(), nonnegative=(), counts=(), flags=()):
    for name in positive:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or v == float("inf"):
            raise ConfigError(f"{what}.{name} must be a number > 0, got {v!r}")
    for name in nonnegative:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0 or v == float("inf"):
            raise ConfigError(f"{what}.{name} must be a number >= 0, got {v!r}")
    for name, low in counts:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"{what}.{name} must be a whole number >= {low}, got {v!r}")
    for name in flags:
        if not isinstance(getattr(obj, name), bool):
            raise ConfigError(f"{what}.{name} must be True or False, got {getattr(obj, name)!r}")


@dataclass(frozen=True)
class PrescaleOptions:
    """mdx2.scale ``--prescale.*``: a first refinement on every ``subsample``-th row of each table,
    grouped by ``floor(s * 1000)`` when ``isotropic`` (else by reflection), of the enabled models it
    names; the main refinement starts from its models."""

    enable: bool = False
    subsample: int = 10
    isotropic: bool = True
    scaling: bool = True
    offset: bool = False
    detector: bool = False
    absorption: bool = True

    def __post_init__(self):
        _check_fields(
            self,
            "prescale",
            counts=(("subsample", 1),),
            flags=("enable", "isotropic", "scaling", "offset", "detector", "absorption"),
        )


@dataclass(frozen=True)
class ScalingOptions:
    """mdx2.scale ``--scaling.*``: smooth scale factor vs. phi (model b)."""

    enable: bool = True
    alpha: float = 1.0
    dphi: float = 1.0
    niter: int = 10
    x2tol: float = 1.0e-4
    outlier: float = 10.0

    def __post_init__(self):
        _check_fields(
            self,
            "scaling",
            positive=("alpha", "dphi", "outlier"),
            nonnegative=("x2tol",),
            counts=(("niter", 1),),
            flags=("enable",),
        )


@dataclass(frozen=True)
class OffsetOptions:
    """mdx2.scale ``--offset.*``: smooth offset vs. s and phi (model c)."""

    enable: bool = False
    alpha_x: float = 1.0
    alpha_y: float = 1.0
    alpha_min: float = 0.001
    min: float = 0.0
    dphi: float = 2.5
    ns: int = 31
    niter: int = 5
    x2tol: float = 1.0e-3
    outlier: float = 5.0

    def __post_init__(self):
        _check_fields(
            self,
            "offset",
            positive=("alpha_x", "alpha_y", "dphi", "outlier"),
            nonnegative=("alpha_min", "x2tol"),
            counts=(("ns", 3), ("niter", 1)),
            flags=("enable",),
        )
        if isinstance(self.min, bool) or not isinstance(self.min, int | float) or self.min != self.min:
            raise ConfigError(f"offset.min must be a number, got {self.min!r}")


@dataclass(frozen=True)
class DetectorOptions:
    """mdx2.scale ``--detector.*``: smooth scale vs. detector position (model d)."""

    enable: bool = False
    alpha: float = 1.0
    nx: int = 200
    ny: int = 200
    niter: int = 5
    x2tol: float = 1.0e-3
    outlier: float = 5.0

    def __post_init__(self):
        _check_fields(
            self,
            "detector",
            positive=("alpha", "outlier"),
            nonnegative=("x2tol",),
            counts=(("nx", 2), ("ny", 2), ("niter", 1)),
            flags=("enable",),
        )


@dataclass(frozen=True)
class AbsorptionOptions:
    """mdx2.scale ``--absorption.*``: smooth scale vs. detector position and phi (model a)."""

    enable: bool = False
    alpha_xy: float = 10.0
    alpha_z: float = 1.0
    nx: int = 20
    ny: int = 20
    dphi: float = 5.0
    niter: int = 5
    x2tol: float = 1.0e-4
    outlier: float = 5.0

    def __post_init__(self):
        _check_fields(
            self,
            "absorption",
            positive=("alpha_xy", "alpha_z", "dphi", "outlier"),
            nonnegative=("x2tol",),
            counts=(("nx", 2), ("ny", 2), ("niter", 1)),
            flags=("enable",),
        )


@dataclass(frozen=True)
class ScaleParams:
    """What ``scale`` needs: mdx2.scale's options (``mca2020`` enables all four models) and the outputs."""

    hkl: tuple[str, ...]
    outfile: tuple[str, ...] | None = None  # None: mdx2's default names (scales.nxs beside the input)
    scaling: ScalingOptions = field(default_factory=ScalingOptions)
    offset: OffsetOptions = field(default_factory=OffsetOptions)
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    absorption: AbsorptionOptions = field(default_factory=AbsorptionOptions)
    prescale: PrescaleOptions = field(default_factory=PrescaleOptions)
    mca2020: bool = False
    overwrite: bool = False
    tuning: Tuning = field(default_factory=Tuning.from_config, compare=False)

    def __post_init__(self):
        from dataclasses import replace

        set_ = object.__setattr__
        hkl = (self.hkl,) if isinstance(self.hkl, str | os.PathLike) else tuple(self.hkl or ())
        if not hkl:
            raise ConfigError("scale needs at least one corrected table")
        hkl = tuple(_as_path(p, "hkl") for p in hkl)
        if len(set(hkl)) != len(hkl):
            raise ConfigError(f"the same corrected table is given twice: {list(hkl)}")
        set_(self, "hkl", hkl)
        for name in ("mca2020", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.mca2020:
            for name in ("scaling", "offset", "detector", "absorption"):
                set_(self, name, replace(getattr(self, name), enable=True))
        if not any(getattr(self, n).enable for n in ("scaling", "offset", "detector", "absorption")):
            raise ConfigError("at least one model must be enabled: scaling, absorption, detector or offset")
        if self.prescale.enable and self.prescale.detector and self.detector.enable:
            raise ConfigError(
                "--prescale.detector True with the detector model enabled is not supported: mdx2.scale 1.0.5 "
                "fails there (its prescale refiner never receives the detector model); leave "
                "--prescale.detector False"
            )
        out = self.outfile
        if out is None:
            out = _default_scale_outfiles(hkl)
            if out is None:
                raise ConfigError(
                    "cannot name the outputs: the tables share a directory but their names do not end in "
                    "unique _SUFFIX parts; give one --outfile per table"
                )
        out = (out,) if isinstance(out, str | os.PathLike) else tuple(out)
        if len(out) != len(hkl):
            raise ConfigError(
                f"{len(out)} output file(s) for {len(hkl)} table(s): give one --outfile per table"
            )
        set_(self, "outfile", tuple(_as_path(p, "outfile") for p in out))

    @property
    def rows_per_partition(self) -> int:
        return self.tuning.scale_rows_per_partition


def _default_scale_outfiles(infiles) -> tuple[str, ...] | None:
    """mdx2.scale's ``generate_default_outfiles``."""
    dirs = [os.path.dirname(fn) for fn in infiles]
    if len(set(dirs)) == len(dirs):
        return tuple(os.path.join(d, "scales.nxs") for d in dirs)
    if len(set(dirs)) == 1:
        roots = [os.path.splitext(os.path.split(fn)[-1])[0] for fn in infiles]
        if all("_" in root for root in roots):
            postfix = [root.split("_")[-1] for root in roots]
            if len(set(postfix)) == len(postfix):
                return tuple(os.path.join(dirs[0], f"scales_{pf}.nxs") for pf in postfix)
    return None
