"""Against a real SLURM: worker jobs (interactive), batch jobs (``diffuse submit``), refusals, cleanup.

Needs a SLURM controller that answers (``scripts/slurm-start.sh`` starts one on localhost, with a
node of 2 CPUs here). Without one these tests are skipped, unless DIFFUSE_REQUIRE_SLURM=1 (as
.ci/run sets): then they fail, so CI proves they ran. Outputs must equal a local run and mdx2 1.0.5's
golden tables, and no job may be left in squeue afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import pipeline
from pipeline.cluster import connect
from pipeline.config import ClusterSpec
from pipeline.errors import ConfigError

pytestmark = pytest.mark.slurm

DATA = Path(__file__).parent / "data"
CUBIC = DATA / "cubic"
DIFFUSE = [sys.executable, "-m", "pipeline"]


def slurm_problem() -> str | None:
    """Why SLURM cannot be used here, or None when sinfo answers with a partition that is up."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "sinfo/sbatch not found (start one with scripts/slurm-start.sh)"
    try:
        out = subprocess.run(
            ["sinfo", "--noheader", "--format=%P %a"], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()}"
    if not any(line.split()[1:] == ["up"] for line in out.stdout.splitlines()):
        return f"no partition is up: {out.stdout.strip()!r}"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm():
    problem = slurm_problem()
    if problem:
        if os.environ.get("DIFFUSE_REQUIRE_SLURM") == "1":
            pytest.fail(f"DIFFUSE_REQUIRE_SLURM=1 but no usable SLURM: {problem}")
        pytest.skip(f"no usable SLURM: {problem}")
    yield
    assert squeue() == [], "jobs left in squeue after the SLURM tests"


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # job logs go to ./diffuse-logs
    return tmp_path


