"""Sampling schedules on the device: equilibrate, then record in consecutive blocks.

The estimate is the mean over blocks and its standard error the spread of the block averages
over sqrt(blocks) (batch means): honest when a block is much longer than the slowest
relaxation time of the programmed drift, and an underestimate otherwise. The burn-in must
likewise exceed a few relaxation times for the state to forget where it started.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spusim.driver.client import Readout
from spusim.linalg.session import Session

Progress = Callable[[int, int], None]  # called with (blocks done, blocks in all)


def check_schedule(t_burn: float, blocks: int, t_sample: float | None = None) -> None:
    """Refuse a bad schedule before anything is sent to the device (t_sample None: the
    operation samples by readings, not by time)."""
    if t_burn < 0:
        raise ValueError(f"t_burn must be >= 0, got {t_burn}")
    if t_sample is not None and t_sample <= 0:
        raise ValueError(f"t_sample must be > 0, got {t_sample}")
    if blocks < 2:
        raise ValueError(f"blocks must be >= 2 for a standard error, got {blocks}")


def burn_in(session: Session, t_burn: float, seed: int | None) -> int | None:
    """Let the programmed device run unrecorded for ``t_burn`` tau, and at least until what was
    programmed has settled (a finite programming bandwidth: the replies' settle_ns); returns
    the seed if unused."""
    duration = max(session.duration_ns(t_burn) if t_burn > 0 else 0,
                   session.duration_ns(session.settle_ns / session.device.tau_ns)
                   if session.settle_ns else 0)
    if duration > 0:
        session.run(duration, record=False, seed=seed)
        return None
    return seed


def sample_blocks(session: Session, t_sample: float, blocks: int, seed: int | None, *,
                  second_moments: bool, progress: Progress | None) -> list[Readout]:
    """``blocks`` consecutive recorded runs of t_sample / blocks tau each, each read back."""
    block_ns = session.duration_ns(t_sample / blocks)
    reads = []
    for done in range(blocks):
        session.run(block_ns, second_moments=second_moments, clear=True,
                    seed=seed if done == 0 else None)
        reads.append(session.read(second_moments=second_moments))
        if progress is not None:
            progress(done + 1, blocks)
    return reads


def batch_means(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the first axis (blocks) and its standard error, per entry."""
    return values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])
