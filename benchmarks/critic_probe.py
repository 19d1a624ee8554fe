"""Why PAC carries red over blue but never lets go (issue 11): the critic and the policy at the release moments.

PAC trained with the shaped reward (per-state η 0.3, 8,000 steps) gets the highest shaped return of any policy
here, but in 30 closed-loop episodes it never released red on blue, while filtered BC stacks 29 %. Two readings:
the critic does not prefer opening the gripper there (a success is worth 1, hovering one stage short ~0.9), so
the improvement term (actions sampled from the target policy, weighted by softmax(Q/η)) never pushes towards
opening; or the policy puts so little mass on "open" at those states that its samples never contain it. This
probe measures both on the training data, with the run's own model, dataset reader, split and objective:

    python -m benchmarks.critic_probe --run /work/study/exp/pac_eta03 [--step N] [--episodes 40] \
        [--policy-runs /work/study/exp/fbc_8k,/work/study/exp/bc_8k] [--rollouts 0] [--out FILE.json]

Moments, in the first K successful TRAINING episodes of the run's split (train/data.py split_episodes):
  release   the data's gripper command goes closed (≥ 0.5) → open (< 0.5) while the observation's object poses
            put red on blue as the task's success test does (robots/tasks/tasks.py: xy within STACK_XY, height
            one cube above blue within STACK_Z); in this data that is the episode's last step, the one that
            ends in the success termination (the dataset's infos/success is true only there);
  misplace  the same switch with red above blue (within 5 cm in xy, one cube up) but off its centre: the
            expert's deliberate off-centre release, which fails;
  grasp     open → closed with the TCP within 2 cm of red (the step that starts closing on it);
  approach  steps 5, 20 and 40 of the episode while its gripper has stayed open (before the first close): where
            the data never closes, so a critic that prefers closing there is extrapolating (issue 11, session 27:
            a critic on the policy's features alone preferred it by 0.03-0.17 and the gripper shut at the start).
At each moment's state and the `--before` steps before it: the critic's E[Z] and the std of Z for the data's
action, the same action with the gripper closed (1.0) and open (0.0); the policy's mass on "open" gripper bins
(value < 0.5) and whether its argmax (the study's decoding) opens; N actions sampled from the target policy
(objective.sample_bins), the share that open, their improvement weights (objective.improvement_weights with
the run's η and eta_mode), the weight the open ones get, the effective sample size, the spread of Q over them;
and a counterfactual: each sampled action scored with the gripper both open and closed (the same velocities),
the weight share of the open copies under the same weighting (0.5: the critic is indifferent; → 1: it would
push the policy to open if the policy ever sampled it). Grasps are the contrast: a gripper decision the policy
does get right closed loop. Carry states (every 5th step holding red high above blue, > 3 cm away in xy) add
the critic's Q of full speed towards blue, standing still and away, where the policy's xy velocity points, and
what the data covers there: how often its xy velocity points away from blue, per step and held over the run's
critic_horizon (a critic values only directions the data takes), and what the critic's readout token reads in
q_mixer at those states: its attention per head over itself and the action dimensions (a dimension every head
gives ~0 cannot move a "readout" critic's Q; PACConfig.q_readout).

`--policy-runs` adds the policy-side numbers of runs without a critic (BC, filtered BC) at the same states.
`--rollouts N` also runs every policy closed loop (`--decode`, argmax by default; the task env stepped directly,
not through pac-run's loop) on held-out seeds, reports where it takes red while it holds it, and probes the held
states near blue: the states the policy actually meets, which need not be the data's release states.
Everything is printed as mean ± sd over the moments and written to a small JSON (benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from policies.data.dataset import locate_dataset
from policies.data.episodes import EpisodeReader
from policies.data.nstep import GRIPPER_CLOSED_AT, held_actions, n_step_targets, per_step_rewards
from policies.model.perceiver import PerceiverActorCritic
from policies.spec import DECODINGS, ObservationSpec
from policies.train.checkpoint import checkpoint_at, load_checkpoint, load_trained_model
from policies.train.config import TrainConfig
from policies.train.data import split_episodes
from policies.train.objective import (
    action_bins,
    bin_values,
    expected_value,
    improvement_weights,
    lower_tail_mean,
    sample_bins,
    support,
)
from robots.contract.link import DEFAULT_LINK as LINK
from robots.spec import load_spec
from robots.tasks.tasks import STACK_XY, STACK_Z

OPEN_BELOW = GRIPPER_CLOSED_AT  # a gripper command under this opens (a held cube sits at ~0.45 of the travel)
MISPLACE_XY = 0.05  # m: an off-centre release still counts as "above blue" up to here
PLACING_XY = 0.05  # m: red held this close to blue's centre (xy) is being placed (carry_states(placing=True))
LIFTED = 0.02  # m: red this far above where it rested is lifted (rollouts' stage counts)
MISPLACE_Z = 0.03  # m: ... and this far from the stacked height (the expert lifts a misplaced cube 1.5 cm)
GRASP_RADIUS = 0.02  # m between TCP and red's centre for a close to count as a grasp of red
APPROACH_STEPS = (5, 20, 40)  # an episode's steps probed as "approach" moments while its gripper is still open
KINDS = ("release", "misplace", "grasp", "approach")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Moment:
    kind: str
    episode: int
    step: int  # the step whose data action switches the gripper


def proprio_offset(spec: ObservationSpec, name: str) -> int:
    """Where proprio field `name` starts; a probe needs it, so a spec without it is an error."""
    offset = spec.proprio_offset(name)
    if offset is None:
        raise ValueError(f"the observation's proprio has no field {name!r}")
    return offset


def _on_blue(r: np.ndarray, b: np.ndarray, half: float) -> bool:
    """Red (centre r) sits where the task's stacking test wants it on blue (centre b): within STACK_XY in the
    table plane and one cube height up within STACK_Z (robots/tasks/tasks.py `success`, less the release)."""
    return bool(np.linalg.norm(r[:2] - b[:2]) < STACK_XY and abs(r[2] - b[2] - 2 * half) < STACK_Z)


def find_moments(arrays, objects: tuple[str, ...], tcp_at: int, half: float, episode: int) -> list[Moment]:
    """The gripper switches of one episode, classified by the observation's object poses at the switch, and its
    approach steps (APPROACH_STEPS before the first close)."""
    grip = arrays.actions[:, -1]
    closed = grip >= OPEN_BELOW
    obj = arrays.observations["objects"]
    red, blue = objects.index("red"), objects.index("blue")
    out = []
    for t in range(1, len(grip)):
        if closed[t - 1] == closed[t]:
            continue
        r, b = obj[t, red, :3], obj[t, blue, :3]
        xy, dz = float(np.linalg.norm(r[:2] - b[:2])), float(r[2] - b[2])
        if closed[t - 1] and _on_blue(r, b, half):
            out.append(Moment("release", episode, t))
        elif closed[t - 1] and abs(dz - 2 * half) < MISPLACE_Z and xy < MISPLACE_XY:
            out.append(Moment("misplace", episode, t))
        elif closed[t] and np.linalg.norm(arrays.observations["proprio"][t, tcp_at : tcp_at + 3] - r) < GRASP_RADIUS:
            out.append(Moment("grasp", episode, t))
    first_close = int(np.argmax(closed)) if closed.any() else len(grip)
    return out + [Moment("approach", episode, t) for t in APPROACH_STEPS if t < first_close]


def _batch(observations: dict[str, np.ndarray], rows: np.ndarray, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(observations[k][rows])) for k in names}


@torch.no_grad()
def probe_states(
    model: PerceiverActorCritic,
    target: PerceiverActorCritic | None,
    obs: dict[str, torch.Tensor],
    data_action: torch.Tensor | None,
    config: TrainConfig,
    samples: int,
    generator: torch.Generator,
) -> dict[str, np.ndarray]:
    """Per state: the policy's gripper numbers, and with a critic the Q numbers described in the docstring."""
    spec = model.action_spec
    g = spec.size - 1  # the gripper is the last action dimension
    k_open = int(np.searchsorted(spec.bin_centers()[g], OPEN_BELOW))  # bins [0, k_open) open
    low, high, bins = model.action_low, model.action_high, spec.bins
    z = model.encode(obs)
    p_grip = F.softmax(model.policy_logits(z)[:, g].float(), dim=-1)
    out = {
        "p_open": p_grip[:, :k_open].sum(-1),
        "p_fully_open": p_grip[:, 0],
        "p_fully_closed": p_grip[:, -1],
        "argmax_open": (p_grip.argmax(-1) < k_open).float(),
    }
    net = target if target is not None else model  # the objective samples from the target policy
    z_t = net.encode(obs) if target is not None else z
    sampled = sample_bins(net.policy_logits(z_t), samples, generator)  # (B, N, A)
    is_open = (sampled[..., g] < k_open).float()
    out["sampled_open"] = is_open.mean(-1)
    if target is None or config.algorithm.beta <= 0:
        return {k: v.numpy() for k, v in out.items()}
    values = support(net)
    per_state = config.eta_mode == "per_state"

    def q_stats(m: PerceiverActorCritic, latents: torch.Tensor, actions: torch.Tensor):
        logits = m.q_logits(latents, actions).float()
        p = F.softmax(logits, dim=-1)
        mean = (p * values).sum(-1)
        std = ((p * (values - mean[..., None]) ** 2).sum(-1)).clamp_min(0).sqrt()
        return mean, std

    # The online critic on the data's action and its two gripper variants (binned, as the TD loss sees them).
    a = bin_values(action_bins(data_action, low, high, bins), low, high, bins)
    variants = a[:, None].repeat(1, 3, 1)
    variants[:, 1, g], variants[:, 2, g] = high[g], low[g]  # closed, open
    mean, std = q_stats(model, z, variants)
    for j, name in enumerate(("data", "closed", "open")):
        out[f"q_{name}"], out[f"zstd_{name}"] = mean[:, j], std[:, j]
    out["dq_open_minus_closed"] = mean[:, 2] - mean[:, 1]
    # The improvement term as training computes it (targets() in objective.py), on the target network.
    q = lower_tail_mean(net.q_logits(z_t, bin_values(sampled, low, high, bins)), values, config.improvement_cvar)
    w, spread = improvement_weights(q, config.eta, per_state)
    out["v_samples"], out["q_spread"] = q.mean(-1), spread
    out["w_on_open"] = (w * is_open).sum(-1)
    out["ess"] = 1.0 / (w**2).sum(-1)
    out["w_max"] = w.max(-1).values
    both = (is_open.sum(-1) > 0) & (is_open.sum(-1) < samples)
    q_o = (q * is_open).sum(-1) / is_open.sum(-1).clamp_min(1)
    q_c = (q * (1 - is_open)).sum(-1) / (1 - is_open).sum(-1).clamp_min(1)
    out["dq_sampled_open_minus_closed"] = torch.where(both, q_o - q_c, torch.full_like(q_o, float("nan")))
    # Counterfactual: every sampled action in both gripper versions, weighted together as training would.
    opened, shut = sampled.clone(), sampled.clone()
    opened[..., g], shut[..., g] = 0, bins - 1
    pair = torch.cat([opened, shut], dim=1)
    q2 = lower_tail_mean(net.q_logits(z_t, bin_values(pair, low, high, bins)), values, config.improvement_cvar)
    w2, _ = improvement_weights(q2, config.eta, per_state)
    out["cf_w_open"] = w2[:, :samples].sum(-1)
    out["cf_dq_open_minus_closed"] = (q2[:, :samples] - q2[:, samples:]).mean(-1)
    out["cf_open_better"] = (q2[:, :samples] > q2[:, samples:]).float().mean(-1)
    return {k: v.numpy() for k, v in out.items()}


