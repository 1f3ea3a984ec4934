"""The steps after ``import-geometry`` read the detector's own files, as ``integrate`` does: ``find-peaks``,
``mask-peaks`` and ``reintegrate`` on an Eiger master file (made from the golden dataset ``cubic`` by
scripts/nxs_to_eiger.py) give mdx2 1.0.5's outputs of the data.nxs, given that data.nxs's chunks
(``--chunks``: mdx2 works chunk by chunk, so the order of the peaks and the per-chunk arithmetic follow
them). The golden outputs are the ones tests/test_peaks.py and tests/test_reintegrate.py compare with.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_peaks import CASES as PEAK_CASES
from test_peaks import GOLD, _assert_same_mask, _assert_same_peaks
from test_reintegrate import CASES as REINTEGRATE_CASES
from test_reintegrate import assert_same, options, read_mdx2
from typer.testing import CliRunner

import pipeline
from pipeline.api.find_peaks import find_peaks
from pipeline.api.mask_peaks import mask_peaks
from pipeline.cli import app
from pipeline.errors import ConfigError
from pipeline.io.peaks import read_peaks

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
CUBIC = DATA / "cubic"
CHUNKS = (5, 64, 100)  # tests/data/cubic/data.nxs's storage chunks: what mdx2 worked by


@pytest.fixture(scope="module")
def master(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eiger")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "nxs_to_eiger.py"), str(CUBIC / "data.nxs"), str(out),
         "--expt", str(CUBIC / "experiment.expt")],  # phi0 and dphi as the .expt has them
        check=True,
        capture_output=True,
    )  # fmt: skip
    return out / "eiger_master.h5"


@pytest.mark.golden
def test_find_and_mask_peaks_on_the_master_equal_mdx2(master, tmp_path):
    case = PEAK_CASES["cubic"]
    peaks = tmp_path / "peaks.nxs"
    find_peaks(
        CUBIC / "geometry.nxs",
        master,
        case["count_threshold"],
        sigma_cutoff=case["sigma_cutoff"],
        chunks=CHUNKS,
        outfile=peaks,
    )
    _assert_same_peaks(peaks, GOLD / "cubic" / "peaks.nxs")
    for out, (sigma, bragg) in case["masks"].items():
        mask_peaks(
            CUBIC / "geometry.nxs",
            master,
            GOLD / "cubic" / "peaks.nxs",
            sigma_cutoff=sigma,
            bragg=bragg,
            chunks=CHUNKS,
            outfile=tmp_path / out,
        )
        _assert_same_mask(tmp_path / out, GOLD / "cubic" / out)


@pytest.mark.golden
def test_reintegrate_on_the_master_equals_mdx2(master, tmp_path, client):
    name = "cubic_325_scale_bkg_intensity"
    case = REINTEGRATE_CASES[name]
    pipeline.reintegrate(
        CUBIC / "geometry.nxs",
        master,
        outfile=tmp_path / "r.nxs",
        chunks=CHUNKS,
        client=client,
        **options(case),
    )
    assert_same(read_mdx2(DATA / case["reference"]), pipeline.read_table(tmp_path / "r.nxs"))


def test_cli_find_peaks_on_the_master_with_default_chunks(master, tmp_path):
    """Through the command line: the detector file is accepted as DATA, and without ``--chunks`` the
    peaks are the same pixels (in mdx2.import_data's chunk order)."""
    out = tmp_path / "p.nxs"
    case = PEAK_CASES["cubic"]
    result = CliRunner().invoke(
        app,
        ["find-peaks", str(CUBIC / "geometry.nxs"), str(master),
         "--count-threshold", str(case["count_threshold"]), "--outfile", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ours, ref = read_peaks(out), read_peaks(GOLD / "cubic" / "peaks.nxs")
    key = lambda t: sorted(zip(t.phi.tolist(), t.iy.tolist(), t.ix.tolist(), strict=True))  # noqa: E731
    assert key(ours) == key(ref)


@pytest.mark.parametrize("bad", [(0, 1, 1), (2, 2), ("a", 1, 1)])
def test_bad_chunks_are_refused(bad, tmp_path):
    with pytest.raises(ConfigError, match="chunks"):
        find_peaks(CUBIC / "geometry.nxs", CUBIC / "data.nxs", 20, chunks=bad, outfile=tmp_path / "p.nxs")
    with pytest.raises(ConfigError, match="chunks"):
        mask_peaks(CUBIC / "geometry.nxs", CUBIC / "data.nxs", GOLD / "cubic" / "peaks.nxs", chunks=bad,
                   outfile=tmp_path / "m.nxs")  # fmt: skip
    assert not list(tmp_path.iterdir())


@pytest.mark.golden
def test_cli_run_on_the_master_gives_mdx2s_reintegrated_table(master, tmp_path):
    """``diffuse run`` on the detector file, the whole chain to a map: reintegrated.nxs is mdx2's."""
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["run", str(CUBIC / "geometry.nxs"), str(master), "--outdir", str(out), "--chunks", *map(str, CHUNKS),
         "--subdivide", "1", "1", "1", "--background", str(CUBIC / "bkg_data_binned.nxs"),
         "--scale", str(DATA / "reintegrate" / "cubic_scales.nxs"), "--reintegrate", "3", "2", "5",
         "--map-limits", "-3", "3", "-3", "3", "0", "0", "--no-scan-images", "--workers", "1", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ref = read_mdx2(DATA / "reintegrate" / "cubic_325_scale_bkg_intensity.nxs")
    assert_same(ref, pipeline.read_table(out / "reintegrated.nxs"))
    assert (out / "map.nxs").is_file()
