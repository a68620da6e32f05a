"""The work a torch computation does, counted: FLOPs, bytes moved and sequential model calls,
as a timing.digital.Work for the digital clock's roofline.

    with count_work(model) as counter:
        loss_fn(model(x), y).backward()
    counter.work  # Work(flops, bytes, calls)

Everything is counted from the operators torch dispatches, so the counts depend only on the
computation and the tensors' shapes: the same model and batch give the same Work on any machine.
Counting costs host time (a Python call per operator, a few ms for a small training step), so a
loop whose step has no data-dependent control flow can count the first step of each batch shape
and reuse its Work.

FLOPs (2 a multiply-add):
- matrix products and convolutions by torch.utils.flop_counter.FlopCounterMode's own formulas.
  It sees the kernels torch.func transforms lower to (vmap, jacrev, jvp, vjp: a vmapped matrix
  product is counted as the batched product it runs as), so per-sample Jacobians are counted;
- grouped convolutions' backward, corrected here: FlopCounterMode's formula ignores ``groups``
  for the weight gradient and counts it ``groups`` times over, and vmap lowers a per-sample
  convolution's backward to a grouped one (groups = batch): 64x too many FLOPs for a per-sample
  Jacobian at b = 64. Here each gradient (input, weight) costs the forward's multiply-adds;
- what FlopCounterMode does not count, added here: matrix-vector and dot products (aten.mv,
  aten.dot, aten.vdot); dense factorizations and solves of an n x n matrix with k right-hand
  sides: Cholesky n^3/3, a triangular solve n^2 k, a Cholesky solve 2 n^2 k, LU 2n^3/3,
  a general solve 2n^3/3 + 2 n^2 k (the textbook counts, Golub and Van Loan, Matrix
  Computations, ch. 3-4), batched matrices counted per matrix;
- elementwise operators (torch's ``pointwise`` tag, and the ``_foreach_`` list operators
  optimizers use): 1 FLOP per output element, copies (clone, copy_, _to_copy) none;
  reductions (``reduction`` tag): 1 per input element. Transcendentals (exp, log) count 1
  like an add: the roofline prices them as memory traffic anyway.

Bytes (a model, stated): every operator that is not a view reads each tensor argument once and
writes each tensor result once, so it moves the sum of their sizes (numel x element size,
capped at the tensor's storage so a broadcast scalar costs its own bytes; in-place operators
count their operand as read and written). Operators that return no tensor and mutate nothing
(shape queries) move nothing. No cache reuse between operators is assumed: an upper bound on
traffic for a fused GPU program, a fair one for eager PyTorch.

Sequential model calls, the passes that cannot run in parallel: each top-level forward call of
the modules given to :func:`count_work` (a vmapped forward runs once, so it counts once) and
each autograd pass (one ``backward()``, ``torch.autograd.grad``, or the backward of a
torch.func ``vjp``/``jacrev``, vmapped or not, counts once: distinct autograd graph tasks).
Work done outside torch (or to be priced by hand) goes in with :meth:`WorkCounter.add`.

What torch executes is what is counted: e.g. a ``jvp`` through a layer whose input carries no
tangent multiplies a materialized zero tangent, one matrix product more than the mathematics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from spusim.timing.digital import Work

aten = torch.ops.aten


def cholesky_flops(n: int) -> int:
    """Cholesky factorization of an n x n matrix: n^3/3 FLOPs (rounded down)."""
    return n**3 // 3


def triangular_solve_flops(n: int, rhs: int = 1) -> int:
    """One triangular solve of an n x n system with ``rhs`` right-hand sides: n^2 per column."""
    return n * n * rhs


def lu_flops(n: int) -> int:
    """LU factorization of an n x n matrix: 2n^3/3 FLOPs (rounded down)."""
    return 2 * n**3 // 3


def _matrices(shape: Sequence[int]) -> tuple[int, int]:
    """(number of matrices in a batch, n) for a (..., n, n) shape."""
    return math.prod(shape[:-2]), shape[-1]


def _columns(shape: Sequence[int]) -> int:
    """Right-hand sides of a (..., n, k) or (n,) operand, summed over the batch."""
    return math.prod(shape[:-2]) * shape[-1] if len(shape) > 1 else 1


# Formulas FlopCounterMode lacks or gets wrong, on shapes (FlopCounterMode passes each tensor
# argument's shape, and the result's as out_shape).
def _mv(a: Sequence[int], x: Sequence[int], *args: Any, out_shape: Any = None,
        **kwargs: Any) -> int:
    return 2 * a[0] * a[1]


def _dot(a: Sequence[int], b: Sequence[int], *args: Any, out_shape: Any = None,
         **kwargs: Any) -> int:
    return 2 * a[0]


def _cholesky(a: Sequence[int], *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    count, n = _matrices(a)
    return count * cholesky_flops(n)


def _solve_triangular(a: Sequence[int], b: Sequence[int], *args: Any, out_shape: Any = None,
                      **kwargs: Any) -> int:  # linalg_solve_triangular(A, B)
    return triangular_solve_flops(a[-1], _columns(b))


def _triangular_solve(b: Sequence[int], a: Sequence[int], *args: Any, out_shape: Any = None,
                      **kwargs: Any) -> int:  # triangular_solve(B, A): the legacy order
    return triangular_solve_flops(a[-1], _columns(b))


def _cholesky_solve(b: Sequence[int], factor: Sequence[int], *args: Any, out_shape: Any = None,
                    **kwargs: Any) -> int:
    return 2 * triangular_solve_flops(factor[-1], _columns(b))


def _lu_solve(lu: Sequence[int], pivots: Sequence[int], b: Sequence[int], *args: Any,
              out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * triangular_solve_flops(lu[-1], _columns(b))


def _lu(a: Sequence[int], *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    count, n = _matrices(a)
    return count * lu_flops(n)


def _solve(a: Sequence[int], b: Sequence[int], *args: Any, out_shape: Any = None,
           **kwargs: Any) -> int:
    count, n = _matrices(a)
    return count * lu_flops(n) + 2 * triangular_solve_flops(n, _columns(b))


def _conv_backward(grad_out: Sequence[int], x: Sequence[int], w: Sequence[int], bias: Any,
                   stride: Any, padding: Any, dilation: Any, transposed: bool,
                   output_padding: Any, groups: int, output_mask: Sequence[bool],
                   out_shape: Any = None, **kwargs: Any) -> int:
    """Each requested gradient (input, weight) costs the forward's FLOPs; w is per group."""
    forward = conv_flop_count(list(x), list(w), list(grad_out), transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    aten.convolution_backward: _conv_backward,
    aten.mv: _mv, aten.dot: _dot, aten.vdot: _dot,
    aten.linalg_cholesky_ex: _cholesky, aten.cholesky: _cholesky,
    aten.linalg_solve_triangular: _solve_triangular, aten.triangular_solve: _triangular_solve,
    aten.cholesky_solve: _cholesky_solve, aten.linalg_lu_solve: _lu_solve,
    aten.linalg_lu_factor_ex: _lu, aten.linalg_solve_ex: _solve, aten._linalg_solve_ex: _solve,
}


