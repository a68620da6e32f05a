"""Sweeps (arms x seeds) as tasks on Dask (docs/scaling.md): every run is one task, and each
TNGD task starts its own daemons inside the task, on whatever worker runs it.

    tasks = [Task("tngd t=5τ", RunSpec(optimizer="tngd", t=5.0, seed=s), {"kappa0": 1e-3})
             for s in range(3)]
    outcomes = run_sweep(tasks)                      # a local cluster of 2 worker processes
    outcomes = run_sweep(tasks, cluster="tcp://scheduler:8786")   # an existing one

By default the cluster is Dask's LocalCluster on loopback: ``workers`` worker processes of one
thread each (a run is single-threaded: torch's and BLAS's threads are limited to one, and its
daemons run with one), started and stopped here. ``cluster`` connects to an existing
scheduler instead; its workers need spusim (with the torch and sweep extras) installed.

A worker that dies mid-task (killed, out of memory, its machine gone) loses its task; the
scheduler runs it again on another worker, up to Dask's ``distributed.scheduler.allowed-failures``
deaths per task (default 3); a task that raises is retried ``retries`` times. Outcomes are
keyed by (label, seed): duplicate keys are refused before anything runs, and each key's task
is one Dask future whose result is taken once, so a run that was retried is counted once. A
device refusing a run (DeviceError, e.g. a block larger than its chip) is deterministic: it is
the task's outcome, not retried. A task's daemons run with ``--exit-with-stdin``, so they stop
with the worker that started them.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from spusim.driver.errors import DeviceError
from spusim.training.data import load
from spusim.training.multichip import spawned
from spusim.training.runs import Result, one_blas_thread, run
from spusim.training.spec import DEVICE_OPTIMIZERS, RunSpec

INSTALL_HINT = "pip install 'spusim[sweep]' (dask[distributed])"


@dataclass(frozen=True)
class Task:
    """One run of a sweep: its label (the arm's), its spec (the seed in it) and, for TNGD,
    its daemons' options by ``spu serve`` flag name (chip i seeded spec.seed + i)."""

    label: str
    spec: RunSpec
    device: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        return (self.label, self.spec.seed)


@dataclass(frozen=True)
class Outcome:
    """What a task returned: the run (None if the device refused it: ``error``), the
    configuration of each of its daemons (empty for host-only runs), the task's wall time
    (seconds, its daemons' start-up included) and where it ran (host:pid)."""

    label: str
    seed: int
    result: Result | None
    devices: list[dict[str, Any]]
    error: str | None
    seconds: float
    worker: str


def run_task(task: Task) -> Outcome:
    """Run ``task`` here (on a worker): its daemons, the training run, the outcome."""
    started, spec = time.perf_counter(), task.spec
    result, devices, error = None, [], None
    with one_blas_thread():
        try:
            if spec.optimizer in DEVICE_OPTIMIZERS:
                with spawned(spec.chips, **{"seed": spec.seed, **task.device}) as chips:
                    devices = [dict(chip.config) for chip in chips]
                    result = run(spec, load(spec.data), chips, progress=False)
            else:
                result = run(spec, load(spec.data), progress=False)
            result.label = task.label
        except DeviceError as refused:
            error = str(refused)
    return Outcome(task.label, spec.seed, result, devices, error,
                   time.perf_counter() - started, f"{socket.gethostname()}:{os.getpid()}")


def run_sweep(tasks: Sequence[Task], *, cluster: str | None = None, workers: int = 2,
              retries: int = 2, progress: bool = True) -> dict[tuple[str, int], Outcome]:
    """Every task on Dask (module doc): the outcomes by (label, seed). ``cluster``: a
    scheduler's address (default: a LocalCluster of ``workers`` processes); ``retries``:
    re-runs of a task that raised; ``progress``: a line on stderr per finished task."""
    keys = [task.key for task in tasks]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"tasks repeat (label, seed) {repeated}: each run must be unique")
    as_completed = _distributed().as_completed
    token = uuid.uuid4().hex[:8]  # keys unique to this sweep, on a shared cluster too
    outcomes: dict[tuple[str, int], Outcome] = {}
    with _client(cluster, workers) as client:
        futures = {client.submit(run_task, task, key=f"spusim-{token}-{i}", retries=retries,
                                 pure=False): task.key
                   for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            outcome = future.result()
            outcomes[futures[future]] = outcome
            if progress:
                state = "refused" if outcome.error else "done"
                print(f"sweep: {len(outcomes)}/{len(tasks)} {outcome.label} seed "
                      f"{outcome.seed}: {state} in {outcome.seconds:.1f} s on {outcome.worker}",
                      file=sys.stderr, flush=True)
    return outcomes


def projected_seconds(seconds: Sequence[float], workers: int) -> float:
    """The least wall time ``workers`` one-task-at-a-time workers (cores, or nodes of one
    core) need for tasks of these durations: max(longest task, total / workers). A lower
    bound: it assumes perfect packing, no start-up and no contention between workers."""
    if workers < 1 or not seconds:
        raise ValueError("need at least one worker and one task")
    return max(max(seconds), sum(seconds) / workers)


@contextmanager
def _client(cluster: str | None, workers: int) -> Iterator[Any]:
    distributed = _distributed()
    if cluster is not None:
        with distributed.Client(cluster) as client:
            yield client
        return
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as local, \
            distributed.Client(local) as client:
        yield client


def _distributed() -> Any:
    try:
        import dask.distributed
    except ImportError:
        raise ImportError(f"sweeps run on Dask: {INSTALL_HINT}") from None
    return dask.distributed
