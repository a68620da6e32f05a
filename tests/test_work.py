"""Counted digital work (spusim.training.work) against hand-computed FLOPs, bytes and calls.

FLOPs follow torch.utils.flop_counter's convention: 2 per multiply-add of a matrix product,
even when the inner dimension is 1 (an outer product).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from collections.abc import Callable  # noqa: E402

from torch.func import functional_call, jacrev, jvp, vjp, vmap  # noqa: E402

from spusim.timing.digital import Work, parse_digital  # noqa: E402
from spusim.training.work import count_work  # noqa: E402


def linear_and_batch() -> tuple[torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3), torch.randn(2, 4)


def test_linear_forward_is_one_matrix_product_and_its_operands() -> None:
    """addmm of x (2x4) and W^T (4x3): 2*2*4*3 = 48 FLOPs; bytes: bias 3 + x 8 + W 12 read and
    out 6 written, 29 floats = 116 bytes; one forward call."""
    layer, x = linear_and_batch()
    with count_work(layer) as counter:
        layer(x)
    assert counter.work == Work(48, 116, 1)


def test_linear_forward_and_backward() -> None:
    """forward 48, loss sum 6, weight gradient g^T x (3x2 @ 2x4) 48, bias gradient sum 6; no
    input gradient (x needs none): 108 FLOPs, one forward and one backward pass."""
    layer, x = linear_and_batch()
    with count_work(layer) as counter:
        layer(x).sum().backward()
    assert (counter.work.flops, counter.work.calls) == (108, 2)


def test_per_sample_jacobian_under_vmap_and_jacrev() -> None:
    """The vmapped forward 48 + bias add 6, then per sample 3 rows of (3x4 weight entries) as
    outer products, 2 * 3 * 3 * 4 = 72 each, 144 for two samples: 198 FLOPs; the vmapped
    forward and the vmapped backward are one pass each."""
    layer, x = linear_and_batch()
    params = dict(layer.named_parameters())

    def f(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, p, (xi,))

    with count_work(layer) as counter:
        jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    assert counter.work.flops == 198 and counter.work.calls == 2
    assert torch.equal(jac["weight"][1, 2, 2], x[1])  # d out_2 / d W_2. = x: the real Jacobian


def test_separate_backward_passes_and_nested_modules() -> None:
    """Two backward() calls are two passes; a Sequential's inner layers add no calls."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    x = torch.randn(5, 4)
    with count_work(model) as counter:
        model(x).sum().backward()
        model(x).sum().backward()
    assert counter.work.calls == 4


def test_cholesky_and_solves() -> None:
    """Cholesky n^3/3 = 72 at n = 6; cholesky_solve with 2 right-hand sides 2 n^2 k = 144;
    a general solve (LU 2n^3/3 + two triangular solves) 144 + 144; one triangular solve 72."""
    torch.manual_seed(0)
    a = torch.randn(6, 6)
    a = a @ a.T + 6 * torch.eye(6)
    b = torch.randn(6, 2)
    with count_work() as counter:
        factor = torch.linalg.cholesky(a)
        torch.cholesky_solve(b, factor)
    assert counter.work.flops == 72 + 144
    with count_work() as counter:
        torch.linalg.solve(a, b)
    assert counter.work.flops == 288
    with count_work() as counter:
        torch.linalg.solve_triangular(factor, b, upper=False)
    assert counter.work.flops == 72


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       iterations: int) -> torch.Tensor:
    """CG from 0; FLOPs besides the products: 2n + c (10n + 2), as commented."""
    x, r = torch.zeros_like(b), b.clone()
    p, rs = r.clone(), r @ r                # 2n
    for _ in range(iterations):
        ap = matvec(p)
        alpha = rs / (p @ ap)               # 2n + 1
        x = x + alpha * p                   # 2n
        r = r - alpha * ap                  # 2n
        new = r @ r                         # 2n
        p = r + (new / rs) * p              # 2n + 1
        rs = new
    return x


