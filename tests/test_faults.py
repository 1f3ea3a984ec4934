"""Fault injection, for real: killed processes (SIGKILL, SIGTERM), full filesystems (a small tmpfs),
two runs on one output, damaged and truncated files, a work directory of another run.

Each fault is real: the signal is sent to the real process, the filesystem really fills up, the file
really is damaged on disk. The only help the tests give is time: ``RUNNER`` runs the ``diffuse``
command with each map task, reduce task and exported part delayed and announced by a marker file, so
that a signal lands in the stage it is meant for. Outcomes are compared with a run that was not
interrupted (the same table, row for row), and nothing may look complete after a failure: no file
under a final name, no temporary left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.errors import InputError, OutputInUseError

DATA = Path(__file__).parent / "data"
SUBDIVIDE = (2, 2, 2)

RUNNER = textwrap.dedent(
    """
    # `diffuse` with every map task, reduce task and exported part delayed by FAULT_DELAY seconds and
    # announced by a file in FAULT_MARKS (stage-counter), so a signal can land in a given stage.
    import itertools, os, sys, time
    from pathlib import Path

    import pipeline.graph.integrate as gi

    marks, delay = Path(os.environ["FAULT_MARKS"]), float(os.environ["FAULT_DELAY"])
    counter = itertools.count()

    def slowed(stage, func):
        def run(*args, **kwargs):
            (marks / f"{stage}-{next(counter)}").touch()
            time.sleep(delay)
            return func(*args, **kwargs)
        return run

    gi.run_map_task = slowed("map", gi.run_map_task)
    gi.run_reduce_task = slowed("reduce", gi.run_reduce_task)
    gi._append_part = slowed("export", gi._append_part)

    from pipeline.cli.app import main

    sys.argv[0] = "diffuse"
    main()
    """
)


# --- helpers -----------------------------------------------------------------------------------------


def read_nexus(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: v[()] for k, v in f["/entry/hkl_table"].items()}


def assert_same_table(a: Path, b: Path) -> None:
    ta, tb = read_nexus(a), read_nexus(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)


def assert_same_parquet(a: Path, b: Path) -> None:
    ta, tb = pipeline.read_table(a), pipeline.read_table(b)
    assert list(ta.columns) == list(tb.columns)
    for name in ta.columns:
        np.testing.assert_array_equal(ta[name].to_numpy(), tb[name].to_numpy(), err_msg=name)


def temporaries(*dirs: Path) -> list[str]:
    return sorted(str(p) for d in dirs if d.exists() for p in d.rglob("*") if ".tmp-" in p.name)


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError(f"{what}: not within {timeout} s")


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A real tmpfs of ``size`` mounted on ``path`` (skip if this process may not mount)."""
    path.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, client):
    """The cubic fixture integrated without interruption (NeXus and parquet)."""
    out = tmp_path_factory.mktemp("ref")
    pipeline.integrate(
        DATA / "cubic/geometry.nxs",
        DATA / "cubic/data.nxs",
        mask=DATA / "cubic/mask.nxs",
        subdivide=SUBDIVIDE,
        outfile=out / "integrated.nxs",
        parquet=out / "integrated.parquet",
        client=client,
    )
    return out / "integrated.nxs", out / "integrated.parquet"


