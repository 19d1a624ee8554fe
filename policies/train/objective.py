"""The PAC objective and its baselines, as loss terms over one batch (reference/pac.md).

    policy loss  = α · BC + (1 − α) · improvement
    BC           = −log π(a_data | s)                     (the factorised categorical: a sum over dimensions)
    improvement  = −Σ_i w_i log π(a_i | s),  a_i ~ π_target(· | s),  w = softmax(Q_target(s, a_i) / η)
                   (Q = E[Z], or the mean of Z's lowest fraction (CVaR) when improvement_cvar < 1;
                    η fixed, or per state: a multiple of the spread of Q_target(s, ·) over the samples)
    TD           = cross-entropy(Φ(R + D·Z_target(s', a')), Z(s, ā_data)),  a' ~ π_target(· | s')
    total        = policy loss + β · TD  (+ w · (mean_k E[Z(s, a_k)] − E[Z(s, ā_data)]) with a conservative critic)

Z is the categorical critic over `q_bins` returns on [q_low, q_high]; Φ projects the n-step distributional
Bellman target back onto that support (C51's projection). The target network, an older copy of the online
one, gives the reference policy and the bootstrap, as in MPO. Everything the target network computes is
done by `targets()` without gradients; `PolicyCriticLoss.forward` is the part gradients flow through, kept
as one module call so DDP's hooks see the whole backward pass. The pure tensor functions are tested alone.

ā_data is the data's action or, with a critic of held actions (TrainConfig.critic_horizon = h), the mean of
its next h actions: Z(s, a) then values a held for h steps, and every a it scores (a_i, a') is read that way.
The gripper may have its own h (TrainConfig.critic_horizon_gripper; 1: the step's own command), and another
where its previous command was closed (critic_horizon_gripper_closed: a release valued by what follows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from policies.model.perceiver import PerceiverActorCritic
from policies.train.config import critic_trunk_share


# ------------------------------------------------------------------ pure tensor functions
def support(model: PerceiverActorCritic) -> torch.Tensor:
    """(N_q,) the return value of each critic bin."""
    c = model.config
    return torch.linspace(c.q_low, c.q_high, c.q_bins)


def action_bins(actions: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bins: int) -> torch.Tensor:
    """Nearest bin index of physical actions (..., A); out-of-range values go to the end bins (as ActionSpec)."""
    t = (actions - low) / (high - low)
    return torch.round(t * (bins - 1)).clamp(0, bins - 1).long()


def bin_values(indices: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bins: int) -> torch.Tensor:
    """Physical actions (..., A) of bin indices (..., A): the bins' centres, ends exactly on low and high."""
    return low + (high - low) * indices.to(low.dtype) / (bins - 1)


