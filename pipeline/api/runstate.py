"""What ``diffuse run`` has finished in its outdir, so that ``--resume`` skips it.

``outdir/.diffuse-run.json`` (written atomically after every step)::

    {"version": 1,
     "started":  {step: digest},                  # the step began with these inputs and options
     "finished": {step: {"digest": ...,           # ... and finished with them
                         "outputs": [[path, size, mtime_ns], ...],   # every file it wrote
                         "result": {...}}}}        # its summary, for the steps after it

A step's digest is a hash of its name, its options and the (path, size, mtime) of its input files,
which include the outputs of the steps before it. With ``--resume`` a step is skipped when it
finished with the same digest and its outputs are still the files it wrote; otherwise it runs, and
integrate, merge and reintegrate reuse the finished tasks of their work directories only when the
step had started with the same digest (a changed option starts them afresh). So a batch job killed
at its wall time (and requeued: ``diffuse submit`` adds ``--resume``) goes on from the step it was in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from pipeline.graph.workdir import fingerprint_files
from pipeline.io.atomic import write_json_atomic

__all__ = ["STATE_FILE", "RunState"]

log = logging.getLogger(__name__)

STATE_FILE = ".diffuse-run.json"
VERSION = 1


def _files(paths) -> list[Path]:
    """Every file of ``paths`` (a directory, such as a parquet dataset, stands for the files in it)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file())
        elif p.exists():
            out.append(p)
    return out


class RunState:
    """The record of one outdir's finished steps (see the module docstring)."""

    def __init__(self, outdir: str | os.PathLike, resume: bool):
        self.path = Path(outdir) / STATE_FILE
        self.resume = resume
        self.started: dict[str, str] = {}
        self.finished: dict[str, dict] = {}
        if resume and self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
                if saved.get("version") == VERSION:
                    self.started = dict(saved["started"])
                    self.finished = dict(saved["finished"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring the unreadable run record %s (%s): every step runs", self.path, exc)

    @property
    def has_record(self) -> bool:
        """True when resuming a run that recorded at least one step here (its outputs may be replaced)."""
        return bool(self.started or self.finished)

    @staticmethod
    def digest(name: str, options: dict, inputs) -> str:
        """The step's identity: its name, options (JSON) and input files' (path, size, mtime)."""
        files = [p for p in inputs if p is not None]
        ident = {"step": name, "options": options, "inputs": fingerprint_files(_files(files))}
        text = json.dumps(ident, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def done(self, name: str, digest: str, outputs) -> dict | None:
        """The saved result of ``name`` if resuming and it finished with ``digest`` and its outputs are
        untouched; else None (the step must run)."""
        record = self.finished.get(name)
        if not self.resume or record is None or record.get("digest") != digest:
            return None
        if fingerprint_files(_files(outputs)) != record.get("outputs"):
            log.info("%s: its outputs changed since it finished; running it again", name)
            return None
        return record.get("result") or {}

    def resumable(self, name: str, digest: str) -> bool:
        """True when resuming and ``name`` had started with ``digest`` (its work directory is reusable)."""
        return self.resume and self.started.get(name) == digest

    def start(self, name: str, digest: str) -> None:
        self.started[name] = digest
        self.finished.pop(name, None)
        self._save()

    def finish(self, name: str, digest: str, outputs, result: dict | None = None) -> None:
        self.finished[name] = {
            "digest": digest,
            "outputs": fingerprint_files(_files(outputs)),
            "result": result or {},
        }
        self._save()

    def _save(self) -> None:
        write_json_atomic(
            self.path, {"version": VERSION, "started": self.started, "finished": self.finished}, indent=1
        )