@pytest.fixture
def slow_diffuse(tmp_path):
    """``slow_diffuse(*args, delay=)``: start ``diffuse ARGS`` (a real process; tasks on threads of
    that process) with every stage delayed; returns (process, marks directory)."""
    runner = tmp_path / "slow_diffuse.py"
    runner.write_text(RUNNER)
    marks = tmp_path / "marks"
    marks.mkdir()
    procs = []

    def start(*args, delay: float = 0.3, **extra_env):
        env = {
            **os.environ,
            "FAULT_MARKS": str(marks),
            "FAULT_DELAY": str(delay),
            "COLUMNS": "200",
            **extra_env,
        }
        proc = subprocess.Popen(
            [sys.executable, str(runner), *map(str, args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        procs.append(proc)
        return proc, marks

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def integrate_args(out: Path, *extra):
    cubic = DATA / "cubic"
    return [
        "integrate", cubic / "geometry.nxs", cubic / "data.nxs", "--mask", cubic / "mask.nxs",
        "--subdivide", *SUBDIVIDE, "--outfile", out / "integrated.nxs",
        "--parquet", out / "integrated.parquet", "--workers", "2", "--quiet", *extra,
    ]  # fmt: skip


def api_integrate(out: Path, client, **options):
    cubic = DATA / "cubic"
    return pipeline.integrate(
        cubic / "geometry.nxs",
        cubic / "data.nxs",
        mask=cubic / "mask.nxs",
        subdivide=SUBDIVIDE,
        outfile=out / "integrated.nxs",
        parquet=out / "integrated.parquet",
        client=client,
        **options,
    )


def marked(marks: Path, stage: str) -> int:
    return len(list(marks.glob(f"{stage}-*")))


# --- a killed client ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["map", "reduce", "export"])
def test_client_killed_then_resume_and_rerun_give_the_same_table(
    tmp_path, slow_diffuse, client, reference, stage
):
    out = tmp_path / "out"
    out.mkdir()
    # map tasks slow enough that 2 of 6 are done while the rest run (the lock check below takes time);
    # each task's sorted runs go to files at once (not held in memory first: see the next test)
    proc, marks = slow_diffuse(
        *integrate_args(out),
        delay=1.0 if stage == "map" else 0.3,
        DASK_DIFFUSE__INTEGRATE__HELD_RUN_SECONDS="0",
    )
    work = out / ".integrated.nxs.work"
    if stage == "map":  # some map tasks done, not all (6 tasks, 2 at a time)
        wait_for(lambda: len(list((work / "map").glob("task-*.json"))) >= 2, "two map tasks done")
        # a second run on the same output, while the first lives: refused at once (real lock, real process)
        with pytest.raises(OutputInUseError, match=f"PID {proc.pid}"):
            api_integrate(out, client)
    else:
        wait_for(lambda: marked(marks, stage) >= 1 or proc.poll() is not None, f"{stage} started")
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "integrated.nxs").exists() and not (out / "integrated.parquet").exists()
    if stage == "map":
        assert 2 <= len(list((work / "map").glob("task-*.json"))) < 6
    rerun = tmp_path / "rerun"
    shutil.copytree(out, rerun, symlinks=True)  # the killed run's leftovers, for a plain rerun
    result = api_integrate(out, client, resume=True)
    assert result.map_tasks_skipped >= (2 if stage == "map" else 6)
    api_integrate(rerun, client)  # no --resume: the dead run's work directory and temporaries go
    for d in (out, rerun):
        assert_same_table(d / "integrated.nxs", reference[0])
        assert_same_parquet(d / "integrated.parquet", reference[1])
        assert temporaries(d) == [] and not (d / ".integrated.nxs.work").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_runs_held_in_memory_are_kept_for_resume_unless_killed_outright(
    tmp_path, slow_diffuse, client, reference, signum
):
    """A run of threads in one process holds its map tasks' sorted runs in memory (for the map stage's
    first seconds): a SIGTERM writes them and their records first, so --resume skips those tasks; a
    SIGKILL loses them (no record was written), and --resume does them again. Both give the table."""
    out = tmp_path / "out"
    out.mkdir()
    proc, marks = slow_diffuse(*integrate_args(out), delay=1.0)
    wait_for(lambda: marked(marks, "map") >= 4 or proc.poll() is not None, "two map tasks done")
    assert proc.poll() is None, proc.communicate()
    work = out / ".integrated.nxs.work"
    assert not list((work / "map").glob("task-*")), "held runs were written early"
    proc.send_signal(signum)
    proc.communicate(timeout=120)
    records = list((work / "map").glob("task-*.json"))
    if signum == signal.SIGTERM:
        assert proc.returncode == 143
        assert 2 <= len(records) < 6
        assert len(list((work / "map").glob("task-*.npy"))) >= len(records)
    else:
        assert records == []
    result = api_integrate(out, client, resume=True)
    assert result.map_tasks_skipped == len(records)
    assert_same_table(out / "integrated.nxs", reference[0])
    assert temporaries(out) == [] and not work.exists()


@pytest.mark.slow
def test_sigterm_exits_143_and_leaves_nothing_half_written(tmp_path, slow_diffuse, client, reference):
    out = tmp_path / "out"
    out.mkdir()
    proc, marks = slow_diffuse(*integrate_args(out), delay=0.5)
    wait_for(lambda: marked(marks, "reduce") >= 1 or proc.poll() is not None, "reduce started")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "terminated", stderr
    assert not (out / "integrated.nxs").exists() and not (out / "integrated.parquet").exists()
    assert temporaries(out) == [], "temporaries left behind"
    assert not list(out.glob(".*.lock")), "lock left behind"
    # the finished map tasks are kept for --resume, and resuming gives the table
    assert len(list((out / ".integrated.nxs.work/map").glob("task-*.json"))) == 6
    api_integrate(out, client, resume=True)
    assert_same_table(out / "integrated.nxs", reference[0])


@pytest.mark.slow
def test_run_killed_in_integrate_then_resume(tmp_path, slow_diffuse, client, reference):
    """``diffuse run`` (the batch job) killed by SIGTERM while integrating: exit 143, one line, only its
    records kept; ``--resume`` reuses the finished map tasks and gives the same table."""
    from pipeline.api.run import run_pipeline

    out = tmp_path / "run"
    cubic = DATA / "cubic"
    args = [
        "run", cubic / "geometry.nxs", cubic / "data.nxs", "--mask", cubic / "mask.nxs",
        "--subdivide", *SUBDIVIDE, "--outdir", out, "--no-scan-images", "--workers", "2", "--quiet",
    ]  # fmt: skip
    proc, marks = slow_diffuse(*args, delay=1.0)
    # two map tasks done (their runs held in memory, written on the way out)
    wait_for(lambda: marked(marks, "map") >= 4, "two map tasks done")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines() == ["terminated"], stderr  # no worker warnings either
    assert sorted(p.name for p in out.iterdir()) == [".diffuse-run.json", ".integrated.nxs.work", "run.log"]
    result = run_pipeline(
        cubic / "geometry.nxs", cubic / "data.nxs", out, mask=cubic / "mask.nxs", subdivide=SUBDIVIDE,
        scan_images=False, client=client, resume=True,
    )  # fmt: skip
    assert result.skipped == [] and result.integrate.map_tasks_skipped >= 2
    assert_same_table(out / "integrated.nxs", reference[0])
    assert_same_parquet(out / "integrated.parquet", reference[1])


# --- a killed worker ---------------------------------------------------------------------------------

SLOW_WORKER = textwrap.dedent(
    """
    # worker preload: map and reduce tasks take {delay} s longer and announce themselves in {marks}
    import itertools, os, time
    from pathlib import Path
    import pipeline.graph.tasks as tasks

    counter = itertools.count()

    def slowed(stage, func):
        def run(*args, **kwargs):
            (Path({marks!r}) / f"{{stage}}-{{os.getpid()}}-{{next(counter)}}").touch()
            time.sleep({delay})
            return func(*args, **kwargs)
        run.unpatched = func
        return run

    for name, stage in (("run_map_task", "map"), ("run_reduce_task", "reduce")):
        func = getattr(tasks, name)
        setattr(tasks, name, slowed(stage, getattr(func, "unpatched", func)))
    """
)


@pytest.mark.slow
def test_worker_killed_mid_map_and_mid_reduce_gives_the_same_table(tmp_path, reference):
    from distributed import Client, LocalCluster

    import pipeline.graph.integrate as gi
    import pipeline.graph.tasks as tasks

    marks = tmp_path / "marks"
    marks.mkdir()
    preload = tmp_path / "slow_worker.py"
    preload.write_text(SLOW_WORKER.format(delay=0.4, marks=str(marks)))
    # the client submits tasks by reference; the workers' preload slows them down
    assert gi.run_map_task is tasks.run_map_task
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            preload=[str(preload)],
        ) as cluster,
        Client(cluster) as c,
    ):
        for stage in ("map", "reduce"):
            out = tmp_path / stage
            out.mkdir()
            for m in marks.iterdir():
                m.unlink()
            errors: list[BaseException] = []

            def run(out=out, errors=errors):
                try:
                    api_integrate(out, c)
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            thread = threading.Thread(target=run)
            thread.start()
            wait_for(lambda stage=stage: marked(marks, stage) >= 1, f"{stage} started")
            pid = int(next(marks.glob(f"{stage}-*")).name.split("-")[1])  # the worker running it
            os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker; the scheduler reruns its task
            thread.join(timeout=180)
            assert not thread.is_alive() and not errors, errors
            assert_same_table(out / "integrated.nxs", reference[0])
            assert_same_parquet(out / "integrated.parquet", reference[1])
            assert temporaries(out) == []


