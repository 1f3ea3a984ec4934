"""The work directory of a run: spilled partial rows, reduced parts, and a record of finished tasks.

Layout::

    <workdir>/manifest.json           what the run computes (a fingerprint of inputs and parameters)
    <workdir>/map/task-00012-run000.npy  partial rows of map task 12 (one file per spilled run),
                                         each sorted by voxel key
    <workdir>/map/task-00012.json     its record (runs with their H histograms): written last, so it
                                      marks the task "done"
    <workdir>/reduce/part-00003.npy   the finished rows of partition 3

With ``resume`` a run reuses every map task whose record exists and whose fingerprint matches; tasks
write under temporary names and rename, so a killed task never leaves a file that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.atomic import write_json_atomic

__all__ = ["WorkDir", "fingerprint_files"]

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def fingerprint_files(paths) -> list[list]:
    """(path, size, mtime) of each input file: enough to notice that an input changed between runs."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([str(p), st.st_size, int(st.st_mtime_ns)])
    return out


class WorkDir:
    """A work directory bound to one fingerprint (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, fingerprint: dict, resume: bool):
        self.path = Path(path)
        self.fingerprint = fingerprint
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
        manifest = self.path / MANIFEST
        if self.path.exists():
            if not manifest.exists() and any(self.path.iterdir()):
                raise InputError(
                    f"work directory {str(self.path)!r} exists and is not one of ours (no {MANIFEST}); "
                    "choose another --workdir"
                )
            old = json.loads(manifest.read_text()).get("digest") if manifest.exists() else None
            if resume and old is not None and old != digest:
                raise InputError(
                    f"cannot --resume from {str(self.path)!r}: it belongs to a run with other inputs or "
                    "parameters; run without --resume to start afresh"
                )
            if not resume and old is not None:
                log.info("removing the previous run's work directory %s", self.path)
                shutil.rmtree(self.path)
        self.map_dir.mkdir(parents=True, exist_ok=True)
        self.reduce_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(manifest, {"digest": digest, "fingerprint": fingerprint})
        self.digest = digest

    @property
    def map_dir(self) -> Path:
        return self.path / "map"

    @property
    def reduce_dir(self) -> Path:
        return self.path / "reduce"

    def reduce_file(self, index: int) -> Path:
        return self.reduce_dir / f"part-{index:05d}.npy"

    def finished_map_tasks(self) -> dict[int, dict]:
        """Records of map tasks whose output is complete (the record and every run file present)."""
        done = {}
        for path in sorted(self.map_dir.glob("task-*.json")):
            try:
                record = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            if all((self.map_dir / run["file"]).exists() for run in record.get("runs", [])):
                done[int(record["index"])] = record
        return done

    def clear_reduce(self) -> None:
        for f in self.reduce_dir.glob("*"):
            f.unlink()

    def remove(self, attempts: int = 50) -> None:
        """Delete the directory. A task cancelled after an error may still be finishing (dask cannot
        stop a running task) and write a file while the tree is removed; once the directories are
        gone it cannot, so retry until the tree is gone."""
        for _ in range(attempts):
            shutil.rmtree(self.path, ignore_errors=True)
            if not self.path.exists():
                return
            time.sleep(0.1)
        log.warning("could not remove the work directory %s", self.path)

    def disk_usage(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
