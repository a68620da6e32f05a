"""Several SPUs as one block-diagonal preconditioner (docs/scaling.md).

A chip holds a fixed number of cells; a model with more parameters N than that is split into
K blocks, one per chip:

    with Device.spawn(kappa0=1e-3) as a, Device.spawn(kappa0=1e-3, seed=1) as b:
        opt = TNGD(model, devices=[a, b], partition="layer")
        loss = opt.step(x, y)

The parameters theta (N,) are cut into K contiguous blocks theta_i (N_i,). Block i's factor
columns J_i (m x N_i), the shared H (m x m) and the gradient slice g_i go to chip i, which
solves (J_i^T H J_i + lambda I) x_i = g_i exactly as one chip solves the whole system
(host/training/tngd.py's ThermodynamicNGD, one per chip); the chips run concurrently (a
thread per chip, each waiting on its own socket while its daemon works) and the estimate is
the concatenation of the x_i (the threads are kept for the optimizer's lifetime: TNGD.close
stops them, and so does garbage collection). This is the block-diagonal approximation of
C = J^T H J that K-FAC makes between layers (Martens & Grosse, arXiv 1503.05671, section 4.2):
it drops the off-diagonal blocks J_i^T H J_j (i != j), the curvature coupling parameters of
different blocks. It is exact when those vanish (e.g. heads on disjoint inputs under an MSE
loss), and with one chip it is one chip's solve.

Partitions (:func:`block_sizes`):

- ``"layer"`` (default): blocks are runs of whole layers (a module's parameter tensors,
  weight and bias together, as in K-FAC), K consecutive groups chosen to make the largest
  block as small as possible; a layer larger than a chip is first cut into the fewest
  near-equal pieces that fit (a K-FAC block that no chip holds is itself split); needs at
  least K layers (or pieces);
- ``"contiguous"``: K ranges of N // K or N // K + 1 parameters, cutting through layers;
- a list of K block sizes (summing to N).

A block must fit its chip's cells (checked when the optimizer is built). Each chip's noise
stream is seeded with seed + i. The step's report (:class:`MultiChipStep`) holds every
chip's DeviceStep and, as one chip's fields, the phases on the K chips' critical path
(timing.multichip: the chips overlap; their transfers share one link or not).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spusim.driver.client import Device
from spusim.training.curvature import Factors
from spusim.training.linearization import ParameterSet
from spusim.training.tngd import DeviceStep, ThermodynamicNGD
from spusim.timing.multichip import check_link, combine

PARTITIONS = ("layer", "contiguous")


class PartitionError(ValueError):
    """The parameters cannot be cut into blocks for these chips as asked."""


def layer_sizes(params: ParameterSet) -> list[int]:
    """The parameter count of each layer, in order: consecutive trainable tensors of one
    module (``net.0.weight``, ``net.0.bias``) form a layer."""
    sizes: list[int] = []
    previous = None
    for name, size in zip(params.names, params.sizes, strict=True):
        module = name.rpartition(".")[0]
        if sizes and module == previous:
            sizes[-1] += size
        else:
            sizes.append(size)
        previous = module
    return sizes


def balanced_groups(units: Sequence[int], k: int) -> list[int]:
    """``units`` cut into ``k`` non-empty runs of consecutive units whose largest sum is as
    small as possible (dynamic programming, O(k L^2) for L units); returns the runs' sums."""
    n = len(units)
    if not 1 <= k <= n:
        raise PartitionError(f"cannot cut {n} layers into {k} blocks of whole layers")
    prefix = np.concatenate([[0], np.cumsum(units)])
    # best[j][e]: the least largest sum cutting the first e units into j runs; cut[j][e]: where
    # the last run starts.
    best = np.full((k + 1, n + 1), np.inf)
    cut = np.zeros((k + 1, n + 1), dtype=int)
    best[0][0] = 0
    for j in range(1, k + 1):
        for e in range(j, n + 1):
            for s in range(j - 1, e):
                largest = max(best[j - 1][s], prefix[e] - prefix[s])
                if largest < best[j][e]:
                    best[j][e], cut[j][e] = largest, s
    ends, e = [], n
    for j in range(k, 0, -1):
        ends.append(e)
        e = cut[j][e]
    bounds = [0, *ends[::-1]]
    return [int(prefix[b] - prefix[a]) for a, b in itertools.pairwise(bounds)]