# --- full filesystems --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "full, size",
    [("outfile", "400k"), ("parquet", "48k"), ("workdir", "400k")],
)
def test_disk_full_is_one_line_with_the_space_needed(tmp_path, scheduler_address, full, size):
    disk = tmp_path / "disk"
    out = tmp_path / "out"
    out.mkdir()
    with tmpfs(disk, size):
        paths = {
            "outfile": out / "integrated.nxs",
            "parquet": out / "integrated.parquet",
            "workdir": out / "work",
        }
        paths[full] = disk / paths[full].name
        cubic = DATA / "cubic"
        result = cli(
            "integrate", cubic / "geometry.nxs", cubic / "data.nxs", "--mask", cubic / "mask.nxs",
            "--subdivide", 4, 4, 4, "--outfile", paths["outfile"], "--parquet", paths["parquet"],
            "--workdir", paths["workdir"], "--cluster", scheduler_address, "--quiet",
        )  # fmt: skip
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        error = lines[-1]
        assert error.startswith("error: no space left on the device writing"), result.stderr
        assert str(disk) in error and "needs about" in error, error
        assert any("WARNING" in line and "may run out of space" in line for line in lines), "no warning first"
        # nothing under a final name, no temporary, and what is on the full disk is gone
        assert not paths["outfile"].exists() and not paths["parquet"].exists()
        assert temporaries(disk, out) == []
        left = sorted(p.name for p in disk.iterdir())
        assert left in ([], ["integrated.nxs.log"]), left
        if full == "workdir":
            assert not paths["workdir"].exists()
        else:  # the work directory sits elsewhere: kept, and the message says so
            assert "--resume" in error and paths["workdir"].exists()


