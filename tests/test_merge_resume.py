"""``diffuse merge --resume``: an interrupted merge (a failing task, SIGTERM) keeps its work directory,
and a resumed run redoes only the unfinished map tasks / partitions / split tasks and writes the same
merged table; a work directory of other inputs or options is refused."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask.config
import h5py
import numpy as np
import pytest

import pipeline.graph.merge as gm
from pipeline.config import MergeParams, Tuning
from pipeline.errors import InputError

DATA = Path(__file__).parent / "data"
GOLD = DATA / "merge"
C111 = DATA / "cubic" / "mdx2" / "corrected_111_p1.nxs"
C325 = DATA / "cubic" / "mdx2" / "corrected_325_bkg.nxs"
SCALES = GOLD / "scales_111.nxs"


def _table(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        g = f["/entry/hkl_table"]
        return {k: g[k][()] for k in g}


def assert_same_table(a, b) -> None:
    ta, tb = _table(a), _table(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype, k
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)


def _params(tmp_path: Path, **kw) -> MergeParams:
    tuning = dataclasses.replace(Tuning.from_config(), correct_rows_per_task=200, max_partition_rows=250)
    base = {
        "tables": (str(C111), str(C111)),
        "scales": (str(SCALES),) * 2,
        "outfile": str(tmp_path / "merged.nxs"),
        "split": "randomHalf",
        "tuning": tuning,
    }
    return MergeParams(**{**base, **kw})


def _counting(monkeypatch, name: str, fail_at: int | None = None) -> list[int]:
    """Wrap ``pipeline.graph.merge.<name>``: record the index of every call; raise at ``fail_at``."""
    calls: list[int] = []
    real = getattr(gm, name)

    def wrapped(*args, **kwargs):
        first = args[0]
        index = args[1] if isinstance(first, str) else first.index
        calls.append(index)
        if index == fail_at:
            raise RuntimeError(f"simulated failure of {name} {index}")
        return real(*args, **kwargs)

    monkeypatch.setattr(gm, name, wrapped)
    return calls


@pytest.mark.parametrize("stage", ["run_map_task", "run_partition_task", "run_split_task"])
def test_failed_merge_resumes_with_the_same_table(tmp_path, monkeypatch, stage):
    """A task fails mid-run (random seed drawn by the run, not given): the work directory stays;
    --resume reruns only what has no record, with the same seed, and writes the table of a clean run."""
    (tmp_path / "clean").mkdir()
    params = _params(tmp_path)
    calls = _counting(monkeypatch, stage, fail_at=2)
    with pytest.raises(RuntimeError, match="simulated"):
        gm.run_merge(params, None, threads=1)
    work = tmp_path / ".merged.nxs.work"
    assert (work / "manifest.json").exists() and not (tmp_path / "merged.nxs").exists()
    monkeypatch.undo()
    counts = {n: _counting(monkeypatch, n) for n in ("run_map_task", "run_partition_task", "run_split_task")}
    result = gm.run_merge(dataclasses.replace(params, resume=True), None, threads=1)
    assert not work.exists()
    counts = {name: sorted(c) for name, c in counts.items()}  # before the clean run below adds to them
    # the same seed as the interrupted run drew: the table equals a clean run with that seed
    clean = gm.run_merge(_params(tmp_path / "clean", seed=result.seed), None, threads=1)
    assert_same_table(tmp_path / "merged.nxs", tmp_path / "clean" / "merged.nxs")
    assert clean.rows == result.rows
    # only the unfinished tasks ran again: every task started before the failure finished (the pool
    # lets running tasks end), the failed one and those never started are redone
    done_before = set(calls) - {2}
    total = {"run_map_task": result.map_tasks}.get(stage, result.partitions)
    rerun = counts[stage]
    assert 2 in rerun and rerun == sorted(set(range(total)) - done_before)
    if stage == "run_map_task":
        assert result.map_tasks_skipped == len(done_before)
    elif stage == "run_partition_task":
        assert result.map_tasks_skipped == result.map_tasks and result.partitions_skipped == len(done_before)
        assert counts["run_map_task"] == []
    else:
        assert result.partitions_skipped == result.partitions
        assert counts["run_map_task"] == [] and counts["run_partition_task"] == []


def test_resume_of_a_finished_merge_starts_afresh(tmp_path):
    """Without a work directory (the last run finished), --resume is a plain run."""
    params = _params(tmp_path, split=None, scales=(), tables=(str(C325),))
    first = gm.run_merge(params, None, threads=2)
    again = gm.run_merge(dataclasses.replace(params, resume=True, overwrite=True), None, threads=2)
    assert again.map_tasks_skipped == 0 and again.partitions_skipped == 0 and again.rows == first.rows


def test_resume_refuses_a_workdir_of_other_options(tmp_path, monkeypatch):
    params = _params(tmp_path, seed=3)
    _counting(monkeypatch, "run_partition_task", fail_at=1)
    with pytest.raises(RuntimeError, match="simulated"):
        gm.run_merge(params, None, threads=1)
    monkeypatch.undo()
    for other in ({"outlier": 2.0}, {"seed": 4}, {"tables": (str(C111),), "scales": (str(SCALES),)}):
        with pytest.raises(InputError, match=r"cannot --resume from .*other inputs or parameters"):
            gm.run_merge(dataclasses.replace(params, resume=True, **other), None, threads=1)
    # the refused runs left the interrupted run's directory alone: it still resumes
    result = gm.run_merge(dataclasses.replace(params, resume=True), None, threads=1)
    assert result.partitions_skipped >= 1


def test_bad_input_leaves_no_workdir(tmp_path, monkeypatch):
    from pipeline.errors import InputError as Bad

    def broken(job):
        raise Bad("corrupt rows")

    monkeypatch.setattr(gm, "run_map_task", broken)
    with pytest.raises(Bad):
        gm.run_merge(_params(tmp_path, seed=1), None, threads=1)
    assert not (tmp_path / ".merged.nxs.work").exists()


SLOW_PARTS = """
import sys, time
import pipeline.graph.merge as gm
real = gm.run_partition_task
def slow(job, ndiv):
    if job.index >= 2:
        time.sleep(4)  # SIGTERM arrives meanwhile (the thread finishes its task before the exit)
    return real(job, ndiv)
