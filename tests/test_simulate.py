"""``pipeline.simulate`` / ``diffuse simulate``: reproducible, in mdx2's layouts, and integrable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.errors import ConfigError, InputError
from pipeline.io.geometry import read_background, read_crystal, read_miller_grid
from pipeline.io.images import open_image_stack, open_masks
from pipeline.simulation import OUTPUT_FILES

DATA = "/entry/image_series/data"
MASK = "/entry/mask/signal"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The 'tiny' preset with seed 3 (one module, 12 frames in two slabs of 6)."""
    out = tmp_path_factory.mktemp("sim") / "tiny"
    pipeline.simulate(out, preset="tiny", seed=3)
    return out


def read(path: Path, name: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[name][()]


def test_writes_every_file(tiny):
    for name in OUTPUT_FILES:
        assert (tiny / name).is_file(), name
    assert sorted(p.name for p in (tiny / "datastore").iterdir()) == [
        "bkg_data_0.nxs",
        "data_0.nxs",
        "data_1.nxs",
    ]
    info = json.loads((tiny / "dataset.json").read_text())
    assert info["preset"] == "tiny" and info["seed"] == 3 and info["shape"] == [12, 195, 487]
    assert len(info["hot_pixels"]) == 2


def test_same_seed_same_arrays_other_seed_other_counts(tiny, tmp_path):
    again = pipeline.simulate(tmp_path / "again", preset="tiny", seed=3, geometry=False)
    for file, name in [
        ("data.nxs", DATA),
        ("mask.nxs", MASK),
        ("bkg_data.nxs", DATA),
        ("bkg_data_binned.nxs", "/entry/binned_image_series/signal"),
    ]:
        np.testing.assert_array_equal(read(tiny / file, name), read(again.outdir / file, name), err_msg=file)
    assert json.loads((tiny / "experiment.expt").read_text()) == json.loads(
        (again.outdir / "experiment.expt").read_text()
    )
    other = pipeline.simulate(tmp_path / "other", preset="tiny", seed=4, geometry=False, background=False)
    assert not np.array_equal(read(tiny / "data.nxs", DATA), read(other.outdir / "data.nxs", DATA))
    assert not (other.outdir / "bkg_data.nxs").exists()


def test_readable_by_our_readers(tiny):
    stack = open_image_stack(tiny / "data.nxs")
    assert stack.shape == (12, 195, 487)
    assert stack.storage_chunks == (6, 195, 487)  # one module per chunk, as mdx2.import_data writes
    assert len(stack.sources) == 2 and len(stack.slabs) == 2
    np.testing.assert_allclose(stack.phi, 0.1 * (np.arange(12) + 0.5))
    np.testing.assert_array_equal(stack.exposure_times, np.full(12, 0.1))
    masks = open_masks([tiny / "mask.nxs"], stack.shape)
    mask = masks.read((slice(0, 12), slice(0, 195), slice(0, 487)))
    assert mask.dtype == bool and 0.001 < mask.mean() < 0.1

    grid = read_miller_grid(tiny / "geometry.nxs")
    assert grid.phi[0] <= stack.phi[0] and grid.phi[-1] >= stack.phi[-1]
    assert read_crystal(tiny / "geometry.nxs").space_group.replace(" ", "") == "P43212"
    bkg = read_background(tiny / "bkg_data_binned.nxs")
    assert bkg.rate.shape == (2, 10, 25) and np.all(np.isfinite(bkg.rate)) and np.all(bkg.rate > 0)

    with h5py.File(tiny / "datastore" / "data_0.nxs", "r") as f:
        ds = f[DATA]
        assert ds.compression == "gzip" and ds.shuffle and ds.chunks == (6, 195, 487) and ds.dtype == np.int32


def test_counts_look_like_a_detector(tmp_path):
    sim = pipeline.simulate(
        tmp_path / "demo", preset="demo", seed=0, frames=2, geometry=False, background=False
    )
    counts = read(sim.files["data.nxs"], DATA)
    gaps = counts == -1
    assert gaps[:, :, 487:494].all() and gaps[:, 195:212, :].all()  # module gaps, and only there
    assert gaps.sum() == 2 * (407 * 7 + 17 * 981 - 17 * 7)
    hot = np.array(sim.info["hot_pixels"])
    assert np.all(counts[:, hot[:, 0], hot[:, 1]] > 10_000)
    assert not read(sim.files["mask.nxs"], MASK)[:, hot[:, 0], hot[:, 1]].any()  # hot pixels left unmasked
    valid = counts[~gaps]
    assert 1 < np.median(valid) < 10 and valid.max() > 1000  # diffuse background plus Bragg peaks


def test_virtual_dataset_resolves_from_another_cwd(tiny, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with h5py.File(tiny / "data.nxs", "r") as f:
        ds = f[DATA]
        assert ds.is_virtual
        assert [s.file_name for s in ds.virtual_sources()] == ["datastore/data_0.nxs", "datastore/data_1.nxs"]
        whole = ds[()]
    slabs = np.concatenate([read(tiny / "datastore" / f"data_{i}.nxs", DATA) for i in range(2)])
    np.testing.assert_array_equal(whole, slabs)
    assert (whole >= 0).mean() > 0.99  # not HDF5's fill value: the sources were found


def test_bragg_peaks_integrate_at_integer_hkl(tiny, client, tmp_path):
    """Without the mask, voxels at integer hkl (subdivide 3: every third) hold the Bragg counts."""
    result = pipeline.integrate(
        tiny / "geometry.nxs",
        tiny / "data.nxs",
        subdivide=(3, 3, 3),
        outfile=None,
        parquet=tmp_path / "int.parquet",
        client=client,
    )
    df = pipeline.read_table(result.parquet)
    index = np.rint(df[["h", "k", "l"]].to_numpy() * 3).astype(int)
    on_lattice = np.all(index % 3 == 0, axis=1)
    per_pixel = (df["counts"] / df["pixels"]).to_numpy()
    assert per_pixel[on_lattice].mean() > 4 * per_pixel[~on_lattice].mean()
    # ... and the Bragg mask removes them: masked pixels are exactly the mask's True pixels
    masked = pipeline.integrate(
        tiny / "geometry.nxs",
        tiny / "data.nxs",
        mask=tiny / "mask.nxs",
        subdivide=(3, 3, 3),
        outfile=None,
        parquet=tmp_path / "masked.parquet",
        client=client,
    )
    assert masked.pixels_used == result.pixels_used - int(read(tiny / "mask.nxs", MASK).sum())


def test_refuses_to_overwrite_and_checks_options(tiny, tmp_path):
    with pytest.raises(InputError, match="--overwrite"):
        pipeline.simulate(tiny, preset="tiny", seed=3)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        pipeline.simulate(tmp_path / "x", preset="huge")
    with pytest.raises(ConfigError, match="seed"):
        pipeline.simulate(tmp_path / "x", preset="tiny", seed=-1)


def test_never_imports_mdx2_or_dxtbx(tiny):
    assert not [m for m in sys.modules if m.split(".")[0] in ("mdx2", "dxtbx", "cctbx", "scitbx")]


def test_cli_simulate(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, ["simulate", str(out), "--preset", "tiny", "--seed", "3", "--frames", "6"]
    )
    assert result.exit_code == 0, result.output
    assert "simulated 6 frames x 195 x 487" in result.output
    assert json.loads((out / "dataset.json").read_text())["frames"] == 6
    again = CliRunner().invoke(app, ["simulate", str(out), "--preset", "tiny"])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_cli_background_follows_the_preset_unless_given(monkeypatch, tmp_path):
    """`simulate --preset eiger16m` writes no background (the preset's choice); the flag overrides."""
    from typer.testing import CliRunner

    import pipeline.simulation
    from pipeline.cli import app
    from pipeline.simulation.run import _check_options

    seen = []

    def fake(outdir, **kw):  # records the options and stops before any work
        seen.append(kw)
        raise SystemExit(0)

    monkeypatch.setattr(pipeline.simulation, "simulate", fake)
    for flags in ([], ["--background"], ["--no-background"]):
        CliRunner().invoke(app, ["simulate", str(tmp_path / "s"), "--preset", "eiger16m", *flags])
    assert [kw["background"] for kw in seen] == [None, True, False]
    assert _check_options("eiger16m", 0, None, None, None).background is False
    assert _check_options("tiny", 0, None, None, None).background is True