def block_sizes(params: ParameterSet, chips: int, partition: str | Sequence[int],
                cells: int | None = None) -> list[int]:
    """The K = ``chips`` block sizes of ``partition`` (module doc) over ``params``; for
    "layer", a layer larger than ``cells`` (the smallest chip's) is first cut into the fewest
    near-equal pieces that fit."""
    n = params.n
    if not isinstance(partition, str):
        sizes = [int(size) for size in partition]
        if len(sizes) != chips or min(sizes) < 1 or sum(sizes) != n:
            raise PartitionError(f"a partition of {n} parameters over {chips} chips needs "
                             f"{chips} positive block sizes summing to {n}, got {sizes}")
        return sizes
    if partition == "layer":
        layers = [piece for size in layer_sizes(params)
                  for piece in _even(size, 1 if cells is None else -(-size // cells))]
        if chips > len(layers):
            raise PartitionError(f"partition='layer' needs at least as many layers as chips: the "
                             f"model has {len(layers)} layers ({layers} parameters) for "
                             f"{chips} chips; use partition='contiguous' or fewer chips")
        return balanced_groups(layers, chips)
    if partition == "contiguous":
        if chips > n:
            raise PartitionError(f"cannot cut {n} parameters into {chips} blocks")
        return _even(n, chips)
    raise PartitionError(f"partition must be one of {list(PARTITIONS)} or a list of block sizes, "
                     f"got {partition!r}")


def _even(n: int, k: int) -> list[int]:
    """n cut into k sizes n // k or n // k + 1, the larger first."""
    return [n // k + (i < n % k) for i in range(k)]


@dataclass(frozen=True)
class MultiChipStep(DeviceStep):
    """The K chips' part of one TNGD step. As one chip's fields (DeviceStep): upload,
    analog_ns and readout are the phases on the K chips' critical path (timing.multichip),
    delay_ns the longest delay, total_ns delay_ns plus the critical path; dac_clipped,
    adc_clipped and elements are summed over the chips, samples is the fewest any chip
    averaged. chips: each chip's own DeviceStep, in block order; link: "separate" or
    "shared"; blocks: N_i of each chip."""

    chips: tuple[DeviceStep, ...] = ()
    link: str = "separate"
    blocks: tuple[int, ...] = ()

    @classmethod
    def of(cls, chips: Sequence[DeviceStep], link: str,
           blocks: Sequence[int]) -> MultiChipStep:
        path = combine([chip.costs(0) for chip in chips], link)
        critical = sum(path.upload.values()) + path.analog_ns + sum(path.readout.values())
        return cls(path.upload, path.analog_ns, path.readout, path.delay_ns,
                   path.delay_ns + critical, sum(c.dac_clipped for c in chips),
                   sum(c.adc_clipped for c in chips), min(c.samples for c in chips),
                   sum(c.elements for c in chips), tuple(chips), link, tuple(blocks))


class BlockDiagonalNGD:
    """d ~ blockdiag(J_i^T H J_i + lambda I)^-1 g on K devices, one block each (module doc).

    devices: the chips, in block order; blocks: N_i of each (summing to N); link: whether
    the chips' transfers share one link ("shared") or not ("separate"), for the step's
    timing. The other options are :class:`ThermodynamicNGD`'s, the same for every chip (chip
    i's seed is seed + i). It keeps a thread per chip until :meth:`close` (or until it is
    garbage collected)."""

    def __init__(self, devices: Sequence[Device], blocks: Sequence[int], *,
                 link: str = "separate", seed: int | None = None, **options: Any) -> None:
        if len(devices) != len(blocks) or not devices:
            raise ValueError(f"{len(devices)} devices for {len(blocks)} blocks")
        for i, (device, size) in enumerate(zip(devices, blocks, strict=True)):
            cells = int(device.config["cells"])
            if size > cells:
                raise PartitionError(f"block {i} has {size} parameters but chip {i} "
                                 f"({device.endpoint}) holds {cells} cells: use more chips, "
                                 "another partition, or chips with more cells")
        self.blocks = [int(size) for size in blocks]
        self.link = check_link(link)
        self.solvers = [ThermodynamicNGD(device, seed=None if seed is None else seed + i,
                                         **options)
                        for i, device in enumerate(devices)]
        self._pool = ThreadPoolExecutor(len(devices), thread_name_prefix="spu-chip")
        # Collected unclosed: stop the threads without joining them (the last reference may
        # drop in one of them).
        self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=False)

    def close(self) -> None:
        """Stop the chips' threads, waiting for them to end; the devices stay open (their
        owner closes them). A closed solver cannot solve. Closing again does nothing."""
        if self._finalizer.detach() is not None:
            self._pool.shutdown(wait=True)

    @property
    def devices(self) -> list[Device]:
        return [solver.device for solver in self.solvers]

    def restart(self) -> None:
        """Forget every chip's state: the next solve sets each to its g_i."""
        for solver in self.solvers:
            solver.restart()

    def solve(self, curvature: Factors, g: torch.Tensor,
              step: int) -> tuple[np.ndarray, MultiChipStep]:
        """Every chip's solve of its block, concurrently: the estimate (N,) float64 and what
        the chips did."""
        if not self._finalizer.alive:
            raise RuntimeError("this multi-chip optimizer was closed: build a new one")
        if len(g) != sum(self.blocks):
            raise ValueError(f"the blocks cover {sum(self.blocks)} parameters but the gradient "
                             f"has {len(g)}: the trainable parameters changed since the "
                             "optimizer was built; build a new one")
        starts = np.cumsum([0, *self.blocks])

        def solve_block(i: int) -> tuple[np.ndarray, DeviceStep]:
            block = slice(int(starts[i]), int(starts[i + 1]))
            return self.solvers[i].solve(
                Factors(curvature.J[:, block].contiguous(), curvature.H), g[block], step)

        running = [self._pool.submit(solve_block, i) for i in range(len(self.solvers))]
        try:
            solved = [future.result() for future in running]
        finally:  # a chip's error (or Ctrl-C) leaves no other chip's solve behind, running
            wait(running)
        return (np.concatenate([x for x, _ in solved]),
                MultiChipStep.of([report for _, report in solved], self.link, self.blocks))


@contextmanager
def spawned(chips: int, seed: int | None = None, **options: Any) -> Iterator[list[Device]]:
    """``chips`` private daemons (Device.spawn with ``options``, by ``spu serve`` flag name, or
    ``config=`` a configuration), chip i seeded ``seed + i``; all stopped on exit."""
    with ExitStack() as stack:
        yield [stack.enter_context(Device.spawn(
                   **options, **({} if seed is None else {"seed": seed + i})))
               for i in range(chips)]


@contextmanager
def connected(endpoints: Sequence[str], **keys: Any) -> Iterator[list[Device]]:
    """Clients of running daemons, one per endpoint, in order (``keys``: Device.connect's
    curve_server_key and curve_client_key, the same for every endpoint); closed on exit."""
    with ExitStack() as stack:
        yield [stack.enter_context(Device.connect(endpoint, **keys)) for endpoint in endpoints]
