"""Whether the arm keeps clear of its cell (table, pedestal, floor) at a configuration and along a path of them:
MuJoCo's collision detection on the sim's own model of the cleared cell.

Calibration poses are chosen by IK for where the board should be, which says nothing about the links behind it;
this refuses the poses, and the moves between them, that would put a link through the table, before any arm
(simulated or real) is asked to go there. Only the arm's geoms against the scene's count (the model's
collision classes); the board on the gripper is checked by the pose generator itself.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is imported

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from robots.sim.board import cleared  # noqa: E402
from robots.sim.physics import SimArm  # noqa: E402
from robots.spec import ArmSpec  # noqa: E402

CLEARANCE = 0.02  # m between every link and the scene: room for the arm's tracking error and the cell's tolerances
PATH_STEP = 0.02  # rad: the largest joint move between two configurations checked along a path


class Clearance:
    def __init__(self, spec: ArmSpec, clearance: float = CLEARANCE) -> None:
        self.sim = SimArm(cleared(spec), cameras=())
        self.sim.model.geom_margin[:] = clearance  # contacts are reported from this far apart: too close
        self.clearance = clearance

    def clear(self, q: np.ndarray) -> bool:
        """No link of the arm at `q` within `clearance` of the table, the pedestal or the floor."""
        m, d = self.sim.model, self.sim.data
        d.qpos[self.sim.qpos_idx] = q
        mujoco.mj_kinematics(m, d)
        mujoco.mj_collision(m, d)
        return d.ncon == 0

    def path_clear(self, path: np.ndarray) -> bool:
        """Every configuration along `path` (configurations in order, joined by straight joint-space segments,
        checked at most PATH_STEP apart) is clear."""
        path = np.asarray(path, float)
        for a, b in zip(path[:-1], path[1:], strict=True):
            n = max(1, int(np.ceil(np.max(np.abs(b - a)) / PATH_STEP)))
            if not all(self.clear(a + (b - a) * s) for s in np.arange(n) / n):
                return False
        return self.clear(path[-1])

    def close(self) -> None:
        self.sim.close()
