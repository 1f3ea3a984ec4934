from typer.testing import CliRunner

from pipeline.cli import app


def test_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "integrate" in result.output and "correct" in result.output