def _summ(x: np.ndarray, quantiles: bool = False) -> dict[str, float]:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0}
    out = {"n": int(x.size), "mean": round(float(x.mean()), 5), "sd": round(float(x.std()), 5)}
    if quantiles:
        out.update({f"q{q}": round(float(np.quantile(x, q / 100)), 5) for q in (10, 50, 90)})
    return out


def probe_data(
    model, target, config: TrainConfig, moments, arrays_of, offsets, samples: int, seed: int
) -> dict[str, dict]:
    """Per kind, per offset (steps before the switch), per metric: mean, sd, median over the moments."""
    names = model.obs_spec.modalities
    out: dict[str, dict] = {}
    for kind in KINDS:
        mine = [m for m in moments if m.kind == kind]
        if not mine:
            continue
        per_offset = {}
        for off in offsets:
            obs_parts, acts, returns = [], [], []
            for m in mine:
                t = m.step + off
                if t < 0:
                    continue
                arrays, mc = arrays_of(m.episode)
                obs_parts.append(_batch(arrays.observations, np.array([t]), names))
                acts.append(arrays.actions[t])
                returns.append(mc[t])
            obs = {k: torch.cat([o[k] for o in obs_parts]) for k in names}
            gen = torch.Generator().manual_seed(seed + off)
            res = probe_states(model, target, obs, torch.from_numpy(np.stack(acts)), config, samples, gen)
            res["data_return"] = np.array(returns)
            res["data_open"] = (np.stack(acts)[:, -1] < OPEN_BELOW).astype(np.float64)
            per_offset[str(off)] = {k: _summ(v) for k, v in res.items()}
        out[kind] = {"moments": len(mine), "offsets": per_offset}
    return out