def test_conjugate_gradient_iterations() -> None:
    """c iterations of CG on an n x n matrix: 2n + c (2n^2 + 10n + 2) FLOPs, and it solves."""
    n, c = 5, 5
    torch.manual_seed(1)
    a = torch.randn(n, n, dtype=torch.float64)
    a = a @ a.T + n * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, dtype=torch.float64)
    with count_work() as counter:
        x = conjugate_gradient(lambda p: a @ p, b, c)
    assert counter.work.flops == 2 * n + c * (2 * n * n + 10 * n + 2)
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-10)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_cg_on_ggn_vector_products_costs_iterations_times_products() -> None:
    """NGD-CG's solve (J^T J + lambda I) x = g, the GGN-vector product a JVP and a VJP through
    the model (3 sequential calls: the JVP's forward, the VJP's forward and backward): each
    further CG iteration adds one product, the damping (2N) and the CG updates (10N + 2)."""
    layer, x = linear_and_batch()
    n, damping = 15, 0.1

    def f(theta: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, {"weight": theta[:12].view(3, 4), "bias": theta[12:]},
                               (x,))

    theta = torch.cat([layer.weight.detach().flatten(), layer.bias.detach()])

    def ggn(v: torch.Tensor) -> torch.Tensor:
        _, jv = jvp(f, (theta,), (v,))
        _, pullback = vjp(f, theta)
        return pullback(jv)[0] + damping * v

    g = torch.randn(n, generator=torch.Generator().manual_seed(0))
    with count_work(layer) as one:
        ggn(g)
    works = []
    for iterations in (2, 3):
        with count_work(layer) as counter:
            solution = conjugate_gradient(ggn, g, iterations)
        works.append(counter.work)
    assert one.work.calls == 3
    assert works[1].flops - works[0].flops == one.work.flops + 10 * n + 2
    assert works[1].calls - works[0].calls == 3 and works[0].calls == 6
    with count_work(layer) as counter:
        solution = conjugate_gradient(ggn, g, n)
    jac = torch.func.jacrev(f)(theta).reshape(-1, n)
    exact = torch.linalg.solve(jac.T @ jac + damping * torch.eye(n), g)
    assert torch.allclose(solution, exact, rtol=1e-3, atol=1e-4)
    assert counter.work.calls == 3 * n


def test_grouped_convolution_backward_counts_each_group_once() -> None:
    """A depthwise conv (4 groups of 1 channel, 3x3, 5x5 input, batch 2, no bias): forward
    2 * 2 * 4 * 1 * 9 * 9 = 1296 FLOPs, the weight gradient the same; torch's own formula
    would count the gradient 4 times (what vmap's per-sample convolutions run into)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, 3, groups=4, bias=False)
    x = torch.randn(2, 4, 5, 5)
    out = conv(x)
    seed = torch.ones_like(out)
    with count_work() as counter:
        conv(x).backward(seed)
    assert counter.work.flops == 2 * 1296


def test_foreach_and_per_tensor_optimizer_updates_count_alike() -> None:
    """torch.optim.Adam's _foreach_ list operators and its per-tensor loop do the same
    elementwise arithmetic on the same parameters, so they count the same FLOPs."""
    flops = []
    for foreach in (True, False):
        layer, x = linear_and_batch()
        layer(x).sum().backward()
        optimizer = torch.optim.Adam(layer.parameters(), foreach=foreach)
        with count_work() as counter:
            optimizer.step()
        flops.append(counter.work.flops)
    assert flops[0] == flops[1] > 5 * 15  # several elementwise passes over N = 15


def test_added_work_is_counted() -> None:
    with count_work() as counter:
        counter.add(Work(10, 20, 1))
    assert counter.work == Work(10, 20, 1)


def mlp_step_work(batch_seed: int, batch: int = 8) -> Work:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    optimizer = torch.optim.Adam(model.parameters())
    generator = torch.Generator().manual_seed(batch_seed)
    x, y = torch.randn(batch, 6, generator=generator), torch.randint(0, 3, (batch,))
    with count_work(model) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return counter.work


def test_counting_and_pricing_are_deterministic() -> None:
    """Same model and batch shape -> identical Work and simulated ns, whatever the values."""
    clock = parse_digital()
    works = [mlp_step_work(seed) for seed in (0, 0, 1)]
    assert works[0] == works[1] == works[2]
    assert len({clock.price(work, host_seconds=0.0) for work in works}) == 1
    assert mlp_step_work(0, batch=16).flops > works[0].flops  # and it does see the batch
