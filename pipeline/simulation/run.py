"""``simulate``: write a synthetic rotation dataset in the files a real mdx2 user has before integrating."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, InputError
from pipeline.io.atomic import atomic_path
from pipeline.simulation.experiment import (
    DETECTORS,
    Experiment,
    build_experiment,
    module_gap_mask,
    rotation_matrix,
)
from pipeline.simulation.files import EigerWriter, ImageSeriesWriter, mask_writer
from pipeline.simulation.model import (
    CountModel,
    DetectorPixels,
    ReflectionTable,
    detector_pixels,
    expected_counts,
    frame_model,
    isotropic_rate,
    reflection_table,
)
from pipeline.simulation.presets import Preset, get_preset

__all__ = ["OUTPUT_FILES", "SimulationResult", "simulate"]

log = logging.getLogger(__name__)

#: What :func:`simulate` writes into ``outdir`` (plus ``datastore/data_<i>.nxs`` and ``bkg_data_<i>.nxs``).
OUTPUT_FILES = (
    "experiment.expt",
    "geometry.nxs",
    "data.nxs",
    "mask.nxs",
    "bkg_data.nxs",
    "bkg_data_binned.nxs",
    "dataset.json",
)


@dataclass(frozen=True)
class SimulationResult:
    """Where the dataset went, what it holds (``info``, also in dataset.json) and how long it took."""

    outdir: Path
    files: dict[str, Path]
    shape: tuple[int, int, int]
    info: dict
    seconds: dict[str, float] = field(default_factory=dict)


def _mdx2_stack_depth(dphi: float) -> int:
    """Frames per phi slab that mdx2.import_data chooses: 5 or 6 degrees, or 40-50 frames for fine slicing."""
    if dphi == 0:
        return 50
    denom = round(180 / dphi)
    if denom < 180 * 7:
        for degrees in (5, 6):
            if degrees * denom % 180 == 0:
                return degrees * denom // 180
        return 10
    for factor, frames in ((2, 50), (2, 40), (2, 45), (4, 50), (4, 45)):
        if factor * frames * 180 % denom == 0:
            return frames
    return 40


def _check_outdir(outdir: Path, overwrite: bool) -> None:
    """Refuse to replace a dataset unless ``overwrite``; then remove all of it (stale files would mislead)."""
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output directory {str(outdir)!r} is a file")
    existing = [name for name in (*OUTPUT_FILES, "datastore") if (outdir / name).exists()]
    if existing and not overwrite:
        raise InputError(
            f"{str(outdir)!r} already holds {', '.join(existing)}; pass --overwrite to replace the dataset"
        )
    outdir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        (outdir / name).unlink(missing_ok=True)
    for name in ("data", "bkg_data"):  # only our own slabs: datastore/ may hold other files
        for stale in (outdir / "datastore").glob(f"{name}_*.nxs"):
            stale.unlink()


def _check_options(preset: str | Preset, seed, frames, hot_pixels, background) -> Preset:
    p = get_preset(preset) if isinstance(preset, str) else preset
    p = p.replace(frames=frames, hot_pixels=hot_pixels, background=background)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
    if p.frames < 1 or p.hot_pixels < 0:
        raise ConfigError(f"frames must be >= 1 and hot_pixels >= 0, got {p.frames!r} and {p.hot_pixels!r}")
    return p


@dataclass(frozen=True, eq=False)
class _Scene:
    """What every image of the dataset shares: experiment, detector, reflections, hot pixels, chunking."""

    experiment: Experiment
    gaps: np.ndarray  # (ny, nx) True between modules
    pixels: DetectorPixels
    table: ReflectionTable
    hot: np.ndarray  # flat pixel indices
    chunks: tuple[int, int, int]

    @property
    def hot_yx(self) -> list[list[int]]:
        return [[int(i // self.experiment.nx), int(i % self.experiment.nx)] for i in self.hot]


def simulate(
    outdir: str | os.PathLike,
    preset: str | Preset = "demo",
    seed: int = 0,
    *,
    frames: int | None = None,
    hot_pixels: int | None = None,
    background: bool | None = None,
    geometry: bool = True,
    overwrite: bool = False,
    model: CountModel | None = None,
) -> SimulationResult:
    """Write a synthetic rotation dataset of ``preset`` to ``outdir``; same ``seed``, same counts.

    Files (mdx2 1.0.5 layouts): experiment.expt (DIALS JSON), geometry.nxs (by
    :func:`pipeline.api.import_geometry.import_geometry`, unless ``geometry`` is False), data.nxs +
    datastore/ (virtual image stack), mask.nxs (Bragg peaks, True = exclude), bkg_data.nxs +
    bkg_data_binned.nxs (air-scatter images and their binned count rate, unless ``background`` is
    False) and dataset.json (what was simulated, including the unmasked hot pixels). ``frames``,
    ``hot_pixels`` and ``background`` override the preset; ``model`` the count rates.
    """
    t0 = time.perf_counter()
    p = _check_options(preset, seed, frames, hot_pixels, background)
    m = model or CountModel()
    outdir = Path(outdir)
    _check_outdir(outdir, overwrite)
    seconds: dict[str, float] = {}

    # 1. the experiment; independent random streams, so that options do not shift each other's draws
    orient_rng, hot_rng, data_rng, bkg_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    e = build_experiment(p, orient_rng)
    files = {"experiment.expt": outdir / "experiment.expt"}
    doc = e.to_dials()
    if p.layout == "eiger":  # the .expt names the master file, as dials.import of Eiger data does
        doc["imageset"] = [{"__id__": "ImageSequence", "template": "data_master.h5"}]
    with atomic_path(files["experiment.expt"]) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    if geometry:
        t = time.perf_counter()
        from pipeline.api.import_geometry import import_geometry

        files["geometry.nxs"] = outdir / "geometry.nxs"
        import_geometry(files["experiment.expt"], outfile=files["geometry.nxs"], sample_spacing=(1, 10, 10))
        seconds["geometry"] = time.perf_counter() - t

    # 2. what all images share
    gaps = module_gap_mask(e.nx, e.ny, p.detector)
    (module_x, module_y), (gap_x, gap_y), _ = DETECTORS[p.detector]
    pixels = detector_pixels(e)
    scene = _Scene(
        experiment=e,
        gaps=gaps,
        pixels=pixels,
        table=reflection_table(e.a_matrix, e.hall_symbol, float(pixels.s_norm.max()), seed),
        hot=np.sort(hot_rng.choice(np.flatnonzero(~gaps.ravel()), size=p.hot_pixels, replace=False)),
        chunks=(
            p.chunk_frames or min(_mdx2_stack_depth(p.dphi), p.frames),
            module_y + (gap_y if e.ny > module_y else 0),  # one module (and its gap) per chunk
            module_x + (gap_x if e.nx > module_x else 0),
        ),
    )

    # 3. crystal images and the Bragg mask; 4. background images and their binned count rate
    t = time.perf_counter()
    files.update(_write_crystal_images(outdir, scene, p, m, data_rng))
    seconds["data"] = time.perf_counter() - t
    if p.background:
        t = time.perf_counter()
        files.update(_write_background(outdir, scene, p, m, bkg_rng))
        seconds["background"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0

    shape = (p.frames, e.ny, e.nx)
    info = _describe(p, preset, seed, scene, shape, m)
    files["dataset.json"] = outdir / "dataset.json"
    with atomic_path(files["dataset.json"]) as tmp:
        tmp.write_text(json.dumps(info, indent=1) + "\n")
    log.info("simulated %s frames x %s x %s in %.1f s -> %s", *shape, seconds["total"], outdir)
    return SimulationResult(outdir, files, shape, info, seconds)


def _write_crystal_images(outdir: Path, scene: _Scene, p: Preset, m: CountModel, rng) -> dict[str, Path]:
    """data.nxs + datastore/data_<i>.nxs and mask.nxs, one phi slab at a time."""
    e = scene.experiment
    shape = (p.frames, e.ny, e.nx)
    fm = frame_model(scene.pixels, scene.table, m, p.exposure_time)
    hot_y, hot_x = scene.hot // e.nx, scene.hot % e.nx
    if p.layout == "eiger":
        writer = EigerWriter(outdir, "data", p.phi0, p.dphi, p.exposure_time, shape, scene.gaps)
    else:
        writer = ImageSeriesWriter(
            outdir, "data", e.phi, np.full(p.frames, p.exposure_time), shape, scene.chunks
        )
    with mask_writer(outdir / "mask.nxs", e.phi, shape, scene.chunks) as mask_ds:
        for index, slab in enumerate(writer.slabs):
            counts = np.empty((slab.stop - slab.start, e.ny, e.nx), dtype=np.int32)
            mask = np.empty(counts.shape, dtype=bool)
            for j, i in enumerate(range(slab.start, slab.stop)):
                ub = rotation_matrix(e.rotation_axis, float(e.phi[i])) @ e.a_matrix
                mean, mask[j] = expected_counts(fm, ub)
                counts[j] = rng.poisson(mean)
            counts[:, hot_y, hot_x] = rng.poisson(m.hot_rate * p.exposure_time, (len(counts), len(scene.hot)))
            mask[:, hot_y, hot_x] = False  # hot pixels stay unmasked in every frame (for QC to find)
            counts[:, scene.gaps] = -1
            writer.write_slab(index, counts)
            mask_ds[slab] = mask
    return {writer.filename: writer.finish(), "mask.nxs": outdir / "mask.nxs"}


def _write_background(outdir: Path, scene: _Scene, p: Preset, m: CountModel, rng) -> dict[str, Path]:
    """bkg_data.nxs + datastore/bkg_data_<i>.nxs (air scatter, 1 s every 1 degree) and its binned rate."""
    from pipeline.api.bin_background import bin_series, write_binned

    e = scene.experiment
    n = max(1, int(np.ceil(round(p.frames * p.dphi / p.background_dphi, 9))))
    phi = p.phi0 + p.background_dphi * (np.arange(n) + 0.5)
    exposure = np.full(n, p.background_exposure_time)
    mean = isotropic_rate(scene.pixels, m, crystal=False) * scene.pixels.response * p.background_exposure_time
    chunks = (min(_mdx2_stack_depth(p.background_dphi), n), *scene.chunks[1:])
    writer = ImageSeriesWriter(outdir, "bkg_data", phi, exposure, (n, e.ny, e.nx), chunks)
    counts = rng.poisson(mean, (n, e.ny, e.nx)).astype(np.int32)
    counts[:, scene.gaps] = -1
    for index, slab in enumerate(writer.slabs):
        writer.write_slab(index, counts[slab])
    # exactly what bin_image_series would compute from bkg_data.nxs, without reading it back
    binned = bin_series(
        lambda frames: counts[frames], (phi, writer.iy, writer.ix), exposure, p.background_bins
    )
    return {
        "bkg_data.nxs": writer.finish(),
        "bkg_data_binned.nxs": write_binned(outdir / "bkg_data_binned.nxs", binned),
    }


def _describe(p: Preset, preset, seed, scene: _Scene, shape, m: CountModel) -> dict:
    """dataset.json: enough to know what the files hold without opening them."""
    from pipeline._version import __version__

    return {
        "generator": f"diffuse-pipeline {__version__} (pipeline.simulate)",
        "preset": preset if isinstance(preset, str) else "custom",
        "seed": int(seed),
        "shape": list(shape),
        "pixels": int(np.prod(shape)),
        "chunks": list(scene.chunks),
        "frames": p.frames,
        "phi0": p.phi0,
        "dphi": p.dphi,
        "exposure_time": p.exposure_time,
        "wavelength": p.wavelength,
        "distance": p.distance,
        "modules": list(p.modules),
        "unit_cell": list(p.unit_cell),
        "hall_symbol": p.hall_symbol,
        "rotation_axis": list(p.rotation_axis),
        "ub_matrix_phi0": scene.experiment.a_matrix.tolist(),
        "hot_pixels": scene.hot_yx,
        "hot_pixels_note": "[iy, ix] of pixels with ~hot_rate counts/s in every frame; not in mask.nxs",
        "background": p.background,
        "background_dphi": p.background_dphi,
        "background_exposure_time": p.background_exposure_time,
        "background_bins": list(p.background_bins),
        "model": {k: getattr(m, k) for k in m.__dataclass_fields__},
    }