COPIES = {aten.clone, aten.copy, aten.copy_, aten._to_copy}  # pointwise-tagged, but no arithmetic


def _tensors(values: Sequence[Any]) -> list[torch.Tensor]:
    """The tensors among an operator's arguments or results (tensors, or lists of them: an
    aten operator nests no deeper)."""
    found: list[torch.Tensor] = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, list | tuple):
            found.extend(item for item in value if isinstance(item, torch.Tensor))
    return found


def _nbytes(tensor: torch.Tensor) -> int:
    """Bytes of a tensor's elements, capped at its storage (a broadcast reads its own bytes)."""
    size = tensor.numel() * tensor.element_size()
    try:
        return min(size, tensor.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):  # no storage (e.g. a zero tensor): nothing read
        return 0


class _TrafficMode(TorchDispatchMode):
    """Bytes moved, elementwise and reduction FLOPs, and autograd passes of every operator."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.elementwise_flops = 0
        self.graph_tasks: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        task = torch._C._current_graph_task_id()
        if task >= 0:
            self.graph_tasks.add(task)
        outputs = _tensors(out if isinstance(out, list | tuple) else (out,))
        if func.is_view or not (outputs or func._schema.is_mutable):  # no data moved
            return out
        inputs = _tensors((*args, *(kwargs or {}).values()))
        self.bytes += sum(map(_nbytes, inputs)) + sum(map(_nbytes, outputs))
        if func.name().startswith("aten::_foreach_"):  # elementwise over the first list
            self.elementwise_flops += sum(t.numel() for t in _tensors(args[:1]))
        elif torch.Tag.pointwise in func.tags and func.overloadpacket not in COPIES:
            self.elementwise_flops += sum(t.numel() for t in outputs)
        elif torch.Tag.reduction in func.tags:
            self.elementwise_flops += inputs[0].numel() if inputs else 0
        return out


class WorkCounter:
    """The work counted so far (see the module doc); :attr:`work` reads it."""

    def __init__(self) -> None:
        self._flops = FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)
        self._traffic = _TrafficMode()
        self._forwards = 0
        self._extra = Work(0, 0, 0)

    @property
    def work(self) -> Work:
        """FLOPs, bytes and sequential calls counted, plus everything :meth:`add`-ed."""
        counted = Work(self._flops.get_total_flops() + self._traffic.elementwise_flops,
                       self._traffic.bytes, self._forwards + len(self._traffic.graph_tasks))
        return counted + self._extra

    def add(self, work: Work) -> None:
        """Count work torch does not see (e.g. done in numpy, or priced by formula)."""
        self._extra = self._extra + work

    @contextmanager
    def _counting(self, modules: Sequence[torch.nn.Module]) -> Iterator[WorkCounter]:
        depth = 0

        def enter(module: torch.nn.Module, inputs: Any) -> None:
            nonlocal depth
            depth += 1
            if depth == 1:
                self._forwards += 1

        def leave(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            nonlocal depth
            depth -= 1

        hooks = [h for m in modules for h in (m.register_forward_pre_hook(enter),
                                             m.register_forward_hook(leave))]
        try:
            with self._traffic, self._flops:
                yield self
        finally:
            for hook in hooks:
                hook.remove()


@contextmanager
def count_work(*modules: torch.nn.Module) -> Iterator[WorkCounter]:
    """Count the work of the torch code in the block; forward calls are counted on ``modules``
    (top-level calls only: a module called inside another counted one adds nothing)."""
    counter = WorkCounter()
    with counter._counting(modules):
        yield counter


class StepWork:
    """The digital work of an optimizer's steps, counted once per key and reused.

    Counts depend only on the computation and the tensors' shapes (module doc), so a step's
    work is counted the first time its key (the batch's shapes, N, and whatever else changes
    what the step runs) is seen and looked up afterwards: one counted step per shape, not a
    few ms of counting on every step. ``enabled`` False (a measured clock, which must not time
    the counting) counts nothing and :meth:`total` is None. The cache holds one Work per key
    seen: a handful per run (bounded by the distinct batch shapes and schedules).
    """

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.modules = modules
        self.enabled = True
        self._known: dict[tuple[Any, ...], Work] = {}

    @contextmanager
    def region(self, key: tuple[Any, ...]) -> Iterator[None]:
        """Count the block's work under ``key`` unless that key was counted before."""
        if not self.enabled or key in self._known:
            yield
            return
        with count_work(*self.modules) as counter:
            yield
        self._known[key] = counter.work

    def total(self, *keys: tuple[Any, ...]) -> Work | None:
        """The work of the regions under ``keys``, added (None when not counting)."""
        if not self.enabled:
            return None
        return sum((self._known[key] for key in keys), Work(0, 0, 0))