def carry_states(
    arrays, objects: tuple[str, ...], grasp_at: int, half: float, placing: bool = False
) -> list[tuple[int, np.ndarray]]:
    """(step, unit xy vector red → blue) of every 5th step carrying red: held (gripper_grasp), red at least a
    cube above the stacked height and more than 3 cm (xy) from blue. `placing`: instead every step holding red
    within PLACING_XY of blue's centre (but not on it, > 0.5 cm) and above the stacked height, where the data's
    experts either centre red or go for an off-centre release (MISPLACE_OFFSET, the rl_like preset's misplace)."""
    obj, proprio = arrays.observations["objects"], arrays.observations["proprio"]
    red, blue = objects.index("red"), objects.index("blue")
    out = []
    for t in range(0, arrays.steps, 1 if placing else 5):
        r, b = obj[t, red, :3], obj[t, blue, :3]
        d = b[:2] - r[:2]
        xy = np.linalg.norm(d)
        if placing:
            keep = 0.005 < xy < PLACING_XY and r[2] - b[2] > 2 * half + 0.005
        else:
            keep = xy > 0.03 and r[2] - b[2] > 4 * half
        if proprio[t, grasp_at] > 0.5 and keep:
            out.append((t, d / xy))
    return out


def landing_speed(distance: np.ndarray | float, horizon: int) -> np.ndarray | float:
    """The xy speed that, held over the critic's `horizon` steps, carries red `distance` metres onto blue's centre
    (and, reversed, as far off it again): full speed would overshoot the centre by centimetres."""
    return distance / (horizon * LINK.period_s)


def landing_miss(velocities: np.ndarray, towards: np.ndarray, speed: np.ndarray, horizon: int) -> np.ndarray:
    """(B, N) how far (m, xy) from blue's centre red ends when each of N sampled xy `velocities` (B, N, 2) is held
    over the critic's `horizon` steps from a placing state whose centre lies along the unit `towards` (B, 2) at
    `landing_speed` `speed` (B,): the sample's direction alone does not say it lands, a fast one towards blue
    overshoots it."""
    reach = horizon * LINK.period_s
    centre = (np.asarray(speed) * reach)[:, None] * towards  # (B, 2) red → blue's centre
    return np.linalg.norm(velocities * reach - centre[:, None, :], axis=-1)


