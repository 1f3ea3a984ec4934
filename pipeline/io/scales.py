"""``scales.nxs``: the models fitted by ``mdx2.scale`` (or ``diffuse scale``), in mdx2's layout.

mdx2 1.0.5 writes one NXdata group per fitted model under ``/entry`` (``scaling_model``,
``absorption_model``, ``detector_model``, ``offset_model``; absent when that model was not fitted),
each with ``mdx2_module = "mdx2.scaling"``, ``mdx2_class`` the model's class, ``signal = "u"``, the
control-point axes as datasets named as in :mod:`pipeline.kernels.scaling_models` (``phi``;
``ix, iy, phi``; ``ix, iy``; ``s, phi``) and the values ``u`` (float64, shape = the axes' sizes).
``mdx2.merge`` and ``mdx2.reintegrate`` load it with ``mdx2.io.loadobj``; so do we, without nexusformat.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_h5
from pipeline.io.nexus import create_nxdata, decode_str, open_nexus, read_array, write_mdx2_root_attrs
from pipeline.kernels.scaling_models import AbsorptionModel, DetectorModel, OffsetModel, ScalingModel

__all__ = ["GROUPS", "Scales", "check_scales_cover", "read_scales", "write_scales"]

#: group name in the file -> model class
GROUPS = {
    "scaling_model": ScalingModel,
    "absorption_model": AbsorptionModel,
    "detector_model": DetectorModel,
    "offset_model": OffsetModel,
}


@dataclass(frozen=True)
class Scales:
    """The models of one ``scales.nxs``; ``None`` where the file has no such model."""

    scaling: ScalingModel | None = None
    absorption: AbsorptionModel | None = None
    detector: DetectorModel | None = None
    offset: OffsetModel | None = None

    def items(self):
        """``(group name, model)`` for the models present, in mdx2's order."""
        for group, f in zip(GROUPS, fields(self), strict=True):
            model = getattr(self, f.name)
            if model is not None:
                yield group, model

    @property
    def empty(self) -> bool:
        return not any(True for _ in self.items())


def read_scales(path: str | os.PathLike) -> Scales:
    """Read every model in ``path``; an :class:`InputError` names the file and group when one is malformed."""
    models = {}
    with open_nexus(path, "scales file") as f:
        entry = f.get("entry")
        if not isinstance(entry, h5py.Group):
            raise InputError(
                f"scales file {str(path)!r} has no '/entry' group; expected a file written by mdx2.scale"
            )
        for (group, cls), field in zip(GROUPS.items(), fields(Scales), strict=True):
            if group not in entry:
                continue
            g = entry[group]
            found = decode_str(g.attrs.get("mdx2_class", ""))
            if found != cls.__name__:
                raise InputError(
                    f"scales file {str(path)!r}: /entry/{group} has mdx2_class {found!r}, "
                    f"expected {cls.__name__!r}"
                )
            arrays = {name: read_array(g, name, f"{cls.__name__} axis") for name in (*cls.AXES, "u")}
            try:
                model = cls(**arrays)
            except ValueError as exc:
                raise InputError(f"scales file {str(path)!r}: /entry/{group}: {exc}") from exc
            if not np.all(np.isfinite(model.u)):
                bad = int(np.flatnonzero(~np.isfinite(model.u.ravel()))[0])
                raise InputError(
                    f"scales file {str(path)!r}: /entry/{group}/u has a non-finite value at flat index {bad}"
                )
            models[field.name] = model
    scales = Scales(**models)
    if scales.empty:
        raise InputError(
            f"scales file {str(path)!r} holds none of {', '.join(GROUPS)}; "
            "expected a file written by mdx2.scale"
        )
    return scales


def write_scales(path: str | os.PathLike, scales: Scales) -> Path:
    """Write ``scales`` to ``path`` atomically in mdx2's layout (models with ``u`` only)."""
    with atomic_h5(path) as f:
        entry = write_mdx2_root_attrs(f)
        for group, model in scales.items():
            if model.u is None:
                continue
            g = create_nxdata(
                entry,
                group,
                axes=model.AXES,
                signal="u",
                mdx2_module="mdx2.scaling",
                mdx2_class=type(model).__name__,
            )
            for name in model.AXES:
                g.create_dataset(name, data=getattr(model, name))
            g.create_dataset("u", data=np.asarray(model.u, dtype=np.float64))
    return Path(path)


def check_scales_cover(
    scales: Scales, path: str | os.PathLike, phi: np.ndarray, image_shape: tuple[int, int] | None = None
) -> None:
    """Refuse scales that were fitted to another dataset: each model's control points must span at least
    half of the data's phi range (and, for the detector and absorption models, of the detector's ix, iy).

    Outside its control points a model evaluates to 0 (mdx2 does not extrapolate), so scales from
    another scan would silently give infinite or zero intensities; mdx2 applies them anyway."""
    data = {"phi": (float(np.nanmin(phi)), float(np.nanmax(phi)))}
    if image_shape is not None:
        data["iy"], data["ix"] = (0.0, float(image_shape[0] - 1)), (0.0, float(image_shape[1] - 1))
    for group, model in scales.items():
        for axis in model.AXES:
            if axis not in data:
                continue
            lo, hi = data[axis]
            w = np.asarray(getattr(model, axis), dtype=np.float64)
            overlap = min(hi, w[-1]) - max(lo, w[0])
            if overlap < 0.5 * (hi - lo) or (hi == lo and not w[0] <= lo <= w[-1]):
                raise InputError(
                    f"scales file {str(path)!r}: /entry/{group} spans {axis} {w[0]:g} to {w[-1]:g}, but the "
                    f"data's {axis} runs from {lo:g} to {hi:g}; were these scales fitted to another dataset?"
                )
