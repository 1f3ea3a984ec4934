"""``diffuse demo`` end to end on the 'tiny' preset, on the session's cluster."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.errors import InputError
from pipeline.simulation.demo import DEMO_FILES, run_demo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_demo_runs_end_to_end(client, tmp_path):
    result = run_demo(tmp_path / "out", preset="tiny", client=client)
    for name in DEMO_FILES:
        assert result.files[name].exists(), name
        assert result.files[name].parent == tmp_path / "out"
    for name in ("intensity_histogram.png", "phi_histogram.png"):
        assert result.files[name].read_bytes()[:8] == PNG_SIGNATURE
        assert result.files[name].stat().st_size > 10_000  # a drawn figure, not an empty canvas
    assert (tmp_path / "out" / "dataset" / "data.nxs").exists()

    assert result.rows["integrated"] == result.rows["corrected"] > 100
    table = pipeline.read_table(result.files["corrected.parquet"])
    assert len(table) == result.rows["corrected"]
    assert len(pipeline.read_table(result.files["corrected.nxs"])) == len(table)
    assert set(result.seconds) == {"simulate", "cluster", "integrate", "correct", "plots", "pipeline"}
    summary = json.loads(result.files["summary.json"].read_text())
    assert summary["rows"] == result.rows and summary["seconds"]["pipeline"] > 0

    with pytest.raises(InputError, match="--overwrite"):
        run_demo(tmp_path / "out", preset="tiny", client=client)


def test_cli_demo_prints_a_summary(scheduler_address, tmp_path):
    args = ["demo", "--outdir", str(tmp_path / "cli"), "--preset", "tiny", "--cluster", scheduler_address]
    result = CliRunner().invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    for word in ("simulate", "integrate", "correct", "plots", "pipeline", "phi_histogram.png", "rows"):
        assert word in result.output, word
