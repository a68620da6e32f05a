"""Sweeps on Dask (host/training/sweep.py): a real local cluster of two worker processes, one of
them killed in the middle of a task."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace

import psutil
import pytest
from dask.distributed import Client, LocalCluster

from spusim.training.spec import RunSpec
from spusim.training.sweep import Task, projected_seconds, run_sweep

pytestmark = pytest.mark.daemon


def _daemon_parent(client: Client) -> tuple[str, int] | None:
    """(address, pid) of a worker whose task has started a daemon (it is mid-task), if any."""
    for address, pid in client.run(os.getpid).items():
        try:
            children = psutil.Process(pid).children()
        except psutil.NoSuchProcess:
            continue
        if any("spusim.device" in " ".join(child.cmdline()) for child in children):
            return address, pid
    return None


def test_a_sweep_survives_a_killed_worker_and_counts_each_run_once():
    """Four runs (two host-only, two TNGD, each starting its daemon) on a LocalCluster of two
    workers, addressed as an existing cluster; once a TNGD task has started its daemon, its
    worker process is killed (SIGKILL). The scheduler runs that task again (the nanny
    restarts the worker): every (label, seed) has exactly one outcome, complete, and the
    killed one came from another process."""
    tngd = RunSpec(model="softmax", optimizer="tngd", t=1.0, iterations=20, eval_every=10)
    sgd = RunSpec(model="softmax", optimizer="sgd", iterations=5, eval_every=5)
    tasks = [Task("sgd", replace(sgd, seed=s)) for s in (0, 1)]
    tasks += [Task("tngd", replace(tngd, seed=s), {"kappa0": 1e-3}) for s in (0, 1)]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as watcher:
        done: dict = {}
        sweep = threading.Thread(target=lambda: done.update(outcomes=run_sweep(
            tasks, cluster=cluster.scheduler_address, progress=False)))
        sweep.start()
        deadline = time.monotonic() + 120
        while (victim := _daemon_parent(watcher)) is None:
            assert time.monotonic() < deadline and sweep.is_alive(), "no TNGD task started"
            time.sleep(0.05)
        os.kill(victim[1], signal.SIGKILL)
        sweep.join(timeout=240)
        assert not sweep.is_alive()
    outcomes = done["outcomes"]
    assert sorted(outcomes) == sorted(task.key for task in tasks)
    for (label, seed), outcome in outcomes.items():
        assert (outcome.label, outcome.seed) == (label, seed) and outcome.error is None
        assert len(outcome.result.history.records) == (20 if label == "tngd" else 5)
        assert (outcome.devices != []) == (label == "tngd")
    assert all(not outcome.worker.endswith(f":{victim[1]}") for outcome in outcomes.values()
               if outcome.label == "tngd")


def test_repeated_runs_are_refused_before_anything_runs():
    tasks = [Task("sgd", RunSpec(optimizer="sgd")), Task("sgd", RunSpec(optimizer="sgd"))]
    with pytest.raises(ValueError, match=r"\('sgd', 0\)"):
        run_sweep(tasks)


def test_the_projection_is_the_longest_task_or_the_total_shared():
    assert projected_seconds([4.0, 2.0, 2.0], 1) == 8.0
    assert projected_seconds([4.0, 2.0, 2.0], 2) == 4.0
    assert projected_seconds([3.0, 3.0, 3.0, 3.0], 2) == 6.0
    assert projected_seconds([3.0, 3.0, 3.0, 3.0], 100) == 3.0