def squeue(job: str | None = None) -> list[str]:
    args = ["squeue", "--noheader", "--format=%i %j %T"] + ([f"--jobs={job}"] if job else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    return out.stdout.split("\n")[:-1] if out.returncode == 0 else []


def wait_until_gone(job: str | None = None, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := squeue(job)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def same_table(a: Path, b: Path):
    pd.testing.assert_frame_equal(pipeline.read_table(a), pipeline.read_table(b), check_exact=True)


def assert_equals_mdx2(ours: Path, reference: Path, keys=("h", "k", "l", "n", "counts", "pixels")):
    ref, got = pipeline.read_table(reference), pipeline.read_table(ours)
    assert len(got) == len(ref)
    for column in keys:
        np.testing.assert_array_equal(got[column].to_numpy(), ref[column].to_numpy(), err_msg=column)


def node_config(path: Path, **slurm) -> str:
    """A cluster config for the test node: 2 single-threaded workers per job, a short walltime."""
    content = {"cores": 2, "processes": 2, "memory": "2GB", "walltime": "00:10:00", **slurm}
    path.write_text(yaml.safe_dump({"jobqueue": {"slurm": content}}))
    return str(path)


# --- interactive: worker jobs -----------------------------------------------------------------------


def test_workers_run_in_slurm_jobs_that_are_cancelled_afterwards():
    with connect("slurm", workers=2) as client:
        jobs = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
        assert len(set(jobs.values())) == 2 and None not in jobs.values()
        queued = squeue()
        assert {line.split()[0] for line in queued} >= set(jobs.values())
        assert all(line.endswith("RUNNING") for line in queued)
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert wait_until_gone(timeout=15) == []


def test_integrate_and_correct_on_slurm_equal_local_and_mdx2(client, workdir):
    # absolute output paths: the session's local workers run in another working directory
    local, slurm = workdir / "local.nxs", workdir / "slurm.nxs"
    options = {"mask": CUBIC / "mask.nxs", "subdivide": (3, 2, 5)}
    pipeline.integrate(CUBIC / "geometry.nxs", CUBIC / "data.nxs", outfile=local, client=client, **options)
    pipeline.integrate(
        CUBIC / "geometry.nxs",
        CUBIC / "data.nxs",
        outfile=slurm,
        cluster=ClusterSpec("slurm", workers=2),
        **options,
    )
    same_table(slurm, local)
    assert_equals_mdx2(slurm, CUBIC / "mdx2" / "integrated_325.nxs")

    c_local, c_slurm = workdir / "c_local.nxs", workdir / "c_slurm.nxs"
    background = CUBIC / "bkg_data_binned.nxs"
    pipeline.correct(CUBIC / "geometry.nxs", slurm, background, outfile=c_local, client=client)
    pipeline.correct(CUBIC / "geometry.nxs", slurm, background, outfile=c_slurm, cluster="slurm")
    same_table(c_slurm, c_local)
    assert_equals_mdx2(c_slurm, CUBIC / "mdx2" / "corrected_325_bkg.nxs", ("h", "k", "l", "op", "n"))
    assert wait_until_gone(timeout=15) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--memory-limit", "10TB"], "Memory specification can not be satisfied"),
        (["--partition", "no-such-partition"], "invalid partition specified: no-such-partition"),
    ],
)
def test_refused_request_stops_at_once_with_sbatchs_message(flags, message):
    start = time.monotonic()
    run = subprocess.run(
        [
            *DIFFUSE,
            "integrate",
            str(CUBIC / "geometry.nxs"),
            str(CUBIC / "data.nxs"),
            "--cluster",
            "slurm",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.monotonic() - start
    assert run.returncode == 1, run.stderr
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("error: sbatch refused the worker job") and message in error, run.stderr
    assert "Traceback" not in run.stderr
    assert seconds < 30, f"took {seconds:.1f} s"
    assert squeue() == []


def test_job_slurm_can_never_start_is_an_error(workdir):
    spec = node_config(workdir / "big.yaml", cores=64, processes=1)  # more CPUs than the node has
    with pytest.raises(ConfigError, match="SLURM will never start worker job"), connect(spec):
        pass
    assert wait_until_gone(timeout=15) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_client_cancels_its_jobs(signum, workdir):
    script = textwrap.dedent("""
        import faulthandler, signal, time
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's post-mortem if this hangs
        from pipeline.cluster import connect
        with connect("slurm", workers=2) as client:
            print("ready", flush=True)
            time.sleep(300)
    """)
    # SIGINT as a terminal gives it: a test run started in the background by a non-interactive shell
    # (`.ci/run &`) passes SIGINT on ignored, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        assert len(squeue()) == 2
        start = time.monotonic()
        proc.send_signal(signum)
        try:
            returncode = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # every thread's stack, to stderr
            time.sleep(2)
            proc.kill()
            pytest.fail(f"no exit 60 s after {signum.name}; squeue {squeue()}; stderr:\n{proc.stderr.read()}")
    finally:
        proc.kill()
        proc.wait()
    assert returncode == (128 + signal.SIGTERM if signum == signal.SIGTERM else -signal.SIGINT)
    assert time.monotonic() - start < 30
    assert wait_until_gone(timeout=15) == []


# --- batch: diffuse submit ------------------------------------------------------------------------------


def test_submit_runs_a_whole_integration_as_one_batch_job(workdir):
    spec = node_config(workdir / "node.yaml", **{"log-directory": "logs"})
    # fmt: off
    command = [
        "integrate", str(CUBIC / "geometry.nxs"), str(CUBIC / "data.nxs"), "--mask", str(CUBIC / "mask.nxs"),
        "--subdivide", "3", "2", "5", "--outfile", "batch.nxs",
    ]
    # fmt: on
    submitted = subprocess.run(
        [*DIFFUSE, "submit", "--cluster", spec, "--", *command], capture_output=True, text=True, timeout=120
    )
    assert submitted.returncode == 0, submitted.stderr
    first = submitted.stdout.splitlines()[0]
    assert first.startswith("submitted batch job "), submitted.stdout
    job = first.split()[3].rstrip(":")
    log = workdir / "logs" / f"diffuse-integrate-{job}.log"
    assert f"log     {log}" in submitted.stdout and f"output  {workdir / 'batch.nxs'}" in submitted.stdout
    assert wait_until_gone(job, timeout=180) == [], f"batch job {job} still queued"
    text = log.read_text()
    assert "diffuse: exit status 0" in text, text
    assert_equals_mdx2(workdir / "batch.nxs", CUBIC / "mdx2" / "integrated_325.nxs")
    assert not list((workdir / "logs").glob("diffuse-scheduler-*.json"))  # cleaned up


def test_submit_refused_by_sbatch(workdir):
    spec = node_config(workdir / "node.yaml", memory="10TB")
    run = subprocess.run(
        [
            *DIFFUSE,
            "submit",
            "--cluster",
            spec,
            "--",
            "correct",
            CUBIC / "geometry.nxs",
            CUBIC / "mdx2" / "integrated_325.nxs",
            "--outfile",
            workdir / "c.nxs",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "sbatch refused the batch job" in run.stderr and "Memory specification" in run.stderr, run.stderr
    assert not (workdir / "c.nxs").exists()


def test_the_rest_of_the_chain_on_slurm_gives_mdx2s_outputs(workdir):
    """find-peaks, mask-peaks, scale, merge, reintegrate and map, each on one set of SLURM worker jobs,
    against mdx2 1.0.5's golden outputs (and map against the same map made locally)."""
    import h5py
    from test_peaks import CASES as PEAK_CASES
    from test_peaks import _assert_same_mask, _assert_same_peaks
    from test_reintegrate import CASES as REINTEGRATE_CASES
    from test_reintegrate import assert_same, options, read_mdx2

    from pipeline.api.find_peaks import find_peaks
    from pipeline.api.map import make_map
    from pipeline.api.mask_peaks import mask_peaks
    from pipeline.api.merge import merge
    from pipeline.api.scale import scale
    from pipeline.io.scales import read_scales

    corrected = DATA / "mono" / "mdx2" / "corrected_222_bkg.nxs"
    with connect("slurm", workers=2) as c:
        assert None not in c.run(lambda: os.environ.get("SLURM_JOB_ID")).values()
        peaks, case = workdir / "peaks.nxs", PEAK_CASES["cubic"]
        find_peaks(CUBIC / "geometry.nxs", CUBIC / "data.nxs", case["count_threshold"],
                   sigma_cutoff=case["sigma_cutoff"], outfile=peaks, client=c)  # fmt: skip
        _assert_same_peaks(peaks, DATA / "peaks" / "cubic" / "peaks.nxs")
        name, (sigma, bragg) = next(iter(case["masks"].items()))
        mask_peaks(CUBIC / "geometry.nxs", CUBIC / "data.nxs", peaks, sigma_cutoff=sigma, bragg=bragg,
                   outfile=workdir / name, client=c)  # fmt: skip
        _assert_same_mask(workdir / name, DATA / "peaks" / "cubic" / name)

        scale(corrected, outfile=workdir / "scales.nxs", client=c)
        ours, ref = read_scales(workdir / "scales.nxs"), read_scales(DATA / "scale" / "scales_default.nxs")
        np.testing.assert_allclose(ours.scaling.u, ref.scaling.u, rtol=1e-6)

        merged = workdir / "merged.nxs"
        merge(
            DATA / "cubic/mdx2/corrected_325_bkg.nxs", DATA / "merge/scales_325.nxs", outfile=merged, client=c
        )
        with h5py.File(merged) as a, h5py.File(DATA / "merge/merged_325_scales.nxs") as b:
            for k in b["/entry/hkl_table"]:
                assert a[f"/entry/hkl_table/{k}"][()].tobytes() == b[f"/entry/hkl_table/{k}"][()].tobytes(), k

        r_case = REINTEGRATE_CASES["cubic_325_scale_bkg_intensity"]
        pipeline.reintegrate(CUBIC / "geometry.nxs", CUBIC / "data.nxs", outfile=workdir / "r.nxs", client=c,
                             **options(r_case))  # fmt: skip
        assert_same(read_mdx2(DATA / r_case["reference"]), pipeline.read_table(workdir / "r.nxs"))

        limits = (-3, 3, -3, 3, -2, 2)
        make_map(
            CUBIC / "geometry.nxs", merged, limits=limits, outfile=workdir / "map.nxs", client=c, png=False
        )
    make_map(CUBIC / "geometry.nxs", merged, limits=limits, outfile=workdir / "local.nxs", png=False)
    with h5py.File(workdir / "map.nxs") as a, h5py.File(workdir / "local.nxs") as b:
        assert a["/entry/intensity/signal"][()].tobytes() == b["/entry/intensity/signal"][()].tobytes()
    assert wait_until_gone(timeout=15) == []
