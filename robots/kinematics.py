"""Forward kinematics, Jacobian and damped-least-squares IK of a serial arm, in numpy.

One kinematic model per arm, built from the arm's spec (the same data the MuJoCo model is generated
from), so the sim driver, real-arm drivers and the runtime's safety checks agree on where the TCP is
without depending on MuJoCo. Every joint turns about its body's local z axis (as in both reference arms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robots.rotations import mat_to_quat, rotation_error


@dataclass(frozen=True)
class KinematicChain:
    """A serial chain: body i sits at (parent_pos[i], parent_rot[i]) in body i-1 and turns by q[i] about z."""

    joint_names: tuple[str, ...]
    parent_pos: np.ndarray  # (n, 3)
    parent_rot: np.ndarray  # (n, 3, 3)
    tcp_pos: np.ndarray  # (3,) TCP in the last body's frame
    tcp_rot: np.ndarray  # (3, 3)
    lower: np.ndarray  # (n,) joint range, rad
    upper: np.ndarray  # (n,)

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def joint_frames(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World position (n, 3) and rotation (n, 3, 3) of every body frame, after its joint's rotation."""
        n = self.dof
        c, s = np.cos(q), np.sin(q)
        rz = np.zeros((n, 3, 3))
        rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, -s, s, c, 1.0
        local = self.parent_rot @ rz  # (n, 3, 3): each body's rotation in its parent, joint included
        pos = np.empty((n, 3))
        rot = np.empty((n, 3, 3))
        p = np.zeros(3)
        r = np.eye(3)
        for i in range(n):
            p = p + r @ self.parent_pos[i]
            r = r @ local[i]
            pos[i], rot[i] = p, r
        return pos, rot

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (3,) and rotation matrix (3, 3) in the base frame."""
        pos, rot = self.joint_frames(np.asarray(q, dtype=float))
        return pos[-1] + rot[-1] @ self.tcp_pos, rot[-1] @ self.tcp_rot

    def fk_pose(self, q: np.ndarray) -> np.ndarray:
        """TCP pose as 7 numbers: position (3) and unit quaternion (w, x, y, z), w >= 0."""
        p, r = self.fk(q)
        return np.concatenate([p, mat_to_quat(r)])

    def fk_and_jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """TCP position, rotation and the (6, n) geometric Jacobian (linear rows first) in the base frame."""
        pos, rot = self.joint_frames(np.asarray(q, dtype=float))
        tcp = pos[-1] + rot[-1] @ self.tcp_pos
        axes = rot[:, :, 2]  # (n, 3) joint axes in the world
        jac = np.empty((6, self.dof))
        lever = tcp - pos
        jac[0] = axes[:, 1] * lever[:, 2] - axes[:, 2] * lever[:, 1]  # axis × lever, written out: np.cross
        jac[1] = axes[:, 2] * lever[:, 0] - axes[:, 0] * lever[:, 2]  # costs more than the rest of the FK
        jac[2] = axes[:, 0] * lever[:, 1] - axes[:, 1] * lever[:, 0]
        jac[3:] = axes.T
        return tcp, rot[-1] @ self.tcp_rot, jac


def dls_solve(jac: np.ndarray, err: np.ndarray, damping: float = 0.05) -> np.ndarray:
    """Damped least squares: dq = J^T (J J^T + λ² I)^-1 err, well behaved near singularities."""
    jjt = jac @ jac.T
    jjt[np.diag_indices_from(jjt)] += damping**2
    return jac.T @ np.linalg.solve(jjt, err)


def ik(
    chain: KinematicChain,
    target_pos: np.ndarray,
    target_rot: np.ndarray,
    q0: np.ndarray,
    *,
    iterations: int = 50,
    tolerance: float = 1e-5,
    damping: float = 0.05,
) -> tuple[np.ndarray, bool]:
    """Joint angles reaching the TCP pose, starting from q0 and clamped to the joint range.

    Returns (q, converged); converged means position and rotation error below `tolerance` (m, rad).
    """
    q = np.array(q0, dtype=float)
    for _ in range(iterations):
        pos, rot, jac = chain.fk_and_jacobian(q)
        err = np.concatenate([target_pos - pos, rotation_error(target_rot, rot)])
        if np.max(np.abs(err)) < tolerance:
            return q, True
        q = np.clip(q + dls_solve(jac, err, damping), chain.lower, chain.upper)
    return q, False
