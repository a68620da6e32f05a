"""Several chips as one block-diagonal preconditioner (host/training/multichip.py), on daemon
subprocesses from the plugin's ``spu_chips`` (kappa0 = 0: deterministic, compared with exact
arithmetic to rounding)."""

from __future__ import annotations

import copy
import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from spusim.training.curvature import Factors
from spusim.training.linearization import ParameterSet
from spusim.training.models import cnn, mlp
from spusim.training.multichip import (
    BlockDiagonalNGD,
    MultiChipStep,
    balanced_groups,
    block_sizes,
    layer_sizes,
)
from spusim.training.tngd import TNGD
from spusim.timing.model import Phase
from spusim.timing.multichip import chips_schedule
from spusim.timing.pipeline import IterationCosts
from tests.training_support import one_blas_thread  # noqa: F401  (autouse)

DAMPING = 0.5
SPU = str(Path(sys.executable).with_name("spu"))
NOISELESS = pytest.mark.spu_config(kappa0=0.0, seed=0)


# --- partitions (no device) ----------------------------------------------------------------

def test_layers_are_modules_and_blocks_are_balanced_runs_of_layers():
    params = ParameterSet(mlp(64, 10, (6, 5)))
    assert layer_sizes(params) == [390, 35, 60]  # weight and bias together
    assert block_sizes(params, 1, "layer") == [485]
    assert block_sizes(params, 2, "layer") == [390, 95]
    assert block_sizes(params, 3, "layer") == [390, 35, 60]
    assert balanced_groups([5, 1, 1, 5], 2) == [6, 6]
    assert balanced_groups([5, 1, 1, 5], 3) in ([5, 2, 5], [6, 1, 5], [5, 1, 6])
    assert max(balanced_groups([1, 9, 1, 1, 1, 1, 9, 1], 3)) == 10
    assert block_sizes(params, 4, "contiguous") == [122, 121, 121, 121]
    assert block_sizes(params, 2, [100, 385]) == [100, 385]
    # the paper-style CNN on 4 096-cell chips: its dense layer (4 640) is cut in two to fit
    assert block_sizes(ParameterSet(cnn((1, 8, 8), 10, hidden=32)), 2, "layer",
                       cells=4096) == [2360, 2650]


@pytest.mark.parametrize(("chips", "partition", "message"), [
    (4, "layer", "at least as many layers"), (2, "rows", "partition must be"),
    (2, [100, 100], "summing to 485"), (2, [485], "2 positive block sizes")])
def test_impossible_partitions_are_refused(chips, partition, message):
    with pytest.raises(ValueError, match=message):
        block_sizes(ParameterSet(mlp(64, 10, (6, 5))), chips, partition)


def test_a_block_larger_than_its_chip_is_refused_before_any_upload():
    chips = [SimpleNamespace(config={"cells": 400}, endpoint="tcp://a"),
             SimpleNamespace(config={"cells": 90}, endpoint="tcp://b")]
    with pytest.raises(ValueError, match="block 1 has 95 parameters but chip 1"):
        TNGD(mlp(64, 10, (6, 5)), devices=chips, partition=[390, 95])
    with pytest.raises(TypeError, match="device"):
        TNGD(mlp(64, 10, (6, 5)))


# --- on daemons ----------------------------------------------------------------------------

def random_problem(m: int, n: int, seed: int) -> tuple[Factors, torch.Tensor]:
    rng = np.random.default_rng(seed)
    J = rng.normal(size=(m, n)) / np.sqrt(n)
    R = rng.normal(size=(m, m))
    H = R @ R.T / m
    return (Factors(torch.from_numpy(J), torch.from_numpy(H)),
            torch.from_numpy(rng.normal(size=n)))


