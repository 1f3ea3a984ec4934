"""Named sizes of synthetic datasets: detector modules, frames, rotation per frame, crystal and counts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.errors import ConfigError

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """Everything that defines a synthetic rotation dataset apart from the random seed.

    Lengths in mm, angles in degrees, wavelength in Angstrom, times in seconds. The detector is a
    Pilatus-like grid of ``modules`` (fast, slow) modules of 487 x 195 pixels of 0.172 mm with gaps
    of 7 (fast) and 17 (slow) pixels; the beam hits it at ``beam_center`` (fraction of the image,
    fast then slow). ``chunk_frames`` is the phi depth of one storage chunk (and of one file in
    datastore/); None picks mdx2.import_data's default for ``dphi``.
    """

    modules: tuple[int, int] = (2, 2)
    frames: int = 60
    dphi: float = 0.1
    phi0: float = 0.0
    exposure_time: float = 0.1
    chunk_frames: int | None = None
    wavelength: float = 0.9763
    distance: float = 160.0
    beam_center: tuple[float, float] = (0.52, 0.47)
    # tetragonal hen egg-white lysozyme, the classic sample of diffuse-scattering studies
    unit_cell: tuple[float, float, float, float, float, float] = (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)
    hall_symbol: str = " P 4nw 2abw"
    rotation_axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
    hot_pixels: int = 4
    background: bool = True  # also write bkg_data.nxs and bkg_data_binned.nxs
    # background images are taken as in mdx2's tutorials: 1 s exposures every 1 degree of the same
    # rotation range (crystal moved out of the beam), binned by bin_image_series F Y X
    background_dphi: float = 1.0
    background_exposure_time: float = 1.0
    background_bins: tuple[int, int, int] = (2, 20, 20)
    # "pilatus" (487 x 195 modules of 0.172 mm) or "eiger" (1028 x 512 modules of 0.075 mm)
    detector: str = "pilatus"
    # "mdx2": data.nxs + datastore/ as mdx2.import_data writes it; "eiger": data_master.h5 + data files as
    # an Eiger writes them (uint16, one frame per chunk, bitshuffle-LZ4, external links, gaps at 65535)
    layout: str = "mdx2"

    def replace(self, **changes) -> Preset:
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, Preset] = {
    # one module, 12 frames in two phi slabs: for tests (well under a second)
    "tiny": Preset(modules=(1, 1), frames=12, chunk_frames=6, hot_pixels=2, background_bins=(1, 20, 20)),
    # 2 x 2 modules, 6 degrees in three slabs of 20 frames (mdx2.import_data --chunks 20 -1 -1)
    "demo": Preset(modules=(2, 2), frames=60, chunk_frames=20),
    # 2 x 3 modules, 10 degrees in mdx2's default slabs of 50 frames
    "small": Preset(modules=(2, 3), frames=100),
    # an Eiger 16M (4 x 8 modules, 4148 x 4362 = 18 M pixels) as the detector writes it: for LZ4 benchmarks
    "eiger16m": Preset(
        modules=(4, 8),
        frames=10,
        detector="eiger",
        layout="eiger",
        distance=200.0,
        hot_pixels=8,
        background=False,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or a :class:`ConfigError` listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}") from None
