"""estimate, bench sweep, and the memory-bounding knobs of integrate."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import dask.config
import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.cli.bench import parse_subdivisions
from pipeline.config import IntegrateParams
from pipeline.errors import ConfigError
from pipeline.graph.estimate import _spread_sample, estimate_integration
from pipeline.graph.integrate import choose_partitions

CUBIC = Path(__file__).parent / "data" / "cubic"


def _table(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: v[()] for k, v in f["/entry/hkl_table"].items()}


def _same(a: Path, b: Path) -> None:
    ta, tb = _table(a), _table(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, client):
    out = tmp_path_factory.mktemp("ref") / "integrated.nxs"
    result = pipeline.integrate(
        CUBIC / "geometry.nxs",
        CUBIC / "data.nxs",
        mask=CUBIC / "mask.nxs",
        subdivide=(2, 2, 2),
        outfile=out,
        client=client,
    )
    return out, result


def test_estimate_is_within_30_percent(reference):
    _, actual = reference
    params = IntegrateParams(
        CUBIC / "geometry.nxs",
        CUBIC / "data.nxs",
        mask=CUBIC / "mask.nxs",
        subdivide=(2, 2, 2),
        outfile="x.nxs",
    )
    e = estimate_integration(params, n_workers=2, worker_memory=4 * 2**30, n_samples=12)
    assert e.sampled_chunks < 60  # a sample, not the whole stack
    assert abs(e.partial_rows - actual.partial_rows) <= 0.3 * actual.partial_rows
    assert abs(e.output_rows - actual.rows) <= 0.3 * actual.rows
    assert e.peak_memory_total > e.peak_memory_per_worker > 0
    assert e.scratch_bytes >= e.partial_rows * 56  # the spilled partial rows at least
    assert e.output_nexus_bytes >= e.output_rows * 44 > 0


def test_estimate_cli_prints_json():
    result = CliRunner().invoke(
        app,
        [
            "estimate",
            str(CUBIC / "geometry.nxs"),
            str(CUBIC / "data.nxs"),
            "--subdivide",
            "2",
            "2",
            "2",
            "--json",
            "--workers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["partial_rows"] > 0 and figures["map_tasks"] >= 1


def test_spread_sample_covers_every_axis():
    picks = _spread_sample([2, 12, 5], 12)
    assert len(set(picks)) == 12
    for axis, size in enumerate((2, 12, 5)):
        assert len({p[axis] for p in picks}) == size  # no aliasing with the grid (e.g. always x = 0)


def test_a_zarr_cache_of_the_removed_convert_is_refused_with_the_reason(tmp_path):
    """'diffuse convert' was removed (its cache was not faster to integrate, docs/SPEED.md): an old
    cache given as data is refused with that reason, not as "a directory"."""
    cache = tmp_path / "data.zarr"
    cache.mkdir()
    (cache / "zarr.json").write_text("{}")
    result = CliRunner().invoke(app, ["integrate", str(CUBIC / "geometry.nxs"), str(cache)])
    assert result.exit_code == 1
    assert "no longer read" in result.output and "diffuse convert" in result.output


def test_tiny_runs_and_partitions_give_the_same_table(tmp_path, reference, client):
    """Spilling in runs of a few rows and reducing in many partitions changes nothing."""
    ref, _ = reference
    out = tmp_path / "small_runs.nxs"
    settings = {"diffuse.integrate.max-run-rows": 500, "diffuse.reduce.max-partition-rows": 700}
    with dask.config.set(settings):
        result = pipeline.integrate(
            CUBIC / "geometry.nxs",
            CUBIC / "data.nxs",
            mask=CUBIC / "mask.nxs",
            subdivide=(2, 2, 2),
            outfile=out,
            client=client,
        )
    assert result.partitions > 4
    _same(out, ref)


def test_choose_partitions_respects_the_row_budget():
    counts = np.array([5, 0, 7, 3, 3, 0, 9, 1])
    ranges = choose_partitions(counts, max_rows=10, min_partitions=1)
    assert ranges[0][0] == 0 and ranges[-1][1] == counts.size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous
    assert len(ranges) >= 3
    assert max(counts[lo:hi].sum() for lo, hi in ranges) <= 10
    assert choose_partitions(np.array([50, 1]), max_rows=10) == [(0, 1), (1, 2)]  # one H stays whole


def test_bench_sweep_writes_csv_and_png(tmp_path):
    outdir = tmp_path / "sweep"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "sweep",
            str(CUBIC / "geometry.nxs"),
            str(CUBIC / "data.nxs"),
            "--mask",
            str(CUBIC / "mask.nxs"),
            "--subdivisions",
            "1,2",
            "--outdir",
            str(outdir),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    with open(outdir / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["subdivide"] for r in rows] == ["1 1 1", "2 2 2"]
    assert all(float(r["peak_tree_rss_mb"]) > 50 and int(r["rows"]) > 0 for r in rows)
    assert (outdir / "sweep.png").stat().st_size > 1000


def test_parse_subdivisions():
    assert parse_subdivisions("1, 2,3x2x5") == [(1, 1, 1), (2, 2, 2), (3, 2, 5)]
    with pytest.raises(ConfigError):
        parse_subdivisions("1,0")
    with pytest.raises(ConfigError):
        parse_subdivisions("a")


def test_help_groups_every_command():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Other" not in result.output
    for panel in ("Reduce", "Check", "Prepare inputs", "Clusters"):
        assert panel in result.output


def test_local_threads_without_a_scheduler_give_the_same_table(tmp_path, reference):
    """A local run on threads (no client given, reads that release the GIL) uses the light in-process
    executor, not a dask cluster: same table, and the run log says so and has the time budget."""
    ref, _ = reference
    out, log_file = tmp_path / "threads.nxs", tmp_path / "threads.log"
    result = pipeline.integrate(
        CUBIC / "geometry.nxs", CUBIC / "data.nxs", mask=CUBIC / "mask.nxs", subdivide=(2, 2, 2),
        outfile=out, cluster="local", log_file=log_file,
    )  # fmt: skip
    _same(out, ref)
    text = log_file.read_text()
    assert "threads://this-process" in text
    for stage in ("startup", "cluster", "map_tasks_read", "map_tasks_bin", "map_tasks_spill", "reduce_tasks"):
        assert stage in result.seconds, stage


def test_thread_client_cancels_what_has_not_started():
    import threading

    from pipeline.cluster.threads import ThreadClient
    from pipeline.graph.run_tasks import run_tasks

    gate, started = threading.Event(), []

    def task(i):
        started.append(i)
        if i == 0:
            raise ValueError("first task fails")
        gate.wait(5)
        return i

    with ThreadClient(1) as c, pytest.raises(ValueError, match="first task fails"):
        with run_tasks(c, task, list(range(5)), name="t") as results:
            list(results)
    gate.set()
    assert started == [0]
