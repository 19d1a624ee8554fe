"""n-step returns of one episode: the reward sum, the discount and the next observation of each transition.

The critic's target for step t is R_t + D_t·Q(s_{t+k}), with k = min(n, T - t) the steps actually taken (the
window is cut at the episode's end), R_t = Σ_{j<k} γ^j r_{t+j} and D_t = γ^k. A termination (the task done,
or failed for good) ends the return: D_t = 0 for every window that reaches it. A time-limit truncation is not
a property of the state, so it bootstraps: D_t = γ^k from the episode's last observation. Pure numpy over
whole episodes, so the table of cases is tested without a dataset.

A dense reward r in [0, 1] per step is put on the critic's [0, 1] return scale by `per_step_rewards`: each step
earns (1 − γ)·r, and a terminal step (the task done) earns r itself, the value of staying in that state for ever
(Σ γ^j (1 − γ) r = r). Without that absorbing value, ending an episode by succeeding would be worth less than
hovering one stage short of success until the time limit. `staged_success_rewards` weights the stage value
down (w < 1) and keeps the success at its full absorbing value: hovering is then worth at most w, finishing 1.

`held_actions` is the action a critic of held actions is asked about: the mean of the data's next h actions.
At 20 Hz one step of arm velocity moves the arm millimetres, and what one step's action changes in the return
is below the critic's bin width (issue 11's probes: Q collapses onto V as the control period shrinks, Tallec
et al. 2019). Asking the critic "what if this action were held for h steps" makes the action's effect h times
larger; for velocity commands, holding the window's mean moves the arm exactly as the data's h actions did.
The horizon may differ per dimension: a gripper command is not a velocity, and its window mean near a grasp is
already "closed" (issue 11: a critic of held grippers valued closing early, and the policy closed on air).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRIPPER_CLOSED_AT = 0.5  # a gripper command at or above this closes (the sim: fingers at 1 - g of their travel)


@dataclass(frozen=True)
class NStepTargets:
    """Per transition t of an episode of T steps (each array has T entries)."""

    reward: np.ndarray  # float32: Σ_{j<k} γ^j r_{t+j}
    discount: np.ndarray  # float32: γ^k, or 0 when the window ends at a termination
    next_step: np.ndarray  # int64: t + k, the observation to bootstrap from (observations have T + 1 entries)


def n_step_targets(rewards: np.ndarray, terminations: np.ndarray, n: int, gamma: float) -> NStepTargets:
    """n-step targets of one episode; only its last step may be a termination (Minari's episodes end there)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    terminations = np.asarray(terminations, dtype=bool)
    steps = rewards.shape[0]
    if rewards.ndim != 1 or terminations.shape != rewards.shape:
        raise ValueError(f"rewards {rewards.shape} and terminations {terminations.shape} must be the same (T,)")
    if terminations[:-1].any():
        raise ValueError(f"a termination at step {int(np.argmax(terminations))} before the last ({steps - 1})")
    if n < 1 or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"n must be ≥ 1 and gamma in [0, 1]; got n={n}, gamma={gamma}")
    t = np.arange(steps)
    k = np.minimum(n, steps - t)
    reward = np.zeros(steps)
    for j in range(min(n, steps)):
        taken = j < k
        reward[taken] += gamma**j * rewards[t[taken] + j]
    discount = np.power(float(gamma), k)
    if steps and terminations[-1]:
        discount[t + k == steps] = 0.0
    return NStepTargets(reward.astype(np.float32), discount.astype(np.float32), (t + k).astype(np.int64))


