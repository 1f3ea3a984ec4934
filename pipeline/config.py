"""Parameters of each step: frozen dataclasses validated once, at the boundary.

Defaults live in ``pipeline/pipeline.yaml`` (registered with :mod:`dask.config` under ``diffuse``);
command-line flags and keyword arguments override them.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import dask.config
import yaml

from pipeline.errors import ConfigError

__all__ = ["CorrectParams", "IntegrateParams", "get_default", "non_default_items"]

_DEFAULTS_FILE = Path(__file__).with_name("pipeline.yaml")
with open(_DEFAULTS_FILE) as _f:
    _DEFAULTS = yaml.safe_load(_f)
dask.config.update_defaults(_DEFAULTS)


def get_default(key: str):
    """A package default, e.g. ``get_default("integrate.max-spread")`` (after user config overrides)."""
    return dask.config.get(f"diffuse.{key}")


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
            raise ConfigError(f"subdivide along {axis} must be <= 1000, got {v!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class IntegrateParams:
    """What ``integrate`` needs, as mdx2.integrate's options plus where and how to write."""

    geometry: str
    data: str
    mask: tuple[str, ...] = ()
    subdivide: tuple[int, int, int] = (1, 1, 1)
    max_spread: float = 1.0
    exposure_time: float | None = None
    outfile: str | None = "integrated.nxs"
    parquet: str | None = None
    overwrite: bool = False
    workdir: str | None = None
    resume: bool = False
    keep_workdir: bool = False

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "geometry", _as_path(self.geometry, "geometry"))
        set_(self, "data", _as_path(self.data, "data"))
        masks = self.mask
        if masks is None:
            masks = ()
        elif isinstance(masks, str | os.PathLike):
            masks = (masks,)
        set_(self, "mask", tuple(_as_path(m, "mask") for m in masks))
        set_(self, "subdivide", _subdivide(self.subdivide))
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


def non_default_items(params) -> dict:
    """The parameters that differ from their defaults (what a log should show, as DIALS' diff_phil)."""
    out = {}
    for f in fields(params):
        value = getattr(params, f.name)
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if default is MISSING or value != default:
            out[f.name] = value
    return out