@torch.no_grad()
def probe_carry(
    model: PerceiverActorCritic,
    target: PerceiverActorCritic | None,
    config: TrainConfig,
    obs: dict[str, torch.Tensor],
    towards: np.ndarray,
    samples: int,
    seed: int,
    speed: np.ndarray | None = None,
) -> dict:
    """At carry states: where the policy's argmax (and mean) xy velocity points, as the cosine with the
    direction to blue; with a critic, Q of full speed (or `speed`, m/s per state) towards blue, standing still
    and away (gripper closed),
    and what the improvement weights of N target-policy samples follow: their correlation, per state, with
    each sample's xy direction to blue and with its gripper command."""
    spec = model.action_spec
    z = model.encode(obs)
    p = F.softmax(model.policy_logits(z).float(), dim=-1).numpy()  # (B, A, K)
    centers = spec.bin_centers()
    argmax = centers[np.arange(spec.size)[None, :], p.argmax(-1)]
    mean = (p * centers[None]).sum(-1)
    out = {}
    for name, a in (("argmax", argmax), ("mean", mean)):
        norm = np.linalg.norm(a[:, :2], axis=1)
        moving = norm > 1e-4
        out[f"{name}_xy_cos_to_blue"] = np.where(moving, (a[:, :2] * towards).sum(1) / np.maximum(norm, 1e-9), np.nan)
        out[f"{name}_xy_zero"] = (~moving).astype(np.float64)
    if target is not None:
        b = len(towards)
        acts = np.zeros((b, 3, spec.size), np.float32)
        speeds = np.full(b, spec.high[0]) if speed is None else np.minimum(speed, spec.high[0])
        for j, sign in enumerate((1.0, 0.0, -1.0)):
            acts[:, j, :2] = sign * speeds[:, None] * towards
        acts[:, :, -1] = spec.high[-1]
        q = expected_value(model.q_logits(z, torch.from_numpy(acts)), support(model)).numpy()
        out["q_towards"], out["q_still"], out["q_away"] = q[:, 0], q[:, 1], q[:, 2]
        out["dq_towards_minus_away"] = q[:, 0] - q[:, 2]
        low, high = model.action_low, model.action_high
        z_t = target.encode(obs)
        sampled = bin_values(
            sample_bins(target.policy_logits(z_t), samples, torch.Generator().manual_seed(seed)), low, high, spec.bins
        )
        q = lower_tail_mean(target.q_logits(z_t, sampled), support(target), config.improvement_cvar)
        w, spread = improvement_weights(q, config.eta, config.eta_mode == "per_state")
        v = sampled.numpy()
        cos = (v[..., :2] * towards[:, None]).sum(-1) / np.maximum(np.linalg.norm(v[..., :2], axis=-1), 1e-9)
        out["q_spread"], out["ess"] = spread.numpy(), (1.0 / (w**2).sum(-1)).numpy()
        out["w_corr_cos_to_blue"] = _row_corr(w.numpy(), cos)
        out["w_corr_gripper"] = _row_corr(w.numpy(), v[..., -1])
        if speed is not None:  # placing: does the improvement weight the samples that land on blue?
            miss = landing_miss(v[..., :2], towards, speed, config.critic_horizon)
            out["w_corr_landing_miss"] = _row_corr(w.numpy(), miss)
            out["landing_miss_weighted_cm"] = 100.0 * (w.numpy() * miss).sum(-1)
            out["landing_miss_mean_cm"] = 100.0 * miss.mean(-1)
    summary = {k: _summ(v) for k, v in out.items()}
    if target is not None:
        summary["readout_attention"] = readout_attention(model, z, torch.from_numpy(acts[:, :1]))
    return summary


@torch.no_grad()
def readout_attention(model: PerceiverActorCritic, latents: torch.Tensor, actions: torch.Tensor) -> dict:
    """What the critic's readout token reads in q_mixer, per head: its attention weights over the A+1 tokens
    (itself, then one per action dimension), averaged over the states, for one candidate action (B, 1, A).
    A dimension a head gives ~0 reaches a "readout" head only through the other heads (issue 11: the arm's)."""
    w = model.q_mixer.attention_weights(model.q_fused(latents, actions))[:, :, 0, :]  # (B, heads, A+1)
    return {
        "tokens": ["readout", *model.action_spec.dims],
        "per_head": w.mean(0).tolist(),
        "q_readout": model.config.q_readout,
    }


