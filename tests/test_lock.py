"""pipeline.io.lock: one live run per output; a second run refuses at once naming the first; a lock
left by a killed run is taken over with a note."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import OutputInUseError
from pipeline.io.lock import lock_path, output_lock, output_locks, read_lock, take_notes

DATA = Path(__file__).parent / "data" / "cubic"

HOLDER = """
import sys, time
from pipeline.io.lock import output_lock
with output_lock(sys.argv[1], what="integrate"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@contextlib.contextmanager
def holding(path: Path, seconds: float = 60):
    """Another process holding the lock of ``path`` for the block (killed at its end)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def killed_holder(path: Path) -> int:
    """The PID of a run that took the lock of ``path`` and was killed (SIGKILL) holding it."""
    with holding(path) as proc:
        proc.send_signal(signal.SIGKILL)
    return proc.pid


def test_lock_file_records_the_run_and_is_removed(tmp_path):
    out = tmp_path / "x.nxs"
    with output_lock(out, what="integrate") as lock:
        assert lock.file == tmp_path / ".x.nxs.lock"
        info = read_lock(out)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["what"] == "integrate" and info["started"]
    assert not lock_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_reentrant_in_one_process(tmp_path):
    out = tmp_path / "x.nxs"
    with output_lock(out), output_lock(out), output_locks([out, tmp_path / "y"]):
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_second_run_refuses_naming_the_first(tmp_path):
    out = tmp_path / "x.nxs"
    with holding(out) as holder:
        t0 = time.perf_counter()
        with pytest.raises(OutputInUseError) as err, output_lock(out):
            pass
        assert time.perf_counter() - t0 < 1
    message = str(err.value)
    assert f"PID {holder.pid}" in message and socket.gethostname() in message and "started" in message
    assert "\n" not in message


def test_stale_lock_of_a_killed_run_is_taken_over_with_a_note(tmp_path):
    out = tmp_path / "x.nxs"
    pid = killed_holder(out)
    assert read_lock(out)["pid"] == pid  # the killed run left its lock file
    take_notes()
    with output_lock(out):
        assert read_lock(out)["pid"] == os.getpid()
    notes = take_notes()
    assert len(notes) == 1 and f"PID {pid}" in notes[0] and "stale" in notes[0]


def test_lock_whose_pid_is_gone_on_this_host_is_broken(tmp_path, monkeypatch):
    """flock still held (e.g. inherited by a leftover child) but the recorded PID is gone: taken over."""
    out = tmp_path / "x.nxs"
    with holding(out):
        info = read_lock(out)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        info["pid"] = dead.pid
        lock_path(out).write_text(json.dumps(info))
        take_notes()
        with output_lock(out):
            assert read_lock(out)["pid"] == os.getpid()
        assert any("is gone" in n for n in take_notes())


def test_cli_second_run_on_the_same_output_refuses_at_once(tmp_path):
    out = tmp_path / "x.nxs"
    with holding(out) as holder:
        result = CliRunner().invoke(
            app,
            ["integrate", str(DATA / "geometry.nxs"), str(DATA / "data.nxs"), "--outfile", str(out)],
            env={"COLUMNS": "200"},
        )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and f"PID {holder.pid}" in lines[0], lines
    assert not out.exists()


def test_takeover_removes_the_dead_runs_temporaries(tmp_path):
    out = tmp_path / "x.nxs"
    pid = killed_holder(out)
    (tmp_path / f".x.nxs.log.tmp-{pid}-abc").write_text("partial")
    (tmp_path / f".x.nxs.tmp-{pid}-def").mkdir()
    (tmp_path / f".x.nxs.tmp-{os.getpid()}-ghi").write_text("not the dead run's")
    take_notes()
    with output_lock(out):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".x.nxs.tmp-{os.getpid()}-ghi"]
    assert sum("temporary of the dead run" in n for n in take_notes()) == 2