def log_likelihood_per_dim(logits: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """log π_d(a_d | s) of each dimension of the factorised policy: logits (B, A, K), indices (B, S, A) → (B, S, A)."""
    log_p = F.log_softmax(logits.float(), dim=-1)  # (B, A, K)
    gathered = torch.gather(log_p[:, None].expand(-1, indices.shape[1], -1, -1), 3, indices[..., None])
    return gathered[..., 0]


def log_likelihood(logits: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """log π(a | s) of the factorised policy: logits (B, A, K), indices (B, S, A) → (B, S)."""
    return log_likelihood_per_dim(logits, indices).sum(dim=-1)


def sample_bins(logits: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n actions per state from the factorised policy: logits (B, A, K) → bin indices (B, n, A)."""
    b, a, k = logits.shape
    probs = F.softmax(logits.float(), dim=-1).reshape(b * a, k)
    draws = torch.multinomial(probs, n, replacement=True, generator=generator)  # (B·A, n)
    return draws.reshape(b, a, n).transpose(1, 2)


def project_distribution(
    probs: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """Φ(r + d·Z): next-state bin probabilities (B, N) on `values` (N,) shifted and shrunk, then split
    between the two neighbouring bins of each atom (mass conserved; atoms beyond the ends go to them)."""
    v_min, v_max, n = values[0], values[-1], values.shape[0]
    delta = (v_max - v_min) / (n - 1)
    atoms = (reward[:, None] + discount[:, None] * values[None, :]).clamp(v_min, v_max)
    position = (atoms - v_min) / delta  # fractional bin index in [0, n − 1]
    lower = position.floor().long().clamp(0, n - 1)
    upper = (lower + 1).clamp(max=n - 1)
    upper_share = position - lower.to(position.dtype)  # 0 when the atom sits on a bin
    out = torch.zeros_like(probs)
    out.scatter_add_(1, lower, probs * (1.0 - upper_share))
    out.scatter_add_(1, upper, probs * upper_share)
    return out


def expected_value(q_logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """E[Z] of categorical critics: logits (..., N) → (...)."""
    return (F.softmax(q_logits.float(), dim=-1) * values).sum(dim=-1)


def lower_tail_mean(q_logits: torch.Tensor, values: torch.Tensor, fraction: float) -> torch.Tensor:
    """CVaR of categorical critics: the mean of the lowest `fraction` of each return distribution's mass,
    logits (..., N) over ascending `values` → (...). fraction 1 is E[Z]. A risk-averse score: an action whose
    outcomes the data shows spread (an early close that sometimes catches, sometimes misses) scores below one
    with the same mean and a narrow distribution."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return expected_value(q_logits, values)
    probs = F.softmax(q_logits.float(), dim=-1)
    above = torch.cumsum(probs, dim=-1)
    below = above - probs
    mass = (above.clamp(max=fraction) - below.clamp(max=fraction)).clamp_min(0.0)  # each bin's share of the tail
    return (mass * values).sum(dim=-1) / fraction


def _scale_gradient(x: torch.Tensor, share: float) -> torch.Tensor:
    """`x` in the forward pass; `share` of the gradient flows back through it (1: all, 0: none, detached)."""
    if share == 1.0:
        return x
    if share == 0.0:
        return x.detach()
    return share * x + (1.0 - share) * x.detach()


def distribution_cross_entropy(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """−Σ target · log softmax(logits) over the last axis in fp32, (..., K) → (...): a categorical critic's TD loss."""
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """−Σ p log p over the last axis (0 · log 0 = 0): (..., N) → (...)."""
    return -(probs * torch.log(probs.clamp_min(1e-30))).sum(dim=-1)


def improvement_weights(q: torch.Tensor, eta: float, per_state: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(Q/η) over the N samples (B, N), the spread of Q per state (B,)) for Q (B, N); per state,
    η(s) = eta · std_i Q(s, a_i), so the reweighting has the same strength whatever Q's scale at s."""
    spread = q.std(dim=-1) if q.shape[-1] > 1 else torch.zeros_like(q[:, 0])
    temperature = eta * spread[:, None].clamp_min(1e-6) if per_state else eta
    return F.softmax(q / temperature, dim=-1), spread


# ------------------------------------------------------------------ the target network's part
@dataclass
class Targets:
    """What the target network says about a batch (no gradients)."""

    td_target: torch.Tensor | None  # (B, N_q) projected bin probabilities, None without a critic
    improve_bins: torch.Tensor | None  # (B, N, A) actions sampled from the target policy at s
    improve_weights: torch.Tensor | None  # (B, N) softmax(CVaR_target(s, a_i) / η); E[Z] at cvar 1
    q_spread: torch.Tensor | None = None  # (B,) std over the N sampled actions of the score above
    advantage: torch.Tensor | None = None  # (B,) E[TD target] − V(s) (V: the mean E[Z] of the sampled actions)


@torch.no_grad()
def targets(
    target: PerceiverActorCritic,
    observation: dict[str, torch.Tensor],
    next_observation: dict[str, torch.Tensor],
    reward: torch.Tensor,
    discount: torch.Tensor,
    *,
    critic: bool,
    improve: bool,
    eta: float,
    improvement_samples: int,
    eta_per_state: bool = False,
    improvement_cvar: float = 1.0,
    target_samples: int,
    generator: torch.Generator | None,
    advantage: bool = False,
) -> Targets:
    """`advantage`: also the n-step advantage of the data's transitions (Targets.advantage), which needs the
    target policy's samples at s even without an improvement."""
    if not critic:
        return Targets(None, None, None)
    values = support(target).to(reward.device)
    low, high, bins = target.action_low, target.action_high, target.action_spec.bins
    z_next = target.encode(next_observation)
    next_bins = sample_bins(target.policy_logits(z_next), target_samples, generator)
    next_q = target.q_logits(z_next, bin_values(next_bins, low, high, bins))  # (B, M, N_q)
    next_probs = F.softmax(next_q.float(), dim=-1).mean(dim=1)  # the next state's return under π_target
    td_target = project_distribution(next_probs, reward.float(), discount.float(), values)
    if not improve and not advantage:
        return Targets(td_target, None, None)
    z = target.encode(observation)
    sampled = sample_bins(target.policy_logits(z), improvement_samples, generator)
    q_logits = target.q_logits(z, bin_values(sampled, low, high, bins))
    gain = None
    if advantage:
        gain = (td_target * values).sum(dim=-1) - expected_value(q_logits, values).mean(dim=-1)
    if not improve:
        return Targets(td_target, None, None, advantage=gain)
    q = lower_tail_mean(q_logits, values, improvement_cvar)  # (B, N)
    weights, spread = improvement_weights(q, eta, eta_per_state)
    return Targets(td_target, sampled, weights, spread, gain)


# ------------------------------------------------------------------ the online network's part
@dataclass(frozen=True)
class ConservativeTerm:
    """CQL's gap in the critic's loss (TrainConfig.conservative): weight · (mean E[Z(s, a_k)] − E[Z(s, a_data)])
    over the first `samples` of the improvement's actions a_k. `keep_data`: per action dimension, True where a_k
    takes the data's value, so the gap compares only the choices the improvement makes (() : none kept)."""

    weight: float
    samples: int = 4
    keep_data: tuple[bool, ...] = ()


class PolicyCriticLoss(nn.Module):
    """The online network's losses for one batch; `model` is the one set of trained weights."""

    def __init__(
        self,
        model: PerceiverActorCritic,
        alpha: float,
        beta: float,
        alpha_per_dim: tuple[float, ...] = (),
        critic_gradient: str = "trunk",
        dims: tuple[str, ...] = (),
        conservative: ConservativeTerm | None = None,
    ):
        """`alpha_per_dim`: one α per action dimension (TrainConfig.alpha_gripper), else `alpha` for all.
        `critic_gradient` "head": the TD loss trains the critic head only; a share in (0, 1): that share of its
        gradient reaches the encoder (TrainConfig.critic_gradient).
        `dims`: the action dimensions' names; each gets its own BC loss in the output (`bc_<dim>`, logged, not
        trained on separately), so a change that moves one dimension on purpose does not hide the others.
        `conservative`: the conservative critic term, None for none (TrainConfig.conservative)."""
        super().__init__()
        self.conservative = conservative
        self.model, self.alpha, self.beta = model, alpha, beta
        self.alpha_per_dim = alpha_per_dim
        self.trunk_share = critic_trunk_share(critic_gradient)
        self.dims = dims

    def forward(
        self,
        observation: dict[str, torch.Tensor],
        action: torch.Tensor,
        t: Targets,
        bc_mask: torch.Tensor | None = None,
        critic_action: torch.Tensor | None = None,
        td_weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`bc_mask` (B,) bool: the transitions the BC term clones (None: all); 0 when the batch has none.
        `critic_action` (B, A): the action the TD loss scores (Batch.critic_action; None: `action`).
        `td_weight` (B,): per-transition weights of the TD loss (a prioritised draw's importance weights).
        With a critic the output holds `td_error` (B,), not a loss: each transition's KL from Z to its target."""
        m = self.model
        z = m.encode(observation)
        logits = m.policy_logits(z)
        data_bins = action_bins(action, m.action_low, m.action_high, m.action_spec.bins)  # (B, A)
        nll = -log_likelihood_per_dim(logits, data_bins[:, None])[:, 0]  # (B, A)
        weight = torch.ones_like(nll[:, 0]) if bc_mask is None else bc_mask.to(nll.dtype)
        bc = (nll * weight[:, None]).sum(dim=0) / weight.sum().clamp_min(1.0)  # (A,): the masked mean per dimension
        losses = {"bc": bc.sum()}
        losses.update({f"bc_{name}": bc[i].detach() for i, name in enumerate(self.dims)})
        policy = losses["bc"]
        alphas = self.alpha_per_dim or (self.alpha,)  # one α per dimension, or one for all
        if t.improve_bins is not None and min(alphas) < 1.0:
            weighted = t.improve_weights[..., None] * log_likelihood_per_dim(logits, t.improve_bins)  # (B, N, A)
            improve = -weighted.sum(dim=1).mean(dim=0)  # (A,)
            alpha = torch.tensor(alphas, dtype=bc.dtype, device=bc.device)
            losses["improve"] = improve.sum()
            policy = (alpha * bc + (1.0 - alpha) * improve).sum()  # Σ_d α_d · BC_d + (1 − α_d) · improvement_d
        total = policy
        if t.td_target is not None and self.beta > 0.0:
            low, high, bins = m.action_low, m.action_high, m.action_spec.bins
            scored = data_bins if critic_action is None else action_bins(critic_action, low, high, bins)
            features = _scale_gradient(z, self.trunk_share)
            q = m.q_logits(features, bin_values(scored, low, high, bins)[:, None])[:, 0]
            cross_entropy = distribution_cross_entropy(t.td_target, q)  # (B,)
            td = cross_entropy.mean() if td_weight is None else (td_weight * cross_entropy).mean()
            losses["td"] = td
            # KL(target ‖ Z) per transition: what the critic has yet to learn of it (a prioritised sampler's error)
            losses["td_error"] = (cross_entropy - entropy(t.td_target)).detach()
            values = support(m).to(q.device)
            losses["q"] = expected_value(q.detach(), values).mean()
            total = policy + self.beta * td
            c = self.conservative
            if c is not None and c.weight > 0.0 and t.improve_bins is not None:
                # CQL's gap (Kumar et al. 2020, sampled-policy form): E[Z] of the target policy's actions at s
                # pushed down, of the data's action pushed up; where the policy matches the data the two cancel.
                candidates = t.improve_bins[:, : c.samples]
                if c.keep_data:
                    keep = torch.tensor(c.keep_data, device=candidates.device)
                    candidates = torch.where(keep, scored[:, None], candidates)
                sampled = m.q_logits(features, bin_values(candidates, low, high, bins))  # (B, K, N_q)
                gap = (expected_value(sampled, values).mean(dim=-1) - expected_value(q, values)).mean()
                losses["conservative_gap"] = gap.detach()
                total = total + c.weight * gap
        losses["total"] = total
        return losses