def damped_solve(J: np.ndarray, H: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.linalg.solve(J.T @ H @ J + DAMPING * np.eye(J.shape[1]), g)


@NOISELESS
@pytest.mark.daemon
@pytest.mark.parametrize("blocks", [[40, 50], [30, 25, 35]])
def test_block_diagonal_solve_is_the_per_block_exact_solves(spu_chips, blocks):
    """kappa0 = 0, t = 100 tau, the exact integrator: chip i's part of the estimate is
    (J_i^T H J_i + lambda I)^-1 g_i to rounding (the transient e^{-lambda t} ~ 2e-22 is below
    it); the whole system's solve differs by the off-diagonal curvature dropped."""
    curvature, g = random_problem(12, sum(blocks), seed=len(blocks))
    solver = BlockDiagonalNGD(spu_chips(len(blocks)), blocks, damping=DAMPING, t=100.0,
                              integrator="exact")
    estimate, report = solver.solve(curvature, g, 0)
    J, H, gn = curvature.J.numpy(), curvature.H.numpy(), g.numpy()
    starts = np.cumsum([0, *blocks])
    expected = np.concatenate([damped_solve(J[:, a:b], H, gn[a:b])
                               for a, b in zip(starts, starts[1:])])
    np.testing.assert_allclose(estimate, expected, rtol=0, atol=1e-12 * np.linalg.norm(expected))
    full = damped_solve(J, H, gn)
    assert np.linalg.norm(full - expected) > 1e-3 * np.linalg.norm(full)
    assert isinstance(report, MultiChipStep) and report.blocks == tuple(blocks)
    assert len(report.chips) == len(blocks) and report.analog_ns == report.chips[0].analog_ns


class TwoHeads(nn.Module):
    """Two linear heads on disjoint inputs: under an MSE loss (H = I) the curvature has no
    block coupling the heads, so the block-diagonal preconditioner is exact."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a, self.b = nn.Linear(5, 3).double(), nn.Linear(4, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x[:, :5]), self.b(x[:, 5:])], dim=1)


@NOISELESS
@pytest.mark.daemon
def test_two_chips_step_like_one_chip_on_a_block_diagonal_model(spu_chips):
    """Three TNGD steps (Euler-Maruyama, t = 5 tau) on 2 chips, one head each, equal three
    steps on one chip holding both, to rounding; on an MLP (layers coupled by its curvature)
    the same two chips give another direction."""
    one, *two = spu_chips(3)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 9, generator=generator, dtype=torch.float64),
                torch.randn(16, 5, generator=generator, dtype=torch.float64)) for _ in range(3)]
    single, split = TwoHeads(), TwoHeads()
    options = {"loss": "mse", "lr": 0.3, "damping": DAMPING, "t": 5.0}
    single_opt = TNGD(single, device=one, **options)
    split_opt = TNGD(split, devices=two, **options)
    assert split_opt.solver.blocks == [18, 10]
    for x, y in batches:
        single_opt.step(x, y)
        split_opt.step(x, y)
        torch.testing.assert_close(split_opt.report.direction, single_opt.report.direction,
                                   rtol=0, atol=1e-12)
    for p, q in zip(single.parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)

    coupled = mlp(9, 5, (4,), seed=1)
    options["loss"] = "cross_entropy"
    labels = [(x, torch.randint(0, 5, (16,), generator=generator)) for x, _ in batches]
    single_opt = TNGD(copy.deepcopy(coupled), device=one, **options)
    split_opt = TNGD(coupled, devices=two, **options)
    single_opt.step(*labels[0])
    split_opt.step(*labels[0])
    gap = (split_opt.report.direction - single_opt.report.direction).norm()
    assert gap > 1e-3 * single_opt.report.direction.norm()


def _chip_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("spu-chip")}


@NOISELESS
@pytest.mark.daemon
def test_the_chips_threads_live_as_long_as_the_optimizer(spu_chips):
    """Every step runs on the same two threads, one per chip; close() ends them (waiting for
    them) and a closed optimizer refuses to step; one dropped without close() has its threads
    end when it is collected."""
    others = _chip_threads()  # another test's, not yet collected

    def chip_threads() -> set[threading.Thread]:
        return _chip_threads() - others

    chips = spu_chips(2)
    x = torch.randn(8, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.zeros(8, 5, dtype=torch.float64)
    optimizer = TNGD(TwoHeads(), devices=chips, loss="mse", lr=0.1, damping=DAMPING, t=1.0)
    optimizer.step(x, y)
    threads = chip_threads()
    assert len(threads) == 2
    optimizer.step(x, y)
    assert chip_threads() == threads
    optimizer.close()
    assert chip_threads() == set() and not any(t.is_alive() for t in threads)
    with pytest.raises(RuntimeError, match="closed"):
        optimizer.step(x, y)
    optimizer.close()  # again: nothing to do

    optimizer = TNGD(TwoHeads(), devices=chips, loss="mse", lr=0.1, damping=DAMPING, t=1.0)
    optimizer.step(x, y)
    threads = chip_threads()
    assert len(threads) == 2
    del optimizer
    gc.collect()
    for thread in threads:
        thread.join(timeout=10)
    assert chip_threads() == set()


@pytest.mark.spu_config(kappa0=0.0, seed=0, fault_delay_reply="1", fault_delay_ms=60)
@pytest.mark.daemon
def test_chips_run_concurrently(spu_chips):
    """Two chips with a block each take less than 1.5 times one chip with one block of the
    same size (calls made one chip after the other would take twice): best of three host
    wall times. The daemons hold every reply back 60 ms, a device whose work takes wall time
    without taking the host's CPU (as a chip's analog run does), beside their own numerical
    work (N_i = 1500, m = 32, 300 tau of Euler-Maruyama): on this 2-core machine, shared
    with other jobs, two CPU-bound daemons alone would measure the cores' load."""
    chips = spu_chips(2)
    curvature, g = random_problem(32, 3000, seed=5)
    half = Factors(curvature.J[:, :1500].contiguous(), curvature.H)

    def best(solver: BlockDiagonalNGD, *problem) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            solver.solve(*problem, 0)
            times.append(time.perf_counter() - started)
        return min(times)

    one = best(BlockDiagonalNGD(chips[:1], [1500], damping=DAMPING, t=300.0), half, g[:1500])
    two = best(BlockDiagonalNGD(chips, [1500, 1500], damping=DAMPING, t=300.0), curvature, g)
    assert two < 1.5 * one, (one, two)


