"""Every command x every path argument x every way a path can be wrong, generated.

The commands come from ``diffuse --help`` (the typer app), their path parameters from their
signatures, the kind of each path from :data:`pipeline.cli.paths.PATHS`, and the other required
arguments from ``tests/cli_registry.py``. Each case must end with exit status 1, exactly one stderr
line, starting with ``error:``, no traceback, and nothing new left in the working directory (no
output, no temporary, no lock file, no created directory). A new command is covered by its registry
line; :func:`test_every_command_is_registered` fails until it has one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import typer
from cli_registry import REQUIRED, VALID_INPUT, WRONG_KIND
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.app import path_parameters
from pipeline.cli.paths import PATHS, kind_of
from pipeline.io.inputs import KINDS


def _commands() -> dict[str, object]:
    """'name' (or 'group name') -> click command, for every command of the app."""
    root = typer.main.get_command(app)
    out = {}

    def walk(group, prefix):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                walk(cmd, [*prefix, name])
            else:
                out[" ".join([*prefix, name])] = cmd

    walk(root, [])
    return out


COMMANDS = _commands()


def _paths(name: str) -> list[tuple[str, str, str]]:
    """(parameter, label, kind) of every path parameter of command ``name``."""
    callback = COMMANDS[name].callback
    func = getattr(callback, "__wrapped__", callback)
    return [(p, label, kind_of(name, p)) for p, label in path_parameters(func)]


def _checked_paths(name: str) -> list[tuple[str, str, str]]:
    """Those of :func:`_paths` that have a kind (all of them, once the command is registered)."""
    return [(p, label, kind) for p, label, kind in _paths(name) if kind is not None]


def _valid_args(name: str, base: Path, skip: str | None = None) -> dict[str, list[str]]:
    """Parameter -> command-line values of a valid call (outputs under ``base/out``)."""
    args: dict[str, list[str]] = {}
    for p, _, kind in _checked_paths(name):
        if p == skip:
            continue
        k = KINDS[kind]
        if not k.is_output:
            args[p] = [str(VALID_INPUT[kind])]
        elif k.role == "outdir":
            args[p] = [str(base / "out" / p)]
        elif k.role == "workdir":
            args[p] = [str(base / "out" / "work")]
        else:
            args[p] = [str(base / "out" / f"{p}.{'d' if k.is_dir else 'nxs'}")]
    for p, values in REQUIRED.get(name, {}).items():
        args[p] = values
    return args


def _argv(name: str, args: dict[str, list[str]], extra=()) -> list[str]:
    cmd = COMMANDS[name]
    argv = name.split()
    options = []
    for param in cmd.params:
        if param.name not in args:
            continue
        if param.param_type_name == "argument":
            argv += args[param.name]
        else:
            flag = next(o for o in param.opts if o.startswith("--"))
            options += [flag, *args[param.name]]
    return argv + options + list(extra)


def _cases():
    for name in sorted(COMMANDS):
        for p, label, kind in _checked_paths(name):
            k = KINDS[kind]
            if k.role == "input":
                cases = ["missing", "unreadable", "wrong-kind", "truncated"]
                cases += ["directory"] if k.is_dir is False else ["plain-directory"]
                if kind not in WRONG_KIND:
                    cases.remove("wrong-kind")
                if kind == "file":
                    cases.remove("truncated")
            elif k.role == "output":
                cases = ["parent-missing", "parent-is-file", "exists", "wrong-type"]
            else:  # outdir, workdir
                cases = ["is-file", "parent-is-file"]
            for case in cases:
                yield pytest.param(name, p, kind, case, id=f"{name.replace(' ', '-')}-{label}-{case}")


def _make_bad(case: str, kind: str, base: Path) -> tuple[str, list[str]]:
    """The bad path for ``case`` and any extra options."""
    bad = base / "bad"
    bad.mkdir(exist_ok=True)
    k = KINDS[kind]
    if case == "missing":
        return str(bad / "missing.nxs"), []
    if case == "directory":
        return str(bad), []
    if case == "plain-directory":  # a directory that is not a parquet dataset
        return str(bad), []
    if case == "unreadable":
        target = bad / "unreadable"
        shutil.copytree(VALID_INPUT[kind], target) if VALID_INPUT[kind].is_dir() else shutil.copy(
            VALID_INPUT[kind], target
        )
        os.chmod(target, 0)
        return str(target), []
    if case == "wrong-kind":
        return str(WRONG_KIND[kind]), []
    if case == "truncated":
        src = VALID_INPUT[kind].read_bytes()
        target = bad / "truncated"
        target.write_bytes(src[: len(src) // 2])
        return str(target), []
    out = base / "out"
    if case == "parent-missing":
        return str(out / "newdir" / "x"), []
    if case in ("parent-is-file", "is-file"):
        (bad / "file").write_text("x")
        return str(bad / "file" / "x") if case == "parent-is-file" else str(bad / "file"), []
    if case == "exists":
        target = out / "existing"
        target.mkdir() if k.is_dir else target.write_text("x")
        return str(target), []
    if case == "wrong-type":  # a directory where a file goes, or the reverse, even with --overwrite
        target = out / "wrong"
        target.write_text("x") if k.is_dir else target.mkdir()
        return str(target), ["--overwrite"]
    raise AssertionError(case)


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(("name", "param", "kind", "case"), list(_cases()))
def test_bad_path(name, param, kind, case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    if case == "exists" and "overwrite" not in {p.name for p in COMMANDS[name].params}:
        pytest.skip(f"{name} has no --overwrite: it replaces its outputs by design")
    bad, extra = _make_bad(case, kind, tmp_path)
    args = _valid_args(name, tmp_path)
    args[param] = [bad]
    argv = _argv(name, args, extra)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    after = _snapshot(tmp_path)
    assert "Traceback" not in result.output + result.stderr, result.stderr
    assert result.exit_code == 1, (argv, result.exit_code, result.output, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert bad in lines[0] or repr(bad) in lines[0] or os.path.basename(bad) in lines[0], lines[0]
    assert after == before, f"left behind: {sorted(after - before)}"


def test_every_command_is_registered():
    missing = sorted(set(COMMANDS) - set(PATHS))
    assert not missing, f"add these commands to pipeline/cli/paths.py PATHS: {missing}"
    for name in COMMANDS:
        for p, label, kind in _paths(name):
            assert kind not in ("file", None) or p in PATHS.get(name, {}), (
                f"{name} {label}: say what kind of input it is in pipeline/cli/paths.py PATHS"
            )


def test_registry_names_real_parameters():
    for name, entry in PATHS.items():
        assert name in COMMANDS, f"PATHS names {name!r}, which is not a command"
        names = {p for p, _, _ in _paths(name)}
        assert set(entry) <= names, f"{name}: {sorted(set(entry) - names)} are not path parameters"


@pytest.mark.parametrize("name", [*sorted(COMMANDS), "bench"])
def test_help_shows_an_example(name):
    result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    examples = [line for line in result.output.splitlines() if "Example: diffuse " in line]
    assert examples, f"diffuse {name} --help has no 'Example: diffuse ...' line"


@pytest.mark.parametrize(
    "argv",
    [
        ["integrate"],
        ["integrate", "g.nxs", "d.nxs", "--subdivide", "1", "2"],
        ["integrate", "g.nxs", "d.nxs", "--no-such-option"],
        ["integrate", "g.nxs", "d.nxs", "--max-spread", "wide"],
        ["frobnicate"],
        ["bench", "sweep"],
    ],
)
def test_usage_errors_are_one_line_exit_2(argv):
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


def test_submit_checks_the_paths_of_its_command(tmp_path, monkeypatch):
    """Before anything is queued (sbatch would not even be reached)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    argv = ["submit", "--", "integrate", "missing.nxs", str(VALID_INPUT["data"])]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: GEOMETRY 'missing.nxs' does not exist"), lines