gm.run_partition_task = slow
from pipeline.cli.app import main
sys.argv = ["diffuse", *sys.argv[1:]]
main()
"""


def test_sigterm_then_resume_from_the_cli(tmp_path):
    """`diffuse merge` killed with SIGTERM while merging partitions exits 143 and keeps its work
    directory; `diffuse merge --resume` finishes it: the same table as an uninterrupted run."""
    from typer.testing import CliRunner

    from pipeline.cli.app import app

    out = tmp_path / "merged.nxs"
    args = ["merge", str(C111), "--scale", str(SCALES), "--split", "weightedRandomHalf", "--seed", "5"]
    args += ["--outfile", str(out), "--workers", "1", "--quiet"]
    small = {
        "DASK_DIFFUSE__CORRECT__ROWS_PER_TASK": "200",
        "DASK_DIFFUSE__REDUCE__MAX_PARTITION_ROWS": "250",
    }
    env = {**os.environ, **small}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PARTS, *args], env=env, stderr=subprocess.PIPE)
    work = tmp_path / ".merged.nxs.work"
    deadline = time.monotonic() + 60
    while not (work / "reduce" / "part-00001.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the merge did not reach its partitions"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert work.exists() and not out.exists()
    runner = CliRunner()
    with dask.config.set({"diffuse.correct.rows-per-task": 200, "diffuse.reduce.max-partition-rows": 250}):
        result = runner.invoke(app, [*args, "--resume"])
        assert result.exit_code == 0, result.output
        assert not work.exists()
        clean = tmp_path / "clean.nxs"
        result = runner.invoke(app, [*args[:-5], "--outfile", str(clean), "--quiet"])
        assert result.exit_code == 0, result.output
    assert_same_table(out, clean)