@pytest.mark.spu_config(kappa0=0.001, curve=True)
@pytest.mark.daemon
def test_spu_train_on_two_curve_daemons_prices_their_critical_path(spu_chips, spu_daemon_pool,
                                                                   tmp_path):
    """``spu train --connect EP1,EP2 --curve-... --link shared``: two running daemons that
    answer CURVE clients only (the keys passed through to both), one record with both
    configurations, each row's blocks and per-chip phases, and an iteration time (Algorithm 1:
    digital, then the device part) whose device part is the two chips' critical path."""
    spu_chips(2)
    daemons = [spu_daemon_pool.get({"kappa0": 0.001, "curve": True}, chip=i) for i in (0, 1)]
    keys = daemons[0].curve_keys
    path = tmp_path / "run.json"
    result = subprocess.run([SPU, "train", "--model", "softmax", "--partition", "contiguous",
                             "--connect", ",".join(d.endpoint for d in daemons),
                             "--curve-server-key", str(keys["curve_server_key"]),
                             "--curve-client-key", str(keys["curve_client_key"]),
                             "--link", "shared", "--iterations", "3", "--t", "1",
                             "--json", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    record = json.loads(path.read_text())
    assert len(record["config"]["devices"]) == 2
    (run,) = record["runs"]
    assert run["label"] == "tngd (t=1τ, 2 chips)"
    for row in run["rows"]:
        assert row["device_blocks"] == [325, 325] and row["device_link"] == "shared"
        chips = [IterationCosts(0, {Phase(k): v for k, v in c["upload"].items()}, c["analog_ns"],
                                {Phase(k): v for k, v in c["readout"].items()})
                 for c in row["device_chips"]]
        assert row["iteration_ns"] == row["digital_ns"] + chips_schedule(chips, "shared").total_ns
