"""`pac-export`: write a policy's ONNX files, or print the size ladder's parameters and FLOPs.

    pac-export --info [--size L]                       parameters and FLOPs per inference, per size
    pac-export --robot sawyer --size S --out models/pac_S_sawyer.onnx --variants fp32,int8 [--critic]
    pac-export --checkpoint runs/pac_xs [--step N] [--out FILE] [--variants ...] [--critic]

With --checkpoint, the trained actor (and with --critic also the critic, beside it) of a pac-train run is
exported, its provenance holding the training command, dataset id and sha256, algorithm, step and commit.
Without it the export is of a seeded, untrained model, and the file's provenance says so.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from policies.model.config import SIZES, size_config
from policies.model.flops import model_cost
from policies.model.perceiver import build_model
from policies.spec import action_spec, observation_spec
from policies.tokenizer.language import InstructionTokenizer
from robots.contract.link import MOTION_MODES, Mode
from robots.spec import ARMS, load_spec


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def info(sizes: list[str], robot: str, mode: str, candidates: int) -> str:
    arm = load_spec(robot)
    obs, act = observation_spec(arm), action_spec(arm, mode)
    rows = []
    for name in sizes:
        c = size_config(name)
        cost = model_cost(c, obs, act, candidates)
        rows.append(
            [
                name,
                str(c.width),
                str(c.depth),
                str(c.heads),
                str(c.latents),
                f"{cost.parameters / 1e6:.1f}M",
                f"{cost.parameters / c.target_parameters:.2f}",
                f"{cost.actor_flops / 1e9:.2f}",
                f"{cost.critic_flops / 1e9:.2f}",
            ]
        )
    headers = ["size", "width", "depth", "heads", "latents", "params", "÷target", "actor GFLOP", "critic GFLOP"]
    return (
        f"{robot} {mode}: {obs.proprio_size} proprio dims, {len(obs.cameras)} cameras "
        f"{obs.image_height}x{obs.image_width}, {act.size} action dims x {act.bins} bins; "
        f"critic scores {candidates} candidates per call\n" + _table(headers, rows)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pac-export", description="Export a PAC policy to ONNX (DESIGN §3).")
    parser.add_argument("--info", action="store_true", help="print parameters and FLOPs instead of exporting")
    parser.add_argument("--size", default=None, help=f"model size: {', '.join(SIZES)} (--info: all when omitted)")
    parser.add_argument("--robot", default="sawyer", choices=ARMS)
    modes = [m.value for m in MOTION_MODES]
    parser.add_argument("--mode", default=Mode.CARTESIAN_VELOCITY.value, choices=modes, help="the action space")
    parser.add_argument("--cameras", default=None, help="comma-separated camera names (default: all of the arm's)")
    parser.add_argument("--out", type=Path, help="fp32 file; other variants are written beside it")
    parser.add_argument("--variants", default="fp32,int8", help="comma-separated: fp32, int8, fp16")
    parser.add_argument("--critic", action="store_true", help="export the critic graph instead of the actor")
    parser.add_argument("--candidates", type=int, default=16, help="actions the critic scores per call")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed of the untrained model")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a pac-train run directory: export its weights")
    parser.add_argument("--step", type=int, default=None, help="with --checkpoint: that step (default: the latest)")
    args = parser.parse_args(argv)
    if args.checkpoint is not None:
        return export_checkpoint(args)

    if args.info:
        print(info([args.size] if args.size else list(SIZES), args.robot, args.mode, args.candidates))
        return 0
    if args.size is None or args.out is None:
        parser.error("exporting needs --size and --out (or use --info)")
    arm = load_spec(args.robot)
    cameras = tuple(args.cameras.split(",")) if args.cameras else None
    obs, act = observation_spec(arm, cameras), action_spec(arm, args.mode)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    graph = "critic" if args.critic else "actor"

    from policies.export.onnx_export import export_policy  # heavy imports only when exporting

    started = time.perf_counter()
    model = build_model(size_config(args.size), obs, act, seed=args.seed)
    written = export_policy(
        model,
        args.out,
        InstructionTokenizer.default(),
        variants=variants,
        graph=graph,
        candidates=args.candidates,
        weights=f"untrained (seed {args.seed})",
        seed=args.seed,
    )
    rows = [[str(f.path), f.variant, f"{f.bytes / 2**20:.1f}", f"{f.max_abs_error:.2g}"] for f in written]
    print(_table(["file", "variant", "MiB", "max |ORT-torch|"], rows))
    print(f"{args.size} {graph} for {args.robot} exported in {time.perf_counter() - started:.1f} s")
    return 0


def export_checkpoint(args: argparse.Namespace) -> int:
    """Export a training run's actor (and critic with --critic) with its provenance."""
    from policies.export.onnx_export import export_policy
    from policies.train.checkpoint import CheckpointError, load_trained_model

    try:
        model, info, path = load_trained_model(args.checkpoint, args.step)
    except CheckpointError as exc:
        print(f"pac-export: {exc}", file=sys.stderr)
        return 2
    train = info["train"]
    robot = info["dataset"]["robot"]
    out = args.out or args.checkpoint / "export" / f"{train['algo']}_{model.config.size}_{robot}.onnx"
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    step = int(path.name.removeprefix("step_"))
    training = {
        "run": str(args.checkpoint),
        "checkpoint": path.name,
        "step": step,
        "algo": train["algo"],
        "seed": train["seed"],
        "command": info["command"],
        # the command's --batch-size is per process: a torchrun run trained on world_size × it a step
        "world_size": int(info.get("world_size", 1)),
        "dataset": {k: info["dataset"][k] for k in ("id", "sha256", "episodes", "success_rate")},
        "git_commit": info.get("git_commit", "unknown"),
    }
    weights = f"trained: {train['algo']} {model.config.size}, {info['dataset']['id']}, step {step}"
    started = time.perf_counter()
    tokenizer = InstructionTokenizer.default()
    written = export_policy(model, out, tokenizer, variants=variants, weights=weights, training=training)
    if args.critic:
        critic_out = out.with_name(f"{out.stem}_critic.onnx")
        written += export_policy(
            model, critic_out, tokenizer, graph="critic", candidates=args.candidates, weights=weights, training=training
        )
    rows = [[str(f.path), f.graph, f.variant, f"{f.bytes / 2**20:.1f}", f"{f.max_abs_error:.2g}"] for f in written]
    print(_table(["file", "graph", "variant", "MiB", "max |ORT-torch|"], rows))
    print(f"{weights} exported in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