@pytest.mark.parametrize("how", ["sampled", "first-task"])
def test_free_space_is_checked_before_the_run(tmp_path, scheduler_address, monkeypatch, how):
    """A filesystem too small for the run is reported as a warning (the estimate may be high) before
    the run fails on it with the one-line error: before any task runs when a few chunks are cheap to
    sample, else as soon as the first map task is done."""
    import pipeline.graph.space as space

    if how == "first-task":  # as for a dataset with large storage chunks
        monkeypatch.setattr(space, "CHEAP_SAMPLE_PIXELS", 0)
    disk = tmp_path / "disk"
    with tmpfs(disk, "64k"):
        cubic = DATA / "cubic"
        result = cli(
            "integrate", cubic / "geometry.nxs", cubic / "data.nxs", "--subdivide", 4, 4, 4,
            "--outfile", disk / "integrated.nxs", "--workdir", tmp_path / "work",
            "--cluster", scheduler_address, "--quiet",
        )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert "WARNING" in lines[0] and "free on the filesystem of" in lines[0] and "needs about" in lines[0]
    assert result.exit_code == 1 and lines[-1].startswith("error: no space left"), result.stderr


# --- damaged inputs ----------------------------------------------------------------------------------


def _flip_first_chunk(path: Path, nbytes: int = 64) -> tuple[int, ...]:
    """Flip ``nbytes`` bytes in the middle of the first stored chunk of the image data in ``path``."""
    with h5py.File(path, "r") as f:
        info = f["/entry/image_series/data"].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    middle = info.byte_offset + info.size // 2
    for i in range(middle, middle + nbytes):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    return info.chunk_offset


