"""Shared pytest fixtures: one local Dask cluster for the whole session, and the golden fixtures.

Starting a LocalCluster costs seconds, so the session starts ONE (2 single-threaded worker processes
on 127.0.0.1, no dashboard); tests pass ``client=`` to ``pipeline.integrate``/``correct``, and CLI
tests ``--cluster <scheduler address>``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


# --- cluster ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster():
    """One LocalCluster for the whole test session (2 worker processes, 1 thread each)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        # no dashboard; the scheduler's small HTTP server (health routes) on a free port, not :8787
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    ) as c:
        yield c


@pytest.fixture(scope="session")
def client(cluster):
    """A distributed Client of the session's cluster (pass as ``client=`` to the API)."""
    from distributed import Client

    with Client(cluster) as c:
        yield c


@pytest.fixture(scope="session")
def scheduler_address(cluster) -> str:
    """``tcp://127.0.0.1:PORT`` of the session's cluster, for ``diffuse ... --cluster``."""
    return cluster.scheduler_address


# --- kernels ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["ahead", "jit"])
def kernel_build(request):
    """Run a module's tests with each build of integrate's kernels (pipeline.kernels.aot): compiled
    ahead of time (skipped where ``make install`` did not build them) and numba's jitted ones."""
    from pipeline.kernels import aot

    if request.param == "ahead":
        if not aot.load_all():
            pytest.skip("integrate's kernels are not compiled ahead of time here (make install builds them)")
        yield request.param
    else:
        with aot.jit_only():
            yield request.param


# --- golden fixtures (tests/data, made by tests/data/make_goldens.sh) ------------------------------


@pytest.fixture(scope="session")
def goldens() -> dict:
    """The manifest tests/data/goldens.json: datasets and mdx2 1.0.5 outputs with their options."""
    return json.loads((DATA / "goldens.json").read_text())


@pytest.fixture
def dataset_copy(tmp_path):
    """``dataset_copy(name)``: a private copy of golden dataset ``name`` under tmp_path, to damage at will."""

    def copy(name: str) -> Path:
        return Path(shutil.copytree(DATA / name, tmp_path / name))

    return copy