def held_actions(actions: np.ndarray, horizon: int | tuple[int, ...] | np.ndarray) -> np.ndarray:
    """(T, A) the mean of actions[t : min(t + h, T)] for each step t of one episode (the window cut at its end).

    `horizon` is one h for every dimension, one per dimension ((20, 20, 20, 20, 1) holds the arm's velocities
    over 20 steps and scores the gripper by the step's own command), or one per step and dimension (T, A):
    `gripper_horizons` makes the gripper's window depend on whether the gripper was closed."""
    actions = np.asarray(actions, dtype=np.float64)
    horizons = np.asarray(horizon, dtype=np.int64)
    if actions.ndim != 2 or horizons.shape not in ((), (1,), actions.shape[1:], actions.shape) or (horizons < 1).any():
        raise ValueError(f"need actions (T, A) and horizon ≥ 1, one, one per dimension or one per step and "
                         f"dimension; got {actions.shape}, horizon {horizon}")  # fmt: skip
    steps, dims = actions.shape
    sums = np.concatenate([np.zeros((1, dims)), np.cumsum(actions, axis=0)])
    t = np.arange(steps)[:, None]
    end = np.minimum(t + np.broadcast_to(horizons, actions.shape), steps)
    columns = np.arange(dims)[None, :]
    return ((sums[end, columns] - sums[t, columns]) / (end - t)).astype(np.float32)


def gripper_horizons(actions: np.ndarray, horizon: int | tuple[int, ...], dim: int, closed: int) -> np.ndarray:
    """(T, A) per-step horizons for `held_actions`: `horizon` everywhere, except `closed` on the gripper's
    dimension `dim` at the steps whose previous gripper command was closed (≥ GRIPPER_CLOSED_AT; an episode
    starts open).

    A gripper decision means different things in the two states (issue 11's probes). Open, the decision is when
    to grasp: held over 20 steps, the window near a grasp is already "closed", and a critic of it valued closing
    early (the policy closed on air); by the step's own command it sees the grasp right. Closed, the decision is
    when to let go: one step of "open" changes almost nothing in a 20-step return (the data opens a step later
    anyway), so a one-step critic was blind at the release, while a held one saw opening on blue win by
    0.04-0.17."""
    actions = np.asarray(actions)
    if actions.ndim != 2 or not 0 <= dim < actions.shape[1] or closed < 1:
        raise ValueError(f"need actions (T, A), a dimension in 0..A-1 and closed ≥ 1; got {actions.shape}, {dim}, "
                         f"{closed}")  # fmt: skip
    horizons = np.array(np.broadcast_to(np.asarray(horizon, dtype=np.int64), actions.shape))
    previous = np.concatenate([[0.0], actions[:-1, dim]])
    horizons[previous >= GRIPPER_CLOSED_AT, dim] = closed
    return horizons


def per_step_rewards(rewards: np.ndarray, terminations: np.ndarray, gamma: float) -> np.ndarray:
    """Dense rewards in [0, 1] on the [0, 1] return scale: (1 − γ)·r per step, r itself at a termination."""
    rewards = np.asarray(rewards, dtype=np.float64)
    terminations = np.asarray(terminations, dtype=bool)
    if rewards.shape != terminations.shape:
        raise ValueError(f"rewards {rewards.shape} and terminations {terminations.shape} must be the same (T,)")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"a dense reward needs gamma in [0, 1), got {gamma}")
    return np.where(terminations, rewards, (1.0 - gamma) * rewards).astype(np.float32)


def staged_success_rewards(
    shaped: np.ndarray, terminations: np.ndarray, gamma: float, stage_weight: float = 0.5
) -> np.ndarray:
    """The stage value at `stage_weight` per step, and the full absorbing value at a termination (the success,
    where the stored stage value is 1): per_step_rewards of the weighted rewards with the terminal one unweighted."""
    if not 0.0 <= stage_weight <= 1.0:
        raise ValueError(f"stage_weight must lie in [0, 1], got {stage_weight}")
    terminations = np.asarray(terminations, dtype=bool)
    weighted = np.where(terminations, np.asarray(shaped, dtype=np.float64), stage_weight * np.asarray(shaped))
    return per_step_rewards(weighted, terminations, gamma)