def carry_coverage(carry, arrays_of, horizon: int) -> dict:
    """What the data shows the critic at the carry states: how its xy velocity points relative to blue (cosine),
    one step's action and the mean of the next `horizon` (the action a critic of held actions scores). A critic
    learns what moving away is worth only from data that moves away; white noise on one step's velocity does,
    and averages out over a hold."""
    cos = {"step": [], "held": []}
    for episode, t, towards in carry:
        actions = arrays_of(episode)[0].actions
        for name, v in (("step", actions[t, :2]), ("held", held_actions(actions[t : t + horizon], horizon)[0, :2])):
            cos[name].append(float(np.dot(v, towards) / max(np.linalg.norm(v), 1e-9)))
    out = {"horizon": horizon}
    for name, values in cos.items():
        c = np.asarray(values)
        out[f"{name}_cos_to_blue_median"] = float(np.median(c))
        out[f"{name}_cos_to_blue_p5"] = float(np.percentile(c, 5))
        out[f"{name}_share_away"] = float(np.mean(c < 0))
    return out


def release_coverage(episodes, objects: tuple[str, ...], half: float) -> dict:
    """What the data shows a policy with red resting on blue (within STACK_XY, at the stacked height within
    STACK_Z, the gripper commanded closed on the step before): how many such steps there are, on how many of
    them the gripper command opens (the per-step chance of letting go a cloned policy learns), and how long the
    data rests there before it opens. A per-step chance under one half never opens under argmax decoding, however
    long the policy rests: a cloned policy must put more than half its mass on "open" at one of those steps."""
    red, blue = objects.index("red"), objects.index("blue")
    resting, opening, dwell = 0, 0, []
    for arrays in episodes:
        obj, grip = arrays.observations["objects"], arrays.actions[:, -1]
        run = 0
        for t in range(1, len(grip)):
            if not (grip[t - 1] >= OPEN_BELOW and _on_blue(obj[t, red, :3], obj[t, blue, :3], half)):
                run = 0
                continue
            resting += 1
            if grip[t] < OPEN_BELOW:
                opening += 1
                dwell.append(run)
                run = 0
            else:
                run += 1
    return {
        "resting_steps": resting,
        "opening_steps": opening,
        "open_share": opening / resting if resting else float("nan"),
        "dwell_before_opening": _summ(np.asarray(dwell, np.float64), quantiles=True),
    }


