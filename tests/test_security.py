"""Schedulers, workers and dashboards started by us listen on localhost only (unless a config asks)."""

from __future__ import annotations

import os

import dask.config
import psutil
import pytest

from pipeline.cluster import connect


def _listening(pids: set[int]) -> set[str]:
    addresses = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            addresses.add(conn.laddr.ip)
    return addresses


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_local_cluster_listens_on_localhost_only(processes):
    with dask.config.set({"diffuse.cluster.processes": processes}), connect("local", workers=1) as client:
        client.submit(sum, [1, 2]).result()
        me = psutil.Process(os.getpid())
        pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
        addresses = _listening(pids)
    assert addresses, "expected the scheduler and dashboard to listen somewhere"
    assert addresses <= {"127.0.0.1"}, f"listening on {sorted(addresses)}"
