"""Prioritised sampling (Schaul et al. 2016, PER): draw the transitions the critic has yet to learn more often.

Why: issue 11's probes found the states where the data's action decides the outcome (placing red on blue) to be
3 % of the steps, so a uniform 12k × 64 run shows the critic each of them about twice, where a regressor needs
five passes to learn what they hold. A transition's priority is its TD error at its last visit (the KL from the
critic's prediction to the projected target, nats: zero when the critic already predicts it), and batches are
drawn with probability P(i) ∝ (error_i + PRIORITY_FLOOR)^a; transitions not yet visited rank with the largest
error seen. Drawing is with replacement. The TD loss is weighted by (N · P(i))^−β, normalised by the largest
weight any transition could get, with β annealed linearly from `correction` to 1 at the run's last step, so
the critic's fixed point is the uniform one's (the actor's terms see the prioritised states as they come).

Determinism, so a resumed run is the uninterrupted one and loader workers change nothing: the draw for
optimiser step j is seeded by (seed, rank, j) and sees the errors of steps ≤ j − PRIORITY_DELAY only. The
DataLoader draws a few batches ahead of training (prefetch_factor × workers); the delay covers that, and
`check_loader` refuses a loader that would draw further ahead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from policies.data.transitions import Draw, TransitionDataset, TransitionSampler

PRIORITY_DELAY = 16  # optimiser steps between a batch's TD errors and the draws that use them
PRIORITY_FLOOR = 1e-3  # nats added to every error, so a fitted transition is still drawn now and then


def sampling_probabilities(errors: np.ndarray, exponent: float) -> np.ndarray:
    """P(i) ∝ (error_i + PRIORITY_FLOOR)^exponent; NaN (never visited) ranks with the largest error seen."""
    seen = np.isfinite(errors)
    top = float(errors[seen].max()) if seen.any() else 1.0
    priority = (np.where(seen, errors, top) + PRIORITY_FLOOR) ** exponent
    return priority / priority.sum()


def importance_weights(p_drawn: np.ndarray, p_min: float, beta: float) -> np.ndarray:
    """(N · P(i))^−β ÷ the largest weight (that of the least likely transition, P = p_min): in (0, 1]."""
    return ((p_drawn / p_min) ** -beta).astype(np.float32)


def annealed_beta(correction: float, step: int, steps: int) -> float:
    """β from `correction` at step 0 to 1 at `steps` (and after)."""
    return correction + (1.0 - correction) * min(step / max(steps, 1), 1.0)


class PrioritySampler(TransitionSampler):
    """The batches of an epoch on this rank, drawn by priority; `update(step, indices, errors)` after each step.

    An epoch is `dataset.num_batches` draws, as with TransitionSampler, so epochs, checkpoints and DDP's equal step
    counts mean the same. `set_epoch(e, start=b)` as there."""

    def __init__(self, dataset: TransitionDataset, exponent: float, correction: float, steps: int):
        if exponent <= 0.0 or not 0.0 <= correction <= 1.0:
            raise ValueError(f"need exponent > 0 and correction in [0, 1], got {exponent}, {correction}")
        super().__init__(dataset)
        self.exponent, self.correction, self.steps = exponent, correction, steps
        self.errors = np.full(self.size, np.nan)  # each transition's TD error at its last visit; NaN: not yet
        self.applied = 0  # the errors of steps ≤ applied are in `errors`
        self.pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # step → (indices, errors) not yet applied

    def check_loader(self, num_workers: int, prefetch_factor: int | None) -> None:
        """Refuse a loader that draws more batches ahead than the priorities' delay allows."""
        ahead = num_workers * (prefetch_factor or 2)
        if num_workers and ahead >= PRIORITY_DELAY:
            raise ValueError(
                f"prioritised sampling draws each batch from the errors of {PRIORITY_DELAY} steps before; a loader "
                f"with {num_workers} workers × prefetch {prefetch_factor or 2} draws {ahead} ahead: use fewer workers"
            )

    def __iter__(self):
        for b in range(self.start, self.num_batches):
            yield self.draw(self.epoch * self.num_batches + b + 1)

    def draw(self, step: int) -> Draw:
        """The batch optimiser step `step` (1-based) trains on."""
        self._apply_through(step - PRIORITY_DELAY)
        p = sampling_probabilities(self.errors, self.exponent)
        cdf = np.cumsum(p)
        rng = np.random.default_rng([self.seed, self.rank, step, 0x5045])  # 0x5045: "PE", apart from other streams
        indices = np.minimum(np.searchsorted(cdf, rng.random(self.batch_size) * cdf[-1], side="right"), self.size - 1)
        beta = annealed_beta(self.correction, step, self.steps)
        return Draw(indices.astype(np.int64), importance_weights(p[indices], float(p.min()), beta))

    def update(self, step: int, indices: np.ndarray, errors: np.ndarray) -> None:
        """The TD errors optimiser step `step` measured on its batch's transitions."""
        self.pending[step] = (np.asarray(indices, np.int64).copy(), np.asarray(errors, np.float64).copy())

    def _apply_through(self, step: int) -> None:
        for s in range(self.applied + 1, step + 1):
            if s not in self.pending:
                raise RuntimeError(f"step {s}'s TD errors never reached the sampler (drawing {s + PRIORITY_DELAY})")
            indices, errors = self.pending.pop(s)
            self.errors[indices] = errors
        self.applied = max(self.applied, step)

    # ---------------------------------------------------------------- state for checkpoints
    def state_tensors(self) -> dict[str, torch.Tensor]:
        steps = sorted(self.pending)
        counts = [len(self.pending[s][0]) for s in steps]
        return {
            "errors": torch.from_numpy(self.errors.copy()),
            "applied": torch.tensor(self.applied, dtype=torch.int64),
            "pending_steps": torch.tensor(steps, dtype=torch.int64),
            "pending_counts": torch.tensor(counts, dtype=torch.int64),
            "pending_indices": torch.from_numpy(_concat([self.pending[s][0] for s in steps], np.int64)),
            "pending_errors": torch.from_numpy(_concat([self.pending[s][1] for s in steps], np.float64)),
        }

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        errors = state["errors"].numpy()
        if errors.shape != (self.size,):
            raise ValueError(f"the checkpoint's priorities cover {errors.shape[0]} transitions, this shard {self.size}")
        self.errors = errors.astype(np.float64).copy()
        self.applied = int(state["applied"])
        bounds = np.cumsum([0, *state["pending_counts"].tolist()])
        indices, errs = state["pending_indices"].numpy(), state["pending_errors"].numpy()
        self.pending = {
            int(s): (indices[a:b].copy(), errs[a:b].copy())
            for s, a, b in zip(state["pending_steps"].tolist(), bounds[:-1], bounds[1:], strict=True)
        }


def _concat(parts: Sequence[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
