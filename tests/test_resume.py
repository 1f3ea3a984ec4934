"""Resume and faults: an interrupted run finishes with ``--resume`` without redoing finished map tasks,
and a worker killed mid-run does not change the result (issue: fine subdivision, resume and faults).

A worker *preload* slows every map task down so that the interruptions land mid-run; the tasks
themselves are the real ones. Outputs are compared with a run that was not interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import pipeline

pytestmark = pytest.mark.slow

SLOW_MAP = textwrap.dedent(
    """
    # worker preload: every map task takes at least {delay} s longer (the test's only change).
    # Idempotent: a worker may run its preloads more than once.
    import time
    import pipeline.graph.tasks as tasks

    _run = getattr(tasks, "_unpatched_run_map_task", tasks.run_map_task)
    tasks._unpatched_run_map_task = _run

    def run_map_task(task, ctx):
        time.sleep({delay})
        return _run(task, ctx)

    tasks.run_map_task = run_map_task
    """
)


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: v[()] for k, v in f["/entry/hkl_table"].items()}


def _assert_same_table(a: Path, b: Path) -> None:
    ta, tb = _read(a), _read(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, client):
    """The cubic fixture integrated at 2 2 2 without interruption."""
    root = Path(__file__).parent / "data" / "cubic"
    out = tmp_path_factory.mktemp("ref") / "integrated.nxs"
    pipeline.integrate(
        root / "geometry.nxs",
        root / "data.nxs",
        mask=root / "mask.nxs",
        subdivide=(2, 2, 2),
        outfile=out,
        client=client,
    )
    return root, out


def _wait_for_records(workdir: Path, n: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = list((workdir / "map").glob("task-*.json")) if (workdir / "map").exists() else []
        if len(done) >= n:
            return len(done)
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {n} map tasks finished in {timeout} s")


def test_killed_run_resumes_without_redoing_tasks(tmp_path, reference, client):
    root, ref_out = reference
    out, workdir, preload = tmp_path / "integrated.nxs", tmp_path / "work", tmp_path / "slow_map.py"
    preload.write_text(SLOW_MAP.format(delay=1.0))
    script = textwrap.dedent(
        f"""
        import pipeline
        from distributed import LocalCluster, Client
        if __name__ == "__main__":
            with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0",
                              preload=[{str(preload)!r}]) as c, Client(c) as client:
                pipeline.integrate({str(root / "geometry.nxs")!r}, {str(root / "data.nxs")!r},
                                   mask={str(root / "mask.nxs")!r}, subdivide=(2, 2, 2), outfile={str(out)!r},
                                   workdir={str(workdir)!r}, client=client)
        """
    )
    # its own session, so that killing the group kills the workers too (as a job hitting walltime)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, cwd=tmp_path)
    try:
        finished = _wait_for_records(workdir, 2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not out.exists(), "an interrupted run must not leave an output that looks complete"
    finished = len(list((workdir / "map").glob("task-*.json")))

    result = pipeline.integrate(
        root / "geometry.nxs",
        root / "data.nxs",
        mask=root / "mask.nxs",
        subdivide=(2, 2, 2),
        outfile=out,
        workdir=workdir,
        resume=True,
        client=client,
    )
    assert result.map_tasks_skipped == finished >= 2
    assert result.map_tasks_skipped < result.map_tasks
    _assert_same_table(out, ref_out)
    assert not workdir.exists(), "the work directory is removed after a successful run"


def test_resume_refuses_a_workdir_of_other_parameters(tmp_path, reference, client):
    root, _ = reference
    workdir = tmp_path / "work"
    pipeline.integrate(
        root / "geometry.nxs",
        root / "data.nxs",
        subdivide=(2, 2, 2),
        outfile=tmp_path / "a.nxs",
        workdir=workdir,
        keep_workdir=True,
        client=client,
    )
    with pytest.raises(pipeline.errors.InputError, match="other inputs or parameters"):
        pipeline.integrate(
            root / "geometry.nxs",
            root / "data.nxs",
            subdivide=(3, 3, 3),
            outfile=tmp_path / "b.nxs",
            workdir=workdir,
            resume=True,
            client=client,
        )


def test_killed_worker_does_not_change_the_result(tmp_path, reference):
    from distributed import Client, LocalCluster

    root, ref_out = reference
    out, workdir, preload = tmp_path / "integrated.nxs", tmp_path / "work", tmp_path / "slow_map.py"
    preload.write_text(SLOW_MAP.format(delay=0.5))
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            preload=[str(preload)],
        ) as cluster,
        Client(cluster) as client,
    ):
        errors = []

        def run():
            try:
                pipeline.integrate(
                    root / "geometry.nxs",
                    root / "data.nxs",
                    mask=root / "mask.nxs",
                    subdivide=(2, 2, 2),
                    outfile=out,
                    workdir=workdir,
                    client=client,
                )
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        _wait_for_records(workdir, 1)
        victim, pid = next(iter(client.run(os.getpid).items()))
        os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker; the scheduler reruns its task
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert not errors, errors
        assert victim not in client.scheduler_info()["workers"] or client.run(os.getpid)[victim] != pid
    _assert_same_table(out, ref_out)


def test_map_records_describe_their_runs(tmp_path, reference, client):
    root, _ = reference
    workdir = tmp_path / "work"
    pipeline.integrate(
        root / "geometry.nxs",
        root / "data.nxs",
        subdivide=(2, 2, 2),
        outfile=tmp_path / "a.nxs",
        workdir=workdir,
        keep_workdir=True,
        client=client,
    )
    records = [json.loads(p.read_text()) for p in sorted((workdir / "map").glob("task-*.json"))]
    assert records and all(r["runs"] for r in records)
    for record in records:
        for run in record["runs"]:
            rows = np.load(workdir / "map" / run["file"], mmap_mode="r")
            assert rows.size == run["rows"] == sum(run["h_counts"])
            assert np.all(np.diff(rows["key"]) >= 0), "runs are sorted by voxel key"
