"""Where the work runs: local processes or threads, SLURM jobs (interactive or batch), a running scheduler.

``connect`` (:mod:`pipeline.cluster.connection`) is the one entry point; cluster config files are
read and validated by :mod:`pipeline.cluster.config`; :mod:`~pipeline.cluster.slurm` starts
workers in SLURM jobs, :mod:`~pipeline.cluster.batch` writes ``diffuse submit``'s job scripts.
The shipped config files are in ``configs/``. Names are imported on first use: ``connect``
imports distributed, which the config readers do not need.
"""

from __future__ import annotations

import importlib

__all__ = [
    "connect",
    "default_workdir",
    "default_workers",
    "in_process_cluster",
    "local_dashboard_link",
    "wait_for_workers",
]

_WHERE = {
    "connect": "pipeline.cluster.connection",
    "default_workdir": "pipeline.cluster.connection",
    "in_process_cluster": "pipeline.cluster.connection",
    "local_dashboard_link": "pipeline.cluster.connection",
    "wait_for_workers": "pipeline.cluster.connection",
    "default_workers": "pipeline.cluster.config",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'pipeline.cluster' has no attribute {name!r}")
