"""Seeded object layouts: where the red, green and blue cubes start in an episode.

Objects are placed uniformly in the workspace box's footprint (less a margin, so the gripper can reach
around them) and at least MIN_SEPARATION apart. The same seed gives the same layout in the Gymnasium
environment and in `pac-sim` (reset with a seed), so an episode can be replayed through the driver.
"""

from __future__ import annotations

import numpy as np

from robots.spec import ArmSpec

MARGIN = 0.03  # m inside the workspace footprint
MIN_SEPARATION = 0.08  # m between object centres: 3 cube widths, room for the fingers


def object_layout(spec: ArmSpec, rng: np.random.Generator, attempts: int = 1000) -> dict[str, tuple[float, float]]:
    """(x, y) per object name, sampled by rejection until every pair is MIN_SEPARATION apart."""
    lo = np.asarray(spec.limits.workspace.low[:2]) + MARGIN
    hi = np.asarray(spec.limits.workspace.high[:2]) - MARGIN
    names = [o["name"] for o in spec.scene["objects"]]
    for _ in range(attempts):
        xy = rng.uniform(lo, hi, size=(len(names), 2))
        gaps = np.linalg.norm(xy[:, None] - xy[None, :], axis=-1) + np.eye(len(names)) * 1e9
        if gaps.min() >= MIN_SEPARATION:
            return {n: (float(p[0]), float(p[1])) for n, p in zip(names, xy, strict=True)}
    raise RuntimeError(f"no layout of {names} with {MIN_SEPARATION} m separation in {lo}..{hi}")
