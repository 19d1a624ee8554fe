"""An untrained XS *state* policy (proprio + the cell's object poses, no camera), exported once per test module.

conftest's `exported_policy` makes vision policies; the closed-loop tests of state policies (pac-run and
pac-eval) share this one helper instead of copying the export between files.
"""

from __future__ import annotations

from pathlib import Path

from robots.contract.link import Mode


def export_state_policy(
    out_dir: Path, robot: str = "sawyer", mode: Mode = Mode.CARTESIAN_VELOCITY, seed: int = 4
) -> Path:
    """`out_dir/<robot>_state_XS_<seed>.onnx`: an XS actor reading proprio and every object of `robot`'s cell."""
    from policies.export.onnx_export import export_policy
    from policies.model.config import size_config
    from policies.model.perceiver import build_model
    from policies.spec import action_spec, observation_spec, scene_objects
    from policies.tokenizer.language import InstructionTokenizer
    from robots.spec import load_spec

    arm = load_spec(robot)
    obs = observation_spec(arm, cameras=(), objects=scene_objects(arm))
    model = build_model(size_config("XS"), obs, action_spec(arm, mode), seed=seed)
    path = Path(out_dir) / f"{robot}_state_XS_{seed}.onnx"
    return export_policy(model, path, InstructionTokenizer.default())[0].path
