"""One source of truth for configuration, and no state keyed by a path alone.

* every key of ``pipeline/pipeline.yaml`` is read by the package (no dead defaults);
* tuning is resolved once into :class:`~pipeline.config.Tuning` and honoured by the plan;
* the Miller grid a worker caches belongs to the run that planned it: two integrations in one process
  (threads, the default local mode) or on one long-lived cluster, with the geometry file replaced in
  between, each give what a fresh process gives (regression: the grid was cached by path).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dask.config
import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.config import ClusterSpec, IntegrateParams, Tuning
from pipeline.graph.plan import plan_integration

PACKAGE = Path(pipeline.__file__).parent
CUBIC = Path(__file__).parent / "data" / "cubic"
needs_goldens = pytest.mark.skipif(not (CUBIC / "data.nxs").exists(), reason="golden fixtures missing")


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out += _leaves(value, name + ".") if isinstance(value, dict) else [name]
    return out


def test_every_package_default_is_read():
    keys = _leaves(yaml.safe_load((PACKAGE / "pipeline.yaml").read_text())["diffuse"])
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    read = set(re.findall(r'(?:get_default|_positive)\(\s*"([a-z.-]+)"', source))
    assert keys and sorted(set(keys) - read) == []


def test_tuning_is_resolved_once_from_config():
    with dask.config.set({"diffuse.correct.rows-per-task": 1000, "diffuse.integrate.subdivide": [2, 3, 4]}):
        params = IntegrateParams("g.nxs", "d.nxs")
        tuning = Tuning.from_config()
    assert tuning.correct_rows_per_task == 1000 and params.subdivide == (2, 3, 4)
    assert params.tuning == tuning  # resolved when the parameters were made: later changes do not reach it
    assert Tuning.from_config() == Tuning()
    assert IntegrateParams("g.nxs", "d.nxs").subdivide == (1, 1, 1)


def test_bad_tuning_value_is_a_config_error():
    from pipeline.errors import ConfigError

    with (
        dask.config.set({"diffuse.reduce.max-partition-rows": "lots"}),
        pytest.raises(ConfigError, match="max"),
    ):
        Tuning.from_config()


@needs_goldens
@pytest.mark.parametrize(("target", "expected"), [(150e6, 6), (2e5, 6), (1.5e5, 8), (1, 42)])
def test_plan_makes_the_expected_number_of_tasks(target, expected):
    """Tasks are runs of whole storage chunks of about ``target`` pixels (at least min-tasks x workers;
    cuts fall at chunk boundaries, so one-pixel targets give fewer tasks than the 60 chunks)."""
    tuning = Tuning(target_task_pixels=target, min_tasks_per_worker=3)
    params = IntegrateParams(CUBIC / "geometry.nxs", CUBIC / "data.nxs", tuning=tuning)
    plan = plan_integration(params, n_workers=2)
    assert len(plan.tasks) == expected
    chunks = [tuple((s.start, s.stop) for s in c) for t in plan.tasks for c in t.chunks]
    assert len(chunks) == len(set(chunks)) == 60  # 3 phi slabs x 4 x 5 chunks, each exactly once


def test_cli_leaves_the_library_logger_as_it_was():
    logger = logging.getLogger("pipeline")
    before = logger.handlers[:], logger.level, logger.propagate
    CliRunner().invoke(app, ["simulate", "--help"])
    CliRunner().invoke(app, ["correct", "/nonexistent/g.nxs", "/nonexistent/i.nxs"])
    assert (logger.handlers[:], logger.level, logger.propagate) == before


# --- the stale-geometry bug -----------------------------------------------------------------------


def _shift_h(src: Path, dst: Path, by: float) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        f["entry/miller_index/h/signal"][...] += by
    return dst


def _fresh_process_table(geometry: Path, outfile: Path) -> pd.DataFrame:
    code = (
        "import sys, pipeline\n"
        "if __name__ == '__main__':\n"
        "    g, d, m, out = sys.argv[1:]\n"
        "    pipeline.integrate(g, d, mask=m, subdivide=(2, 2, 2), outfile=out)\n"
    )
    args = [geometry, CUBIC / "data.nxs", CUBIC / "mask.nxs", outfile]
    subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True)
    return pipeline.read_table(outfile)


@needs_goldens
@pytest.mark.parametrize("where", ["threads in this process", "one shared cluster"])
def test_geometry_replaced_between_two_runs_in_one_process(tmp_path, where, client):
    geometry = tmp_path / "geometry.nxs"
    shutil.copy(CUBIC / "geometry.nxs", geometry)
    options = {"mask": CUBIC / "mask.nxs", "subdivide": (2, 2, 2), "overwrite": True}
    if where == "threads in this process":
        options["cluster"] = ClusterSpec("local", workers=2)
        dask_config = {"diffuse.cluster.processes": False}
    else:
        options["client"] = client
        dask_config = {}
    with dask.config.set(dask_config):
        pipeline.integrate(geometry, CUBIC / "data.nxs", outfile=tmp_path / "first.nxs", **options)
        _shift_h(CUBIC / "geometry.nxs", geometry, by=1.0)  # same path, other content, other H range
        pipeline.integrate(geometry, CUBIC / "data.nxs", outfile=tmp_path / "second.nxs", **options)
    first, second = pipeline.read_table(tmp_path / "first.nxs"), pipeline.read_table(tmp_path / "second.nxs")
    fresh = _fresh_process_table(
        _shift_h(CUBIC / "geometry.nxs", tmp_path / "fresh.nxs", 1.0), tmp_path / "f.nxs"
    )
    pd.testing.assert_frame_equal(second, fresh, check_exact=True)
    np.testing.assert_allclose(second["h"].min(), first["h"].min() + 1.0)
