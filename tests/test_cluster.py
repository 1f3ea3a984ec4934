"""Cluster configuration, connect() without SLURM, and the batch script of ``diffuse submit --dry-run``.

Everything here runs without SLURM; tests/test_slurm.py runs the same code against a real one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import dask.config
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cluster import connect, default_workdir
from pipeline.cluster.config import (
    CONFIG_DIR,
    SHIPPED_CONFIGS,
    apply_cluster_config,
    import_jobqueue,
    read_cluster_config,
    resolve_local,
    resolve_slurm,
    walltime_seconds,
)
from pipeline.cluster.slurm import sbatch_error, terminate_gracefully
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


def write_config(path: Path, content: dict) -> str:
    path.write_text(yaml.safe_dump(content))
    return str(path)


def slurm_settings(spec: str = "slurm", **flags):
    with apply_cluster_config(read_cluster_config(spec)) as file:
        return resolve_slurm(file.path, **flags)


# --- the shipped files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_shipped_config_has_a_comment_on_every_key(name):
    text = (CONFIG_DIR / f"{name}.yaml").read_text()
    assert isinstance(yaml.safe_load(text), dict)
    for line in text.splitlines():
        if re.match(r"^\s*[\w-]+:\s*[^\s#]", line) or line.strip().startswith("- "):  # a value or list item
            assert "#" in line, f"{name}.yaml: no comment on {line.strip()!r}"


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_shipped_config_resolves(name, monkeypatch, tmp_path):
    monkeypatch.setenv("USER", "someone")
    monkeypatch.chdir(tmp_path)
    file = read_cluster_config(str(CONFIG_DIR / f"{name}.yaml"))
    with apply_cluster_config(file):
        settings = resolve_local(file.path) if file.type == "local" else resolve_slurm(file.path)
    assert settings.source == file.path


def test_cluster_configs_directory_is_the_package_data():
    """cluster_configs/ in the source tree is a link to pipeline/cluster_configs (one copy of each file)."""
    link = REPO / "cluster_configs"
    if not link.exists():
        pytest.skip("not a source checkout")
    assert link.resolve() == CONFIG_DIR.resolve()


def test_names_and_paths(tmp_path):
    assert read_cluster_config("local").type == "local"
    assert read_cluster_config("slurm").type == "slurm"
    own = write_config(tmp_path / "mine.yaml", {"jobqueue": {"slurm": {"cores": 2}}})
    assert read_cluster_config(own).type == "slurm"  # type inferred from the jobqueue section
    with pytest.raises(ConfigError, match="not found"):
        read_cluster_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="unknown cluster 'pbs'"):
        read_cluster_config("pbs")
    bad = write_config(tmp_path / "bad.yaml", {"diffuse": {"cluster": {"type": "kubernetes"}}})
    with pytest.raises(ConfigError, match="kubernetes"):
        read_cluster_config(bad)


# --- precedence: package/user dask config < file (non-null keys) < flags -----------------------------


def test_null_in_the_file_keeps_the_users_dask_config():
    import_jobqueue()
    with dask.config.set({"jobqueue.slurm.account": "abc123", "jobqueue.slurm.memory": "99GB"}):
        settings = slurm_settings()
    assert settings.account == "abc123"  # slurm.yaml says account: null
    assert settings.memory == 4 * 10**9  # slurm.yaml says memory: 4GB


def test_flags_override_the_file():
    settings = slurm_settings(
        workers=3, memory_limit="2GB", partition="long", account="x", walltime="2:00:00"
    )
    assert (settings.jobs, settings.memory, settings.queue, settings.account) == (3, 2 * 10**9, "long", "x")
    assert settings.walltime == "2:00:00"
    assert settings.workers == 3 * settings.processes


def test_memory_limit_is_per_worker_process(tmp_path):
    spec = write_config(
        tmp_path / "c.yaml", {"jobqueue": {"slurm": {"cores": 4, "processes": 4, "memory": "8GB"}}}
    )
    assert slurm_settings(spec).worker_memory == 2 * 10**9
    assert slurm_settings(spec, memory_limit="1GB").memory == 4 * 10**9


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"cores": 2, "processes": 3, "memory": "1GB"}, "must not exceed cores"),
        ({"cores": 0, "memory": "1GB"}, "cores must be a whole number"),
        ({"cores": 1, "memory": "lots"}, "amount of memory"),
        ({"cores": 1, "memory": "1GB", "walltime": "soon"}, "walltime must look like"),
        ({"cores": 1, "memory": "1GB", "worker-extra-args": "--lifetime 5m"}, "list of strings"),
    ],
)
def test_invalid_slurm_values(tmp_path, content, match):
    spec = write_config(tmp_path / "c.yaml", {"jobqueue": {"slurm": content}})
    with pytest.raises(ConfigError, match=match):
        slurm_settings(spec)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 1800),
        ("30:15", 1815),
        ("01:00:00", 3600),
        ("2-00:00:00", 172800),
        ("1-12", 129600),
        ("0-1:30", 5400),
    ],
)
def test_walltime_seconds(text, seconds):
    assert walltime_seconds(text) == seconds


def test_lifetime_beyond_the_walltime_is_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        slurm_settings(walltime="00:30:00")  # slurm.yaml retires workers after 55m +- 4m
    assert "not shorter than the walltime 00:30:00" in caplog.text


def test_local_settings(tmp_path):
    spec = write_config(tmp_path / "l.yaml", {"diffuse": {"cluster": {"type": "local", "workers": 3}}})
    with apply_cluster_config(read_cluster_config(spec)) as file:
        assert resolve_local(file.path).workers == 3
        assert resolve_local(file.path, workers=1, memory_limit="1GB").memory_limit == "1GB"
        with pytest.raises(ConfigError, match="amount of memory"):
            resolve_local(file.path, memory_limit="much")


# --- connect ------------------------------------------------------------------------------------------


def test_connect_local_config_file(tmp_path):
    spec = write_config(tmp_path / "l.yaml", {"diffuse": {"cluster": {"type": "local", "workers": 1}}})
    with connect(spec) as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")


@pytest.mark.parametrize("spec", ["local", "tcp://127.0.0.1:1"])
def test_slurm_options_elsewhere_are_an_error(spec):
    with (
        pytest.raises(ConfigError, match="--partition cannot be used with --cluster"),
        connect(spec, partition="x"),
    ):
        pass


def test_running_scheduler_by_address_and_scheduler_file(scheduler_address, tmp_path):
    with connect(scheduler_address, workers=2) as client:
        assert client.scheduler.address == scheduler_address
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"address": scheduler_address}))
    with connect(str(scheduler_file), workers=2) as client:
        assert client.scheduler.address == scheduler_address


def test_waiting_for_more_workers_than_come_goes_on_with_a_warning(scheduler_address, caplog):
    with (
        dask.config.set({"diffuse.cluster.wait-timeout": 0.5}),
        caplog.at_level(logging.WARNING, logger="pipeline"),
        connect(scheduler_address, workers=3),
    ):
        pass
    assert "only 2 of 3 workers connected" in caplog.text


def test_default_workdir(tmp_path):
    assert default_workdir(tmp_path / "integrated.nxs") is None
    with dask.config.set({"diffuse.cluster.workdir-root": str(tmp_path / "scratch")}):
        a = default_workdir(tmp_path / "a" / "integrated.nxs")
        b = default_workdir(tmp_path / "b" / "integrated.nxs")
        assert a != b and Path(a).parent == tmp_path / "scratch"
        assert a == default_workdir(tmp_path / "a" / "integrated.nxs")  # a rerun (--resume) finds it


# --- signals and SLURM's messages ---------------------------------------------------------------------


def test_sigterm_becomes_systemexit_so_cleanup_runs():
    cleaned = []
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc, terminate_gracefully():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            cleaned.append(True)
    assert exc.value.code == 128 + signal.SIGTERM and cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def test_importing_jobqueue_keeps_the_sigint_handler():
    before = signal.getsignal(signal.SIGINT)
    import_jobqueue()
    assert signal.getsignal(signal.SIGINT) is before


def test_sbatch_error_keeps_slurms_words():
    exc = RuntimeError(
        "Command exited with non-zero exit code.\nExit code: 1\nCommand:\nsbatch /tmp/x.sh\n"
        "stdout:\n\nstderr:\n"
        "sbatch: error: Memory specification can not be satisfied\n"
        "sbatch: error: Batch job submission failed: Requested node configuration is not available\n"
    )
    assert sbatch_error(exc) == (
        "Memory specification can not be satisfied; "
        "Batch job submission failed: Requested node configuration is not available"
    )
    assert sbatch_error(RuntimeError("something else")) is None


# --- diffuse submit --dry-run and cluster-config -------------------------------------------------------


def dry_run(*args):
    return CliRunner().invoke(app, ["submit", "--dry-run", *args])


@pytest.fixture
def node_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # logs and scripts go to the working directory
    content = {"jobqueue": {"slurm": {"cores": 8, "processes": 4, "memory": "16GB", "walltime": "02:00:00"}}}
    return write_config(tmp_path / "node.yaml", content)


def test_submit_dry_run_script(node_config, tmp_path):
    cubic = DATA / "cubic"
    result = dry_run(
        "--cluster", node_config, "--partition", "short", "--",
        "integrate", str(cubic / "geometry.nxs"), str(cubic / "data.nxs"), "--subdivide", "2", "2", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    script = result.output
    for line in (
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=15259M",
        "#SBATCH --time=02:00:00",
        "#SBATCH --partition=short",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --chdir={tmp_path}",
        f"#SBATCH --output={tmp_path}/diffuse-integrate-%j.log",
    ):
        assert line in script.splitlines(), line
    assert "--host 127.0.0.1 --nthreads 2 --memory-limit 4000000000" in script
    assert '--cluster "$SCHEDULER_FILE" --workers 4 "${RESUME[@]}"' in script
    assert "RESUME=(--resume)" in script  # a requeued job picks up finished map tasks
    assert not list(tmp_path.glob("*.sbatch"))  # a dry run writes nothing


def test_submit_run_resumes_when_requeued(node_config, tmp_path):
    """``diffuse run --resume`` skips the steps a killed job finished: a requeued run job passes it."""
    cubic = DATA / "cubic"
    result = dry_run(
        "--cluster", node_config, "--", "run", str(cubic / "geometry.nxs"), str(cubic / "data.nxs"),
        "--outdir", str(tmp_path / "results"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "RESUME=(--resume)" in result.output


def test_submit_correct_has_no_resume(node_config, tmp_path):
    cubic = DATA / "cubic"
    result = dry_run(
        "--cluster", node_config, "--", "correct", str(cubic / "geometry.nxs"), "integrated.nxs"
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "RESUME=(--resume)" not in result.output


@pytest.mark.parametrize(
    ("command", "match"),
    [
        (["integrate", "g.nxs", "d.nxs", "--cluster", "local"], "leave --cluster out"),
        (["integrate", "g.nxs"], "Missing argument"),
        (["integrate", "g.nxs", "d.nxs", "--subdivde", "2"], "No such option"),
        (["frobnicate"], "expected a diffuse command that computes"),
        (["submit", "--", "integrate"], "expected a diffuse command that computes"),
    ],
)
def test_submit_checks_the_command_first(node_config, tmp_path, command, match):
    result = dry_run("--cluster", node_config, "--", *command)
    assert result.exit_code == 1 and match in result.output, result.output


def test_submit_on_several_nodes_needs_an_interface(node_config, tmp_path):
    result = dry_run("--nodes", "2", "--cluster", node_config, "--", "correct", "g.nxs", "i.nxs")
    assert result.exit_code == 1 and "needs jobqueue.slurm.interface" in result.output
    spec = write_config(
        tmp_path / "ib.yaml", {"jobqueue": {"slurm": {"cores": 2, "memory": "4GB", "interface": "ib0"}}}
    )
    result = dry_run("--nodes", "2", "--cluster", spec, "--", "correct", "g.nxs", "i.nxs")
    assert result.exit_code == 0, result.output
    assert "--interface ib0" in result.output and "--workers 4" in result.output


def test_submit_puts_workdirs_under_workdir_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_config(
        tmp_path / "s.yaml",
        {
            "diffuse": {"cluster": {"type": "slurm", "workdir-root": str(tmp_path / "scratch")}},
            "jobqueue": {"slurm": {"cores": 1, "memory": "1GB"}},
        },
    )
    result = dry_run("--cluster", spec, "--", "integrate", "g.nxs", "d.nxs")
    assert result.exit_code == 0, result.output
    assert f"--workdir {tmp_path / 'scratch'}/integrated.nxs-" in result.output


def test_cluster_config_command():
    runner = CliRunner()
    listing = runner.invoke(app, ["cluster-config"])
    assert listing.exit_code == 0 and all(name in listing.output for name in SHIPPED_CONFIGS)
    shown = runner.invoke(app, ["cluster-config", "slurm"])
    assert shown.output == (CONFIG_DIR / "slurm.yaml").read_text()
    assert runner.invoke(app, ["cluster-config", "pbs"]).exit_code == 1


def test_two_local_clusters_in_one_fresh_process():
    """distributed imported first inside the cluster config's ``dask.config.set`` block lost its
    defaults when the block ended: the second cluster of a process failed with KeyError 'comm'."""
    import subprocess
    import sys

    code = (
        "import dask.config\n"
        "from pipeline.cluster import connect\n"
        "for _ in range(2):\n"
        "    with connect('local', workers=1) as c:\n"
        "        assert c.submit(sum, [1, 2]).result() == 3\n"
        "assert dask.config.get('distributed.comm.timeouts.connect')\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_submit_through_the_real_entry_point_sees_every_command(tmp_path):
    """``python -m pipeline`` registers only the command it runs (start-up time); ``submit`` parses
    another command's arguments, so it must still see them all."""
    import subprocess
    import sys

    cubic = Path(__file__).parent / "data" / "cubic"
    command = ["integrate", cubic / "geometry.nxs", cubic / "data.nxs", "--outfile", tmp_path / "x.nxs"]
    argv = [sys.executable, "-m", "pipeline", "submit", "--dry-run", "--", *map(str, command)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "-m pipeline integrate" in done.stdout
    listed = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True)
    assert "reintegrate" in listed.stdout and "submit" in listed.stdout


def test_threads_in_this_process_take_the_cluster_files_keys_without_dask(tmp_path):
    """A local cluster config's keys (here workers and workdir-root) reach a cluster of threads in
    this process, and nothing imports dask for it (a fresh process: ~0.08 s of every integrate)."""
    config = tmp_path / "mine.yaml"
    config.write_text(
        f"diffuse:\n  cluster:\n    type: local\n    workers: 3\n    workdir-root: {tmp_path / 'scratch'}\n"
    )
    code = (
        "import sys\n"
        "from pipeline.cluster import connect, default_workdir\n"
        f"with connect({str(config)!r}, threads_ok=True, light=True) as c:\n"
        "    print(sum(c.nthreads().values()), default_workdir('/data/out.nxs'))\n"
        "print(default_workdir('/data/out.nxs'), 'dask' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    inside, after = done.stdout.splitlines()
    threads, workdir = inside.split()
    assert threads == "3" and workdir.startswith(str(tmp_path / "scratch" / "out.nxs-"))
    assert after == "None False"