def _row_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of a with the same row of b (nan where either is constant)."""
    a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    den = np.sqrt((a**2).sum(-1) * (b**2).sum(-1))
    return np.where(den > 1e-12, (a * b).sum(-1) / np.maximum(den, 1e-12), np.nan)


CARRY_ROWS = (
    ("q_towards", "Q(towards blue)", "{:.4f}"),
    ("q_still", "Q(standing still)", "{:.4f}"),
    ("q_away", "Q(away from blue)", "{:.4f}"),
    ("dq_towards_minus_away", "Q towards - Q away", "{:+.4f}"),
    ("q_spread", "std of Q over samples", "{:.4f}"),
    ("ess", "ESS of the weights", "{:.1f}"),
    ("w_corr_cos_to_blue", "corr(weight, sample cos to blue)", "{:+.3f}"),
    ("w_corr_gripper", "corr(weight, sample gripper)", "{:+.2f}"),
    ("argmax_xy_cos_to_blue", "argmax xy: cos to blue (moving)", "{:+.2f}"),
    ("argmax_xy_zero", "argmax xy: both on zero bin", "{:.2f}"),
    ("mean_xy_cos_to_blue", "mean xy: cos to blue", "{:+.2f}"),
)
PLACING_ROWS = CARRY_ROWS + (
    ("w_corr_landing_miss", "corr(weight, landing miss)", "{:+.3f}"),
    ("landing_miss_mean_cm", "landing miss: mean (cm)", "{:.2f}"),
    ("landing_miss_weighted_cm", "landing miss: weighted (cm)", "{:.2f}"),
)


def rollouts(model, target, config, episodes: int, samples: int, seed: int, decode: str = "argmax") -> dict:
    """Closed loop (`decode`: one of DECODINGS; the task env stepped directly: no pac-run loop or safety filter):
    how far each episode got (grasped red, lifted it, held it over blue, stacked), where the gripper first closed
    (the TCP's height above red's centre and its xy distance), where the policy takes red while it holds it, and
    the probe at the held states near blue (xy < MISPLACE_XY)."""
    from policies.data.collect import tokenizer
    from robots.tasks.env import PacTaskEnv
    from runtime.eval import HELD_OUT_SEED_START

    spec = model.obs_spec
    env = PacTaskEnv(spec.robot, "stack", cameras=(), render_images=False)
    tok = tokenizer(spec.robot, cameras=(), objects=bool(spec.objects))
    half = float(env.arm.scene["objects"][0]["size"])
    states, xy, dz, still, returns, successes = [], [], [], [], [], 0
    reached = dict.fromkeys(("grasped", "lifted", "over_blue"), 0)
    close_dz, close_xy = [], []  # where the first close command of each episode that closed came
    for i in range(episodes):
        observation, _ = env.reset(seed=HELD_OUT_SEED_START + i)
        rng = np.random.default_rng(HELD_OUT_SEED_START + i)  # the sampled decodings: as pac-eval seeds them
        shaped, got, closed = 0.0, set(), False
        rest_z = float(env.scene().objects["red"][2])
        for _ in range(env.max_steps):
            feeds = tok.from_observation(observation, env.instruction).feeds()
            inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
            with torch.no_grad():
                logits = model(inputs)[0].numpy()
            action = model.action_spec.from_logits(logits, decode, rng).astype(np.float32)
            s = env.scene()
            red, blue = s.objects["red"], s.objects["blue"]
            if not closed and action[-1] >= GRIPPER_CLOSED_AT:
                closed = True
                close_dz.append(float(s.tcp[2] - red[2]))
                close_xy.append(float(np.linalg.norm(s.tcp[:2] - red[:2])))
            if s.grasped == "red":
                got.add("grasped")
                if red[2] > rest_z + LIFTED:
                    got.add("lifted")
                    if np.linalg.norm(red[:2] - blue[:2]) < STACK_XY:
                        got.add("over_blue")
                xy.append(float(np.linalg.norm(red[:2] - blue[:2])))
                dz.append(float(red[2] - blue[2] - 2 * half))
                still.append(float(np.abs(action[:3]).max() < 0.002))  # every linear velocity on its zero bin
                if xy[-1] < MISPLACE_XY:
                    states.append(({k: v[0] for k, v in feeds.items()}, action, xy[-1], dz[-1]))
            observation, _, terminated, truncated, info = env.step(action)
            shaped += float(info["shaped_reward"])
            if terminated or truncated:
                successes += int(terminated)
                break
        returns.append(shaped)
        for stage in got:
            reached[stage] += 1
    env.close()
    xy_a, dz_a = np.array(xy), np.array(dz)
    result: dict = {
        "episodes": episodes,
        "decode": decode,
        "successes": successes,
        "shaped_return": _summ(returns),
        "episodes_reaching": reached | {"stacked": successes},
        "first_close_above_red_m": _summ(close_dz, quantiles=True),
        "first_close_xy_from_red_m": _summ(close_xy, quantiles=True),
        "held_steps": len(xy),
        "held_share_xy_below_stack_xy": float((xy_a < STACK_XY).mean()) if xy else 0.0,
        "held_share_xy_below_5cm": float((xy_a < MISPLACE_XY).mean()) if xy else 0.0,
        "held_xy_m": _summ(xy_a, quantiles=True),
        "held_height_above_stacked_m": _summ(dz_a, quantiles=True),
        "held_share_zero_velocity": _summ(still).get("mean", 0.0),
        "near_blue_states": len(states),
    }
    if not states:
        return result
    names = spec.modalities
    obs = {k: torch.from_numpy(np.stack([o[k] for o, *_ in states])) for k in names}
    acts = torch.from_numpy(np.stack([a for _, a, *_ in states]))
    res = probe_states(model, target, obs, acts, config, samples, torch.Generator().manual_seed(seed))
    res["xy_m"] = np.array([x for *_, x, _ in states])
    res["height_above_stacked_m"] = np.array([h for *_, h in states])
    result["probe"] = {"near_blue": {k: _summ(v) for k, v in res.items()}}
    aligned = res["xy_m"] < STACK_XY
    if aligned.any():
        result["probe"]["over_blue_2cm"] = {k: _summ(v[aligned]) for k, v in res.items()}
    return result


def print_rollouts(name: str, roll: dict) -> None:
    print(
        f"\n{name} closed loop, {roll['episodes']} episodes ({roll['decode']}, env directly): "
        f"{roll['successes']} stacks, "
        f"shaped return {roll['shaped_return'].get('mean', 0):.0f}; holds red {roll['held_steps']} steps, "
        f"{roll['held_share_xy_below_5cm']:.0%} of them within 5 cm (xy) of blue, "
        f"{roll['held_share_xy_below_stack_xy']:.0%} within {STACK_XY * 100:.0f} cm; "
        f"{roll['held_share_zero_velocity']:.0%} of held steps with every linear velocity on its zero bin"
    )
    r = roll["episodes_reaching"]
    close = roll["first_close_above_red_m"]
    print(
        f"  episodes that grasped red {r['grasped']}, lifted it {r['lifted']}, held it over blue {r['over_blue']}, "
        f"stacked {r['stacked']}"
        + (f"; first close {close['q50'] * 100:.1f} cm above red's centre (median)" if close.get("n") else "")
    )
    if roll["held_steps"]:
        print(
            f"  while held: red's xy distance to blue median {roll['held_xy_m']['q50']:.3f} m (10 % below "
            f"{roll['held_xy_m']['q10']:.3f}), height above the stacked height median "
            f"{roll['held_height_above_stacked_m']['q50']:.3f} m"
        )
    if "probe" in roll:
        rows = (("xy_m", "xy to blue (m)", "{:.3f}"), ("height_above_stacked_m", "height above stacked (m)", "{:.3f}"))
        own = tuple((k, label.replace("a_data", "a_policy"), f) for k, label, f in ROWS)  # its own argmax action
        print(format_table("held states near blue", roll["probe"], rows + own))


ROWS = (  # (metric, label, format)
    ("data_open", "data action opens", "{:.2f}"),
    ("data_return", "data's discounted return", "{:.3f}"),
    ("q_data", "Q(s, a_data)", "{:.3f}"),
    ("zstd_data", "std of Z(s, a_data)", "{:.3f}"),
    ("q_closed", "Q(s, a_data, gripper closed)", "{:.3f}"),
    ("q_open", "Q(s, a_data, gripper open)", "{:.3f}"),
    ("dq_open_minus_closed", "Q open - Q closed", "{:+.3f}"),
    ("p_open", "policy P(gripper open)", "{:.3f}"),
    ("argmax_open", "argmax opens", "{:.2f}"),
    ("sampled_open", "share of samples open", "{:.3f}"),
    ("q_spread", "std of Q over samples", "{:.4f}"),
    ("ess", "ESS of the weights", "{:.1f}"),
    ("w_max", "largest weight", "{:.2f}"),
    ("w_on_open", "weight on open samples", "{:.3f}"),
    ("cf_dq_open_minus_closed", "cf: Q(a_i open) - Q(a_i closed)", "{:+.3f}"),
    ("cf_open_better", "cf: share of a_i where open wins", "{:.2f}"),
    ("cf_w_open", "cf: weight share of open copies", "{:.3f}"),
)


def format_table(title: str, per_offset: dict[str, dict], metrics: tuple = ROWS) -> str:
    offsets = list(per_offset)
    labels = [("t" + o if o.startswith("-") else "t+" + o) if o.lstrip("-").isdigit() else o for o in offsets]
    head = f"{title:<34}" + "".join(f"{label:>16}" for label in labels)
    lines = [head]
    for key, label, fmt in metrics:
        if not any(per_offset[o].get(key, {}).get("n") for o in offsets):
            continue
        cells = []
        for o in offsets:
            s = per_offset[o].get(key, {})
            cells.append(f"{fmt.format(s['mean'])} ±{s['sd']:.3f}" if s.get("n") else "-")
        lines.append(f"  {label:<32}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a pac-train run directory (with a critic)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--episodes", type=int, default=40, help="successful training episodes to search")
    p.add_argument("--before", type=int, default=5, help="steps before each moment to probe as well")
    p.add_argument("--samples", type=int, default=None, help="actions sampled per state (default: the run's N)")
    p.add_argument(
        "--cvar",
        type=float,
        default=None,
        help="score the improvement's samples by this lower-tail fraction of Z (default: the run's improvement_cvar)",
    )
    p.add_argument("--policy-runs", default="", help="comma-separated runs probed for the policy side only")
    p.add_argument(
        "--rollouts",
        type=int,
        default=0,
        help="closed-loop episodes of every policy (--run and --policy-runs), probed too",
    )
    p.add_argument("--decode", default="argmax", choices=DECODINGS, help="bins → action in the rollouts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON (default benchmarks/results/critic_probe_RUN.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    model, info, path = load_trained_model(args.run, args.step)
    config = TrainConfig.from_dict(info["train"])
    if args.cvar is not None:  # what the run's critic would have made of another score (issue 11's CVaR probe)
        config = replace(config, improvement_cvar=args.cvar)
    target = None
    if config.algorithm.critic:
        target = load_trained_model(args.run, args.step)[0]
        target.load_state_dict(load_checkpoint(checkpoint_at(args.run, args.step), ("target",))[0]["target"])
    samples = args.samples or config.improvement_samples
    root, did = locate_dataset(Path(config.dataset))
    reader = EpisodeReader(root, did)
    successes = reader.successes()
    split = split_episodes(successes, config.holdout, successes_only=False)
    chosen = [int(e) for e in split.train if successes[e]][: args.episodes]
    arm = load_spec(info["dataset"]["robot"])
    half = float(arm.scene["objects"][0]["size"])
    tcp_at = proprio_offset(model.obs_spec, "tcp_pos")
    cache: dict[int, tuple] = {}

    def arrays_of(episode: int):
        if episode not in cache:
            arrays = reader.arrays(episode, "shaped")
            per_step = per_step_rewards(arrays.rewards, arrays.terminations, config.gamma)
            mc = n_step_targets(per_step, arrays.terminations, len(per_step), config.gamma).reward  # the full return
            cache[episode] = (arrays, mc)
        return cache[episode]

    moments = [m for e in chosen for m in find_moments(arrays_of(e)[0], model.obs_spec.objects, tcp_at, half, e)]
    counts = {k: sum(m.kind == k for m in moments) for k in KINDS}
    offsets = list(range(-args.before, 1))
    print(
        f"{args.run} ({path.name}, {config.algo}, eta {config.eta} {config.eta_mode}, cvar {config.improvement_cvar}, "
        f"N {samples}): "
        f"{len(chosen)} successful training episodes, moments {counts}"
    )
    result = {
        "run": str(args.run),
        "checkpoint": path.name,
        "algo": config.algo,
        "eta": config.eta,
        "eta_mode": config.eta_mode,
        "improvement_cvar": config.improvement_cvar,
        "reward": config.reward,
        "samples": samples,
        "episodes": chosen,
        "moment_counts": counts,
        "moment_rule": (
            "data gripper command crosses 0.5 between steps t-1 and t; release: red on blue in the observation at t "
            f"(xy < STACK_XY {STACK_XY} m, |dz - 2 half| < STACK_Z {STACK_Z} m); misplace: same height, xy < "
            f"{MISPLACE_XY} m and |dz - 2 half| < {MISPLACE_Z} m; grasp: closing with the TCP within {GRASP_RADIUS} m "
            "of red"
        ),
        "data": probe_data(model, target, config, moments, arrays_of, offsets, samples, args.seed),
        "policy_runs": {},
    }
    for kind, r in result["data"].items():
        print()
        print(format_table(f"{kind} ({r['moments']} moments)", r["offsets"]))
    grasp_at = proprio_offset(model.obs_spec, "gripper_grasp")
    carry = [
        (e, t, d) for e in chosen for t, d in carry_states(arrays_of(e)[0], model.obs_spec.objects, grasp_at, half)
    ]
    names = model.obs_spec.modalities
    carry_obs = {
        k: torch.from_numpy(np.stack([arrays_of(e)[0].observations[k][t] for e, t, _ in carry])) for k in names
    }
    towards = np.stack([d for *_, d in carry])
    carries = {args.run.name: probe_carry(model, target, config, carry_obs, towards, samples, args.seed)}
    for other in [Path(x) for x in args.policy_runs.split(",") if x]:
        m2, info2, path2 = load_trained_model(other)
        c2 = TrainConfig.from_dict(info2["train"])
        r2 = probe_data(m2, None, c2, moments, arrays_of, offsets, samples, args.seed)
        result["policy_runs"][str(other)] = {"checkpoint": path2.name, "algo": c2.algo, "data": r2}
        carries[other.name] = probe_carry(m2, None, c2, carry_obs, towards, samples, args.seed)
        result["policy_runs"][str(other)]["carry"] = carries[other.name]
        for kind, r in r2.items():
            print()
            print(format_table(f"{other.name} {c2.algo}: {kind}", r["offsets"]))
    coverage = carry_coverage(carry, arrays_of, config.critic_horizon)
    result["carry"] = {"states": len(carry), **carries[args.run.name], "data": coverage}
    print()
    print(format_table(f"carry ({len(carry)} states; at full speed)", carries, CARRY_ROWS))
    attention = carries[args.run.name].get("readout_attention")
    if attention is not None:
        print(
            f"  critic readout attention in q_mixer (head: {', '.join(attention['tokens'])}); head reads "
            f"{attention['q_readout']}"
        )
        for h, row in enumerate(attention["per_head"]):
            print(f"    head {h}: " + "  ".join(f"{x:.2f}" for x in row))
    for name, label in (("step", "one step's action"), ("held", f"held over {config.critic_horizon} steps")):
        print(
            f"  data, {label}: cos to blue median {coverage[f'{name}_cos_to_blue_median']:+.2f}, "
            f"p5 {coverage[f'{name}_cos_to_blue_p5']:+.2f}, pointing away {coverage[f'{name}_share_away']:.1%}"
        )
    placing = [
        (e, t, d)
        for e in chosen
        for t, d in carry_states(arrays_of(e)[0], model.obs_spec.objects, grasp_at, half, placing=True)
    ]
    if placing:
        place_obs = {
            k: torch.from_numpy(np.stack([arrays_of(e)[0].observations[k][t] for e, t, _ in placing])) for k in names
        }
        towards_centre = np.stack([d for *_, d in placing])
        red, blue = model.obs_spec.objects.index("red"), model.obs_spec.objects.index("blue")
        distance = np.asarray(
            [
                np.linalg.norm(np.diff(arrays_of(e)[0].observations["objects"][t, [red, blue], :2], axis=0))
                for e, t, _ in placing
            ]
        )
        speed = landing_speed(distance, config.critic_horizon)
        placed = probe_carry(model, target, config, place_obs, towards_centre, samples, args.seed, speed)
        result["placing"] = {
            "states": len(placing),
            **placed,
            "data": carry_coverage(placing, arrays_of, config.critic_horizon),
        }
        print(
            format_table(
                f"placing ({len(placing)} states; towards/away: the speed that lands on / as far off blue's centre)",
                {args.run.name: placed},
                PLACING_ROWS,
            )
        )
        place_cov = result["placing"]["data"]
        print(
            f"  data while placing, held over {config.critic_horizon} steps: cos to blue's centre median "
            f"{place_cov['held_cos_to_blue_median']:+.2f}, pointing away {place_cov['held_share_away']:.1%}"
        )
    release = release_coverage([arrays_of(e)[0] for e in chosen], model.obs_spec.objects, half)
    result["release_coverage"] = release
    print(
        f"  data, red resting on blue with the gripper closed: {release['resting_steps']} steps, "
        f"{release['opening_steps']} of them open ({release['open_share']:.1%} a step), after resting a median "
        f"{release['dwell_before_opening'].get('q50', float('nan')):.0f} steps"
    )
    if args.rollouts:
        result["rollouts"] = rollouts(model, target, config, args.rollouts, samples, args.seed, args.decode)
        print_rollouts(args.run.name, result["rollouts"])
        for other in [Path(x) for x in args.policy_runs.split(",") if x]:
            m2, info2, _ = load_trained_model(other)
            roll = rollouts(
                m2, None, TrainConfig.from_dict(info2["train"]), args.rollouts, samples, args.seed, args.decode
            )
            result["policy_runs"][str(other)]["rollouts"] = roll
            print_rollouts(other.name, roll)
    out = args.out or RESULTS / f"critic_probe_{args.run.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, separators=(",", ":")) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
