"""What a training run is, by name: data set, model, optimizer and their hyperparameters (no
torch here, so that ``spu --help`` and the other commands start fast; host/training/runs.py
builds and trains a RunSpec)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from spusim.timing.digital import DEFAULT_DIGITAL

DATASETS = ("digits", "mnist")
MODELS = ("softmax", "mlp", "cnn")
OPTIMIZERS = ("sgd", "adam", "ngd", "ngd-cg", "ngd-woodbury", "tngd", "tngd-adam")
DEVICE_OPTIMIZERS = ("tngd", "tngd-adam")
# A learning rate per optimizer that trains the digits models well (measured on the MLP): our
# digits defaults, with RunSpec's lambda 0.1, t = 5 tau and batch 32, not the paper's (lr 0.01,
# lambda 0.01, t = 50 tau, b = 64, Adam lr 1e-3: the defaults of the TNGD and NGD classes and of
# spusim.training.optimizers.adam).
DEFAULT_LR = {"sgd": 0.5, "adam": 0.01, "ngd": 0.3, "ngd-cg": 0.3, "ngd-woodbury": 0.3,
              "tngd": 0.3, "tngd-adam": 0.01}


@dataclass(frozen=True)
class RunSpec:
    """One training run. lr None: DEFAULT_LR of the optimizer. damping: lambda of the NGD
    family; t, delay: TNGD's analog time and delay t_d (units of tau); cg_iterations: NGD-CG's
    c; readout, warm_start (None: Algorithm 1's rule), integrator: host/training/tngd.py's.
    seed: model initialisation, batch order and the device's noise stream. eval_every:
    iterations between test-set evaluations. data: "digits" or "mnist" (the caller loads it).
    channels: the CNN's convolution kernels. digital: the digital clock (timing.digital's
    ``roofline[:ACCELERATOR[:EFFICIENCY[:LATENCY_US]]]`` or ``measured[:SCALE]``). chips:
    TNGD's devices, one block of the parameters each, cut by ``partition`` ("layer" or
    "contiguous"), their transfers on a ``link`` "separate" or "shared"
    (host/training/multichip.py)."""

    data: str = "digits"
    model: str = "mlp"
    optimizer: str = "tngd"
    iterations: int = 100
    batch_size: int = 32
    lr: float | None = None
    momentum: float = 0.0
    damping: float = 0.1
    t: float = 5.0
    delay: float = 0.0
    cg_iterations: int = 10
    readout: str = "final"
    warm_start: bool | None = None
    integrator: str = "auto"
    hidden: int = 32
    channels: int = 4
    seed: int = 0
    eval_every: int = 10
    digital: str = DEFAULT_DIGITAL
    chips: int = 1
    partition: str = "layer"
    link: str = "separate"

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    def label(self, device: Any = None) -> str:
        """The optimizer, and for TNGD its analog time and delay; with ``device`` (a Device),
        the times it really runs (whole ADC sample intervals, at least one: t = 0 runs one
        interval; the first of several chips)."""
        if self.optimizer not in DEVICE_OPTIMIZERS:
            return self.optimizer
        t = _run_tau(self.t, device)
        delay = f", t_d={_run_tau(self.delay, device)}" if self.delay else ""
        chips = f", {self.chips} chips" if self.chips > 1 else ""
        return f"{self.optimizer} (t={t}{delay}{chips})"


def _run_tau(t: float, device: Any) -> str:
    """``t`` (tau) as the device runs it: "5τ", or "0.1τ, asked 0" where it rounds up."""
    if isinstance(device, (list, tuple)):
        device = device[0]
    if device is None:
        return f"{t:g}τ"
    real = device.duration_ns(t) / device.tau_ns
    return f"{real:g}τ" if math.isclose(real, t) else f"{real:g}τ, asked {t:g}"