@pytest.mark.parametrize("filters", ["shuffle+deflate", "deflate+fletcher32"])
def test_corrupt_chunk_names_file_dataset_and_chunk(dataset_copy, tmp_path, scheduler_address, filters):
    """The issue's recipe: 64 flipped bytes in the first gzip chunk of a datastore file. Read by our
    own chunk reader (shuffle + deflate, libdeflate) or by h5py (a filter pipeline it must decode)."""
    ds = dataset_copy("cubic")
    source = ds / "datastore/data_1.nxs"
    if filters == "deflate+fletcher32":  # rewrite the source with a checksum filter: read through h5py
        with h5py.File(source, "r") as f:
            data, chunks = f["/entry/image_series/data"][()], f["/entry/image_series/data"].chunks
        with h5py.File(source, "r+") as f:
            del f["/entry/image_series/data"]
            f.create_dataset(
                "/entry/image_series/data", data=data, chunks=chunks, compression="gzip", fletcher32=True
            )
    origin = _flip_first_chunk(source)
    out = tmp_path / "out"
    out.mkdir()
    result = cli(
        "integrate", ds / "geometry.nxs", ds / "data.nxs", "--outfile", out / "integrated.nxs",
        "--parquet", out / "integrated.parquet", "--cluster", scheduler_address, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    for word in ("data_1.nxs", "/entry/image_series/data", f"chunk at {origin}", "corrupt"):
        assert word in line, (word, line)
    assert list(out.iterdir()) == [], "left behind"


def test_truncated_source_file_is_named(dataset_copy, tmp_path, scheduler_address):
    ds = dataset_copy("cubic")
    source = ds / "datastore/data_2.nxs"
    os.truncate(source, source.stat().st_size - 1000)
    out = tmp_path / "out"
    out.mkdir()
    result = cli(
        "integrate", ds / "geometry.nxs", ds / "data.nxs", "--outfile", out / "integrated.nxs",
        "--cluster", scheduler_address, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "data_2.nxs" in line and "truncated" in line, line
    assert list(out.iterdir()) == []


def test_resume_refuses_a_workdir_of_another_dataset(dataset_copy, tmp_path, client):
    other = dataset_copy("cubic")
    with h5py.File(other / "datastore/data_0.nxs", "r+") as f:  # other counts, same shapes
        f["/entry/image_series/data"][0, 0, :10] += 1
    work = tmp_path / "work"
    pipeline.integrate(
        other / "geometry.nxs", other / "data.nxs", subdivide=SUBDIVIDE, outfile=tmp_path / "a.nxs",
        workdir=work, keep_workdir=True, client=client,
    )  # fmt: skip
    with pytest.raises(InputError, match="other inputs or parameters"):
        pipeline.integrate(
            DATA / "cubic/geometry.nxs", DATA / "cubic/data.nxs", subdivide=SUBDIVIDE,
            outfile=tmp_path / "b.nxs", workdir=work, resume=True, client=client,
        )  # fmt: skip
    assert not (tmp_path / "b.nxs").exists()


def test_correct_disk_full_while_tasks_still_write(tmp_path):
    """correct's threads write parquet parts into the same small filesystem while the NeXus table
    fails: the table is discarded without a crash (h5py crashes when a close fails for lack of space)."""
    disk = tmp_path / "disk"
    with tmpfs(disk, "400k"):
        cubic = DATA / "cubic"
        result = cli(
            "correct", cubic / "geometry.nxs", cubic / "mdx2/integrated_325.nxs", "--outfile", disk / "c.nxs",
            "--parquet", disk / "c.parquet", "--quiet",
        )  # fmt: skip
        assert result.exit_code == 1, result.output
        *warnings, line = result.stderr.strip().splitlines()
        assert line.startswith("error: no space left on the device writing") and str(disk) in line, line
        assert "this run needs about" in line, line
        assert all("may run out of space" in w for w in warnings), warnings
        assert sorted(p.name for p in disk.iterdir()) == []


# --- one message: workers do not print tracebacks of our errors ------------------------------------


def test_worker_reports_of_user_errors_are_dropped_others_kept():
    import logging

    from pipeline.errors import _drop_user_error_reports

    def record(exception_text):
        return logging.LogRecord(
            "distributed.worker", logging.ERROR, __file__, 1,
            "Compute Failed\nKey: %s\nState: %s\nTask: %s\nException: %r\nTraceback: %r\n",
            ("k", "executing", "task", exception_text, "tb"), None,
        )  # fmt: skip

    assert not _drop_user_error_reports(record("InputError('data.nxs: corrupt')"))
    assert not _drop_user_error_reports(record("DiskFullError('/x', 0, '')"))
    assert _drop_user_error_reports(record("ZeroDivisionError('division by zero')"))  # a bug: kept
    assert _drop_user_error_reports(logging.LogRecord("x", 40, __file__, 1, "other", (), None))


_PROCESS_WORKER_SCRIPT = """
import operator
import sys
from distributed import Client, LocalCluster
from pipeline.config import chunks_option

if __name__ == "__main__":
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            # our error (a ConfigError), then a bug (a ZeroDivisionError)
            for func, args in ((chunks_option, ([0, 1, 1],)), (operator.truediv, (1, 0))):
                future = client.submit(func, *args, pure=False)
                try:
                    future.result()
                except Exception as exc:
                    print(type(exc).__name__, file=sys.stderr, flush=True)
"""


def test_process_workers_do_not_print_tracebacks_of_user_errors(tmp_path):
    """In a worker process (a local cluster with processes, or a SLURM job), a task failing on bad
    input logs nothing; the client gets the error. A bug still logs "Compute Failed" with its traceback."""
    script = tmp_path / "s.py"
    script.write_text(_PROCESS_WORKER_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    err = done.stderr
    assert "ConfigError" in err and "ZeroDivisionError" in err, err
    assert err.count("Compute Failed") == 1, err
    failed = err[err.index("Compute Failed") :]
    assert "ZeroDivisionError" in failed and "ConfigError(" not in failed, err


def test_cli_error_in_a_task_is_one_line(dataset_copy, tmp_path):
    """The default local cluster (threads in the CLI's process): only the error line on stderr."""
    ds = dataset_copy("cubic")
    _flip_first_chunk(ds / "datastore/data_1.nxs")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "integrate", str(ds / "geometry.nxs"), str(ds / "data.nxs"),
         "--outfile", str(tmp_path / "o.nxs"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "data_1.nxs" in line, done.stderr


# --- a full disk, for every command that writes -----------------------------------------------------

_CUBIC = DATA / "cubic"
_FULL_DISK_CASES = {
    "scale": ["scale", DATA / "cubic/mdx2/corrected_325_bkg.nxs", "--outfile", "{out}/s.nxs"],
    "merge": ["merge", DATA / "cubic/mdx2/corrected_325_bkg.nxs", "--outfile", "{out}/m.nxs"],
    "map": ["map", _CUBIC / "geometry.nxs", DATA / "merge/merged_325_noscale.nxs",
            "--limits", -2, 2, -2, 2, 0, 0, "--outfile", "{out}/map.nxs"],
    "reintegrate": ["reintegrate", _CUBIC / "geometry.nxs", _CUBIC / "data.nxs", "--subdivide", 2, 2, 2,
                    "--outfile", "{out}/r.nxs"],
    "find-peaks": ["find-peaks", _CUBIC / "geometry.nxs", _CUBIC / "data.nxs", "--count-threshold", 20,
                   "--outfile", "{out}/p.nxs"],
    "mask-peaks": ["mask-peaks", _CUBIC / "geometry.nxs", _CUBIC / "data.nxs", DATA / "peaks/cubic/peaks.nxs",
                   "--outfile", "{out}/mask.nxs"],
    "bin-background": ["bin-background", _CUBIC / "data.nxs", 4, 20, 20, "--outfile", "{out}/b.nxs"],
    "find-hot-pixels": ["find-hot-pixels", _CUBIC / "data.nxs", "--outfile", "{out}/h.nxs"],
    "import-geometry": ["import-geometry", _CUBIC / "experiment.expt", "--outfile", "{out}/g.nxs"],
    "run": ["run", _CUBIC / "geometry.nxs", _CUBIC / "data.nxs", "--outdir", "{out}/run"],
}  # fmt: skip


@pytest.mark.parametrize("room", ["none", "some"])
@pytest.mark.parametrize("command", sorted(_FULL_DISK_CASES))
def test_full_disk_is_one_message_and_leaves_nothing(command, room, tmp_path):
    """On a nearly full filesystem (4 kB or 44 kB left of 64 kB): exit 1, the last line of stderr is
    the one-line error naming the output, no traceback, and nothing left but what was there (a run
    that fits is fine too; ``run`` keeps its run.log, which records the failed step). Before, h5py
    crashed (exit 139) for map, scale and import-geometry, a full disk at the lock or the run log was
    a traceback, and temporaries were left behind."""
    with tmpfs(tmp_path / "disk", "64k") as disk:
        (disk / "filler").write_bytes(b"\0" * (60_000 if room == "none" else 20_000))
        args = [str(a).format(out=disk) for a in _FULL_DISK_CASES[command]]
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", *args, "--quiet", "--workers", "1"]
            if command in ("reintegrate", "run") else [sys.executable, "-m", "pipeline", *args, "--quiet"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        left = sorted(p.name for p in disk.iterdir())
        if done.returncode == 0:  # it fitted
            assert room == "some", done.stderr
            return
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith("error: no space left on the device writing"), done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        if command == "run" and "run" in left:  # the batch run's record: run.log, with the failed step,
            # and the steps started and finished, for --resume
            assert sorted(p.name for p in (disk / "run").iterdir()) in (
                ["run.log"],
                [".diffuse-run.json", "run.log"],
            )
            assert 'status: "error: DiskFullError' in (disk / "run/run.log").read_text()
            left.remove("run")
        assert left == ["filler"], left
