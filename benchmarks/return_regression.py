"""Can a critic learn, from the study's data, what the arm's action is worth while placing? (issue 11)

Every trained critic of the learning study scores moving red towards blue's centre, standing still and moving
away alike (benchmarks/critic_probe.py, "placing"), though the data's placing steps differ sharply in return by
the direction of their action. This asks the data directly, without TD or the PAC model: a small MLP regresses
each placing state's discounted return (the shaped reward, the full episode) on

  absolute state           proprio (joint and TCP positions, ...) and the objects' poses, as the policy reads them
  absolute state + action  the same and the critic's action (the mean of the next `horizon` actions, xyz)
  relative state           red's offset from blue, the TCP's from red, the gripper and the joint velocities
  relative state + action
  action                   the held action alone

with every fifth episode held out (whole episodes: a held-out state's layout was never seen), and reports the
held-out R² of each, and for the two with the action what the fitted return says of the arm on the held-out
states: the return of the xy velocity that lands red on blue's centre over the hold minus that of the reverse
(the critic_probe "placing" contrast, asked of a plain regressor), and the same for the '+ action' inputs fitted
with only a few passes over the placing states (`--budgets`): a training run sees each of them only so often.
If the action adds nothing to the absolute state but much to the relative one, the absolute inputs let a learner
name the episode (each has its own layout and one outcome) and fit its return without looking at the action:
what the critic does.

`--pac-critic PASSES` fits the study's own critic network (XS, all-tokens readout; absolute and relative inputs)
to the same regression and reports, after each pass over the placing states, its held-out R² and landing
contrast: whether the network can represent what the MLP finds, and how many passes it needs to (a trained
critic that ranks nothing may be one that cannot, or one that saw the placing states too rarely).

    PYTHONPATH=. python -m benchmarks.return_regression --dataset DATA/pac/sawyer-stack-rl_like-v0 \
        [--episodes 1500] [--epochs 150] [--budgets 1,2,5] [--pac-critic 20] \
        [--out benchmarks/results/return_regression.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.critic_probe import carry_states, landing_speed
from policies.data.collect import parse_dataset_id
from policies.data.dataset import locate_dataset
from policies.data.episodes import EpisodeReader
from policies.data.nstep import held_actions, n_step_targets, per_step_rewards
from policies.model.config import POSITION_INPUTS, SIZES
from policies.model.perceiver import build_model
from policies.spec import action_spec, observation_spec, scene_objects
from policies.train.data import normalisation
from policies.train.objective import distribution_cross_entropy, expected_value, project_distribution, support
from robots.spec import load_spec

HELD_OUT_EVERY = 5  # episodes whose index is a multiple of this are held out
FEATURES = ("absolute state", "absolute state + action", "relative state", "relative state + action", "action")
MODEL_INPUTS = ("proprio", "objects", "instruction")  # a state policy's modalities (fit_pac_critic)


def placing_table(
    reader: EpisodeReader, robot: str, episodes: int, horizon: int, gamma: float
) -> dict[str, np.ndarray]:
    """Per placing state of the first `episodes` episodes: both state encodings, the held action, the return."""
    arm = load_spec(robot)
    obs, act = observation_spec(arm, cameras=(), objects=scene_objects(arm)), action_spec(arm)
    half = float(arm.scene["objects"][0]["size"])
    grasp, tcp = obs.proprio_offset("gripper_grasp"), obs.proprio_offset("tcp_pos")
    joint_vel = obs.proprio_offset("joint_vel")
    red, blue = obs.objects.index("red"), obs.objects.index("blue")
    keys = ("absolute", "relative", "action", "held", "return", "episode", "towards", *MODEL_INPUTS)
    rows: dict[str, list] = {k: [] for k in keys}
    for e in tqdm(range(min(episodes, len(reader))), desc="placing states", unit="ep"):
        arrays = reader.arrays(e, "shaped")
        per_step = per_step_rewards(arrays.rewards, arrays.terminations, gamma)
        full = n_step_targets(per_step, arrays.terminations, len(per_step), gamma).reward
        p, o = arrays.observations["proprio"], arrays.observations["objects"]
        held = held_actions(arrays.actions, horizon)
        for t, towards in carry_states(arrays, obs.objects, grasp, half, placing=True):
            for k in MODEL_INPUTS:  # the observation as the PAC model reads it (fit_pac_critic)
                rows[k].append(arrays.observations[k][t])
            rows["held"].append(held[t])  # every dimension, the critic's action
            rows["absolute"].append(np.r_[p[t], o[t].ravel()])
            rows["relative"].append(
                np.r_[o[t, red, :3] - o[t, blue, :3], p[t, tcp : tcp + 3] - o[t, red, :3], p[t, grasp : grasp + 3],
                      p[t, joint_vel : joint_vel + 7]]
            )  # fmt: skip
            rows["action"].append(held[t, :3])
            rows["return"].append(full[t])
            rows["episode"].append(e)
            # the xy velocity that, held over the horizon, lands red on blue's centre (reversed: as far off it)
            distance = float(np.linalg.norm(o[t, blue, :2] - o[t, red, :2]))
            speed = min(landing_speed(distance, horizon), float(act.high[0]))
            rows["towards"].append(towards * speed)
    return {k: np.asarray(v) if k in ("episode", "instruction") else np.asarray(v, np.float32) for k, v in rows.items()}


def describe(table: dict[str, np.ndarray]) -> dict[str, float]:
    """What the data itself shows at the placing states: how often the held action's xy points away from blue's
    centre, and the mean return where it points towards it (cosine > 0.5) and away (cosine < 0)."""
    v, towards = table["action"][:, :2], table["towards"]
    cos = (v * towards).sum(1) / np.maximum(np.linalg.norm(v, axis=1) * np.linalg.norm(towards, axis=1), 1e-9)
    ret = table["return"]
    return {
        "share_away": float(np.mean(cos < 0)),
        "return_towards": float(ret[cos > 0.5].mean()),
        "return_away": float(ret[cos < 0].mean()),
        "corr_cos_return": float(np.corrcoef(cos, ret)[0, 1]),
    }


def fit(x: np.ndarray, y: np.ndarray, held_out: np.ndarray, epochs: int, seed: int):
    """(held-out R², predict) of a 2×256 MLP fitted to the training rows (the same net, optimiser and seed for every
    feature set, so only the inputs differ): the best held-out R² over `epochs`, and predict mapping raw rows like
    `x` to returns with that epoch's weights."""
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x_t, y_t = torch.from_numpy((x - mean) / std), torch.from_numpy(y)[:, None]
    train, test = torch.from_numpy(~held_out), torch.from_numpy(held_out)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 1),
    )  # fmt: skip
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    x_train, y_train = x_t[train], y_t[train]
    g = torch.Generator().manual_seed(seed)
    best, best_state = float("inf"), None
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=g)
        for i in range(0, len(order), 256):
            j = order[i : i + 256]
            loss = ((net(x_train[j]) - y_train[j]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            mse = float(((net(x_t[test]) - y_t[test]) ** 2).mean())
        if mse < best:
            best, best_state = mse, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)

    @torch.no_grad()
    def predict(rows: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(((rows - mean) / std).astype(np.float32)))[:, 0].numpy()

    return 1.0 - best / float(y_t[test].var()), predict


def landing_contrast(predict, x: np.ndarray, table: dict[str, np.ndarray], held_out: np.ndarray) -> float:
    """Mean fitted return, over the held-out states, of the xy velocity that lands red on blue's centre minus that
    of its reverse (`x`: state columns then the action's xyz, as the '+ action' inputs)."""
    state, z = x[held_out, :-3], table["action"][held_out, 2:3]
    towards, away = (np.c_[state, sign * table["towards"][held_out], z] for sign in (1.0, -1.0))
    return float(np.mean(predict(towards) - predict(away)))


def fit_pac_critic(
    table: dict[str, np.ndarray],
    held_out: np.ndarray,
    normalisation: dict[str, torch.Tensor],
    robot: str,
    position_inputs: str,
    epochs: int,
    seed: int,
    batch: int = 128,
    lr: float = 1e-3,
) -> list[dict[str, float]]:
    """The study's critic network (XS, all-tokens readout, `position_inputs`) fitted to the same regression: the
    placing states' held actions → their Monte-Carlo return, by the cross-entropy the TD loss uses against the
    return's two-hot projection (no bootstrap, no actor, no other states). Per pass over the training rows: the
    held-out R² of E[Z] and the landing contrast (`landing_contrast`'s question, asked of Q with the held action's
    other dimensions kept). What it separates: a network that cannot represent the contrast, and one that can but
    is shown the placing states too rarely (a 12k × 64 run: about two passes)."""
    arm = load_spec(robot)
    config = replace(SIZES["XS"], q_readout="all_tokens", position_inputs=position_inputs)
    model = build_model(config, observation_spec(arm, cameras=(), objects=scene_objects(arm)), action_spec(arm), seed)
    for name, value in normalisation.items():
        getattr(model, name).copy_(value)
    values = support(model)
    rows = {k: torch.from_numpy(table[k]) for k in (*MODEL_INPUTS, "held", "return", "towards")}

    def q_logits(idx: np.ndarray, actions: torch.Tensor) -> torch.Tensor:
        return model.q_logits(model.encode({k: rows[k][idx] for k in MODEL_INPUTS}), actions[:, None])[:, 0]

    optimiser = torch.optim.AdamW(model.parameters(), lr, weight_decay=1e-2)
    train, test = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    rng = np.random.default_rng(seed)
    target_y = table["return"][test]
    out = []
    for epoch in tqdm(range(1, epochs + 1), desc=f"PAC critic, {position_inputs} inputs", unit="pass"):
        model.train()
        for idx in np.array_split(rng.permutation(train), max(1, len(train) // batch)):
            r = rows["return"][idx]
            point = torch.zeros(len(idx), len(values))
            point[:, 0] = 1.0  # a point mass at the support's 0, moved by r with discount 0: the return's two bins
            two_hot = project_distribution(point, r, torch.zeros_like(r), values)
            loss = distribution_cross_entropy(two_hot, q_logits(idx, rows["held"][idx])).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        fitted, contrast = [], []
        with torch.no_grad():
            for idx in np.array_split(test, max(1, len(test) // 512)):
                held = rows["held"][idx]
                fitted.append(expected_value(q_logits(idx, held), values).numpy())
                q = []
                for sign in (1.0, -1.0):  # landing on blue's centre, then its reverse; the other dimensions held
                    action = held.clone()
                    action[:, :2] = sign * rows["towards"][idx]
                    q.append(expected_value(q_logits(idx, action), values))
                contrast.append((q[0] - q[1]).numpy())
        fitted_y = np.concatenate(fitted)
        r2 = 1.0 - float(np.mean((fitted_y - target_y) ** 2) / target_y.var())
        out.append({"passes": epoch, "r2": r2, "towards_minus_away": float(np.concatenate(contrast).mean())})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--episodes", type=int, default=1500)
    p.add_argument("--horizon", type=int, default=20, help="the critic's hold (the study's critic_horizon)")
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument(
        "--budgets",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[1, 2, 5],
        help="also fit the two '+ action' inputs with only this many passes (comma-separated; '' none)",
    )
    p.add_argument(
        "--pac-critic",
        type=int,
        default=0,
        metavar="PASSES",
        help="also fit the study's critic network (XS, all tokens) for this many passes, absolute and relative inputs",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "return_regression.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root, did = locate_dataset(args.dataset)
    robot = parse_dataset_id(did)[0]
    reader = EpisodeReader(root, did)
    table = placing_table(reader, robot, args.episodes, args.horizon, args.gamma)
    held_out = table["episode"] % HELD_OUT_EVERY == 0
    inputs = {
        "absolute state": table["absolute"],
        "absolute state + action": np.c_[table["absolute"], table["action"]],
        "relative state": table["relative"],
        "relative state + action": np.c_[table["relative"], table["action"]],
        "action": table["action"],
    }
    data = describe(table)
    r2, contrast = {}, {}
    for name in tqdm(FEATURES, desc="fits"):
        r2[name], predict = fit(inputs[name], table["return"], held_out, args.epochs, args.seed)
        if name.endswith("+ action"):
            contrast[name] = landing_contrast(predict, inputs[name], table, held_out)
    # the same fits at a few passes over the placing states: a pac-train run of S steps × B samples draws about
    # S·B·(placing states ÷ the data's steps) of them, two passes for the study's 12k × 64
    budgets = {}
    for epochs in args.budgets:
        for name in ("absolute state + action", "relative state + action"):
            fitted, predict = fit(inputs[name], table["return"], held_out, epochs, args.seed)
            budgets.setdefault(str(epochs), {})[name] = {
                "r2": fitted,
                "towards_minus_away": landing_contrast(predict, inputs[name], table, held_out),
            }
    pac_critic = {}
    if args.pac_critic:
        arm = load_spec(robot)
        spec = observation_spec(arm, cameras=(), objects=scene_objects(arm))
        train_episodes = np.unique(table["episode"][~held_out])
        stats = normalisation(reader, train_episodes, spec)  # as pac-train sets it: over the training episodes
        for position_inputs in POSITION_INPUTS:
            pac_critic[position_inputs] = fit_pac_critic(
                table, held_out, stats, robot, position_inputs, args.pac_critic, args.seed
            )
    result = {
        "dataset": did,
        "episodes": int(len(np.unique(table["episode"]))),
        "states": int(len(table["return"])),
        "held_out_states": int(held_out.sum()),
        "horizon": args.horizon,
        "epochs": args.epochs,
        "data": data,
        "held_out_r2": r2,
        "towards_minus_away": contrast,
        "budgets": budgets,
        "pac_critic": pac_critic,
    }
    print(
        f"{did}: {result['states']} placing states of {result['episodes']} episodes, "
        f"{result['held_out_states']} held out"
    )
    print(
        f"the data's held actions point away from blue's centre at {data['share_away']:.1%} of the states; return "
        f"{data['return_towards']:.3f} where they point towards it (cos > 0.5), {data['return_away']:.3f}"
        " away (cos < 0)"
    )
    print(f"{'inputs':<34}{'held-out R²':>12}{'towards − away':>16}")
    for name in FEATURES:
        print(f"{name:<34}{r2[name]:>12.3f}" + (f"{contrast[name]:>+16.3f}" if name in contrast else ""))
    for epochs, fits in budgets.items():
        for name, row in fits.items():
            print(f"{name + f', {epochs} passes':<34}{row['r2']:>12.3f}{row['towards_minus_away']:>+16.3f}")
    for position_inputs, passes in pac_critic.items():
        for row in passes:
            label = f"PAC critic, {position_inputs}, {row['passes']} passes"
            print(f"{label:<34}{row['r2']:>12.3f}{row['towards_minus_away']:>+16.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
