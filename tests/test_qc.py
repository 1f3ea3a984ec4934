"""``diffuse qc``: streaming kernels against whole-array oracles, table scans of synthetic tables with
known hot rows / zero seconds / NaN, the report files, input discovery and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.io.tables import (
    CORRECTED_SCHEMA,
    INTEGRATED_SCHEMA,
    NexusTableWriter,
    open_table,
    write_parquet_part,
)
from pipeline.qc import qc_table
from pipeline.qc.checks import check_data_exposure, check_masked_fraction, overall
from pipeline.qc.inputs import discover_inputs, parse_mdx2_parameters
from pipeline.qc.stats import (
    Histogram,
    RunLengthCounter,
    TopRows,
    VoxelCounter,
    grouped_median,
    grouped_median_oracle,
)
from pipeline.qc.tablescan import QCParams, scan_table, table_kind

DATA = Path(__file__).parent / "data"


# --- kernels vs oracles, across chunkings ----------------------------------------------------------


def _split(a: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return np.split(a, sorted({min(c, a.size) for c in cuts}))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 500), max_size=6), st.integers(0, 2**31 - 1))
def test_histogram_blocks_equal_whole(cuts, seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(0, 3, 500)
    v[rng.integers(0, 500, 5)] = np.nan
    v[rng.integers(0, 500, 3)] = np.inf
    h = Histogram(np.linspace(-4, 4, 17))
    for part in _split(v, cuts):
        h.add(part)
    finite = v[np.isfinite(v)]
    expected, _ = np.histogram(finite[(finite >= -4) & (finite <= 4)], bins=np.linspace(-4, 4, 17))
    assert h.counts.tolist() == expected.tolist()
    assert (h.below, h.above) == (int((finite < -4).sum()), int((finite > 4).sum()))
    assert h.nonfinite == int((~np.isfinite(v)).sum())
    assert h.total == v.size


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 400), max_size=6), st.integers(0, 2**31 - 1), st.booleans())
def test_voxel_counters_equal_np_unique(cuts, seed, shuffle):
    rng = np.random.default_rng(seed)
    keys = np.sort(rng.integers(0, 60, 400))
    if shuffle:
        rng.shuffle(keys)
    _, counts = np.unique(keys, return_counts=True)
    expected = np.bincount(counts)
    general, runs = VoxelCounter(batch_rows=50), RunLengthCounter()
    for part in _split(keys, cuts):
        general.add(part)
        runs.add(part)
    assert general.redundancy().tolist() == expected.tolist()
    assert runs.sorted == (not shuffle or bool(np.all(np.diff(keys) >= 0)))
    if runs.sorted:
        assert runs.redundancy().tolist() == expected.tolist()


@pytest.mark.parametrize(
    "n, spread, batch", [(0, 5, 10), (1, 1, 1), (5000, 50, 700), (200_000, 30_000, 9_000)]
)
def test_voxel_counter_keys_and_counts_are_np_unique(n, spread, batch):
    rng = np.random.default_rng(n)
    keys = rng.integers(-spread, spread, n)
    counter = VoxelCounter(batch_rows=batch)
    for part in np.array_split(keys, 7):
        counter.add(part)
    got, counts = counter.result()
    want, want_counts = np.unique(keys, return_counts=True)
    assert got.tolist() == want.tolist() and counts.tolist() == want_counts.tolist()
    assert got.dtype == counts.dtype == np.int64


def test_grouped_median_matches_oracle():
    rng = np.random.default_rng(3)
    values, groups = rng.normal(size=1001), rng.integers(0, 13, 1001)
    np.testing.assert_allclose(grouped_median(values, groups, 15), grouped_median_oracle(values, groups, 15))
    assert np.isnan(grouped_median(values, groups, 15)[13:]).all()


def test_top_rows_keeps_highest_across_blocks():
    rng = np.random.default_rng(4)
    score = rng.normal(size=1000)
    top = TopRows(7)
    cuts = [100, 350, 351, 900]
    for part, idx in zip(_split(score, cuts), _split(np.arange(1000), cuts), strict=True):
        top.add(part, {"row": idx})
    assert top.sorted()["row"].tolist() == np.argsort(-score)[:7].tolist()


# --- synthetic tables ---------------------------------------------------------------------------------

HOT = [(40.0, 30.0), (400.0, 170.0), (250.0, 5.0)]  # (ix, iy) of the hot rows


def integrated_rows(n=20000, seed=0, zero_seconds=0) -> dict[str, np.ndarray]:
    """Sorted by voxel like integrate's output; rate = water ring over the detector, Poisson counts;
    the first len(HOT) rows after row 1000 get a hot pixel's counts."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    ix, iy = rng.uniform(0, 487, n), rng.uniform(0, 195, n)
    rate = 10 + 15 * np.exp(-(((np.hypot(ix - 240, iy - 100) - 80) / 30) ** 2))
    pixels = rng.integers(1, 300, n)
    seconds = pixels * 0.1
    counts = rng.poisson(rate * seconds)
    hot_rows = 1000 + np.arange(len(HOT)) * 5000
    for row, (x, y) in zip(hot_rows, HOT, strict=True):
        ix[row], iy[row] = x, y
        counts[row] += 50_000 * 20  # one hot pixel at 50k counts per frame over 20 frames
    if zero_seconds:
        seconds[:zero_seconds] = 0
    return {
        "h": (idx // 400 - 25) / 2, "k": (idx // 20 % 20 - 10) / 2, "l": (idx % 20 - 10) / 2,
        "phi": rng.uniform(0, 2, n), "iy": iy, "ix": ix, "seconds": seconds, "counts": counts,
        "pixels": pixels, "n": np.zeros(n),
    }  # fmt: skip


def write_nexus(path: Path, rows: dict, schema=INTEGRATED_SCHEMA, ndiv=(2, 2, 2)) -> Path:
    n = len(rows["h"])
    with NexusTableWriter(path, schema, n, ndiv) as w:
        w.write(0, rows)
        w.commit()
    return path


def write_parquet(path: Path, rows: dict, schema=INTEGRATED_SCHEMA, ndiv=(2, 2, 2), parts=3) -> Path:
    path.mkdir()
    n = len(rows["h"])
    bounds = np.linspace(0, n, parts + 1).astype(int)
    for i in range(parts):
        part = {k: v[bounds[i] : bounds[i + 1]] for k, v in rows.items()}
        write_parquet_part(
            path, i, part, schema, ndiv, "integrated" if schema is INTEGRATED_SCHEMA else "corrected"
        )
    return path


@pytest.fixture(scope="module")
def integrated(tmp_path_factory) -> Path:
    return write_nexus(tmp_path_factory.mktemp("tables") / "integrated.nxs", integrated_rows())


def test_hot_rows_found_and_threshold_separates(integrated):
    stats = scan_table(open_table(integrated))
    assert stats.kind == "integrated"
    found = sorted(zip(stats.candidates["ix"].round(), stats.candidates["iy"].round(), strict=True))
    assert found == sorted(HOT)
    rows = integrated_rows()
    rate = rows["counts"] / rows["seconds"]
    hot = np.zeros(rate.size, bool)
    hot[1000 + np.arange(len(HOT)) * 5000] = True
    t = stats.suggested_threshold
    assert rate[hot].min() > t > rate[~hot].max()
    assert stats.max_non_hot == pytest.approx(rate[~hot].max())
    assert stats.threshold_separates


def test_scan_is_the_same_for_any_block_size_and_for_parquet(integrated, tmp_path):
    ref = scan_table(open_table(integrated))
    parquet = write_parquet(tmp_path / "t.parquet", integrated_rows())
    for source, block in ((open_table(integrated), 777), (open_table(parquet), 5000)):
        other = scan_table(source, QCParams(rows_per_block=block))
        assert other.counts == ref.counts
        assert other.redundancy == ref.redundancy
        assert other.histograms == ref.histograms
        assert other.n_candidates == ref.n_candidates
        assert other.max_non_hot == ref.max_non_hot


def test_zero_seconds_fail_with_phi_range(tmp_path):
    stats = scan_table(open_table(write_nexus(tmp_path / "z.nxs", integrated_rows(zero_seconds=50))))
    assert stats.counts["zero_seconds"] == 50
    assert stats.counts["value_nonfinite"] == 50
    summary = qc_table(tmp_path / "z.nxs", tmp_path / "qc")
    verdicts = {c["name"]: c["verdict"] for c in summary["checks"]}
    assert verdicts["exposure (table)"] == "FAIL" and verdicts["inf/NaN rate"] == "FAIL"
    assert summary["verdict"] == "FAIL"
    message = next(c["message"] for c in summary["checks"] if c["name"] == "exposure (table)")
    assert "50 of 20,000 rows have seconds == 0" in message and "--exposure-time" in message


def corrected_rows(n=5000, seed=1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    intensity = rng.normal(100, 10, n)
    error = np.full(n, 5.0)
    intensity[:7] = np.nan  # background NaN: error finite
    intensity[7:10] = np.inf  # seconds == 0: error inf too
    error[7:10] = np.inf
    intensity[10:12] = np.nan
    error[10:12] = np.nan  # 0 counts / 0 s
    return {
        "h": rng.integers(0, 10, n) / 2, "k": rng.integers(0, 10, n) / 2, "l": rng.integers(0, 10, n) / 2,
        "s": rng.uniform(0, 0.3, n), "intensity": intensity, "intensity_error": error,
        "ix": rng.uniform(0, 487, n), "iy": rng.uniform(0, 195, n), "phi": rng.uniform(0, 2, n),
        "rs_volume": rng.uniform(0, 0.125, n), "n": np.zeros(n), "op": rng.integers(0, 24, n),
    }  # fmt: skip


def test_corrected_nonfinite_counts_and_causes(tmp_path):
    rows = corrected_rows()
    table = write_nexus(tmp_path / "corrected.nxs", rows, CORRECTED_SCHEMA)
    summary = qc_table(table, tmp_path / "qc")
    check = next(c for c in summary["checks"] if c["name"] == "inf/NaN intensity")
    v, e = rows["intensity"].astype(np.float32), rows["intensity_error"].astype(np.float32)
    assert check["verdict"] == "FAIL"
    assert check["details"]["error_nonfinite"] == int((~np.isfinite(e)).sum()) == 5
    assert check["details"]["value_nan"] == int(np.isnan(v).sum()) == 9
    assert check["details"]["value_posinf"] == int(np.isposinf(v).sum()) == 3
    assert "5 with a non-finite error too: division by zero" in check["message"]
    assert "7 with a finite error: NaN background" in check["message"]
    _, counts = np.unique(np.round(np.c_[rows["h"], rows["k"], rows["l"]] * 2), axis=0, return_counts=True)
    assert summary["voxels"] == counts.size
    assert summary["redundancy"] == np.bincount(counts).tolist()


def test_report_files_embed_every_figure(integrated, tmp_path):
    summary = qc_table(integrated, tmp_path / "qc")
    out = tmp_path / "qc"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(summary["figures"].values()) and len(pngs) == 5
    page = (out / "qc.html").read_text()
    assert len(re.findall(r"<img [^>]*src='data:image/png;base64,", page)) == len(pngs)
    assert "<script" not in page and "http" not in page  # self-contained
    for c in summary["checks"]:
        assert c["verdict"] in page and c["name"] in page
    assert json.loads((out / "qc.json").read_text())["verdict"] == summary["verdict"] == "WARN"
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_kind_rejects_other_tables():
    assert table_kind(INTEGRATED_SCHEMA) == "integrated"
    assert table_kind(CORRECTED_SCHEMA) == "corrected"
    with pytest.raises(ValueError, match="not an integrated or corrected"):
        table_kind(["h", "k", "l", "foo"])


def test_checks_on_data_exposure_and_masked_fraction():
    assert check_data_exposure(np.array([0.1, 0.0, 0.0, 0.1]), "d.nxs").verdict == "FAIL"
    assert "frames 1-2" in check_data_exposure(np.array([0.1, 0.0, 0.0, 0.1]), "d.nxs").message
    assert check_data_exposure(np.zeros(3), "d.nxs", override=0.1).verdict == "PASS"
    assert check_data_exposure(None, None).verdict == "SKIP"
    assert check_masked_fraction(100, 90).verdict == "PASS"
    assert check_masked_fraction(100, 10).verdict == "WARN"
    assert check_masked_fraction(100, 0).verdict == "FAIL"
    assert overall([check_masked_fraction(None, None)]) == "PASS"


def test_parse_mdx2_parameters_is_literal_only():
    line = (
        "2026-11-24 19:23:58.476 | INFO | Parameters(geom='geometry.nxs', data='data.nxs', mask='mask.nxs', "
        "subdivide=(2, 2, 2), max_spread=1.0, nproc=2, outfile='integrated.nxs', logfile='x.log')"
    )
    p = parse_mdx2_parameters(line)
    assert p["data"] == "data.nxs" and p["subdivide"] == (2, 2, 2)
    assert parse_mdx2_parameters("Parameters(data=__import__('os').system('true'))") == {}


def test_inputs_found_through_mdx2_logs(tmp_path):
    (tmp_path / "data.nxs").write_bytes(b"")
    (tmp_path / "mask.nxs").write_bytes(b"")
    (tmp_path / "integrated.nxs").write_bytes(b"")
    (tmp_path / "mdx2.integrate.log").write_text(
        "x | INFO | Parameters(geom='g.nxs', data='data.nxs', mask='mask.nxs', outfile='integrated.nxs')\n"
    )
    (tmp_path / "mdx2.correct.log").write_text(
        "x | INFO | Parameters(geom='g.nxs', hkl='integrated.nxs', background=None, "
        "outfile='corrected.nxs')\n"
    )
    found = discover_inputs(tmp_path / "corrected.nxs", "corrected")
    assert found.data == str(tmp_path / "data.nxs") and found.masks == [str(tmp_path / "mask.nxs")]
    assert found.integrated == str(tmp_path / "integrated.nxs")
    assert discover_inputs(tmp_path / "other.nxs", "integrated").data is None


# --- golden mdx2 tables and the CLI -------------------------------------------------------------------


@pytest.mark.skipif(not (DATA / "zero/mdx2/integrated_222.nxs").exists(), reason="golden fixtures missing")
def test_cli_on_mdx2_zero_exposure_table(tmp_path):
    zero = DATA / "zero"
    args = ["qc", zero / "mdx2/integrated_222.nxs", "--outdir", tmp_path / "qc", "--data", zero / "data.nxs"]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--strict"]], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "FAIL exposure (table)" in result.output
    assert "FAIL exposure (data): 8 of 8 frames" in result.output
    summary = json.loads((tmp_path / "qc/qc.json").read_text())
    rows = summary["rows"]
    assert summary["counts"]["zero_seconds"] == rows == summary["counts"]["value_nonfinite"]


@pytest.mark.skipif(not (DATA / "cubic/mdx2/integrated_325.nxs").exists(), reason="golden fixtures missing")
def test_hot_pixels_of_golden_table_are_named(tmp_path):
    cubic = DATA / "cubic"
    truth = sorted(tuple(p) for p in json.loads((cubic / "dataset.json").read_text())["hot_pixels"])
    summary = qc_table(
        cubic / "mdx2/integrated_325.nxs", tmp_path, data=cubic / "data.nxs", mask=cubic / "mask.nxs"
    )
    image = sorted((p["iy"], p["ix"]) for p in summary["hot_pixels"]["image_pixels"])
    assert image == truth
    rows = summary["hot_pixels"]["table_candidates"]
    assert rows and all(r["nearest_hot_pixel"]["distance"] < 25 for r in rows)
    assert {(r["nearest_hot_pixel"]["iy"], r["nearest_hot_pixel"]["ix"]) for r in rows} == set(truth)
    assert summary["hot_pixels"]["threshold_separates"]
