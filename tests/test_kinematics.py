"""The numpy kinematics against MuJoCo's model of the same arm and against the reference chain."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.kinematics import ik
from robots.rotations import mat_to_quat, quat_to_mat, rotation_error
from robots.sim.mjcf import TCP_SITE, build_mjcf
from robots.spec import ARMS, load_spec

# The reference chains of ../shared/reference/robots.md, copied by hand (not read from the YAML), so the
# home TCP below is computed independently of the project's spec files and FK code.
SAWYER_REFERENCE = [
    ((0, 0, 0.08), (1, 0, 0, 0)),
    ((0.081, 0.05, 0.237), (1, -1, 1, 1)),
    ((0, -0.14, 0.1425), (1, 1, 0, 0)),
    ((0, -0.042, 0.26), (1, -1, 0, 0)),
    ((0, -0.125, -0.1265), (1, 1, 0, 0)),
    ((0, 0.031, 0.275), (1, -1, 0, 0)),
    ((0, -0.11, 0.1053), (0.0616248, 0.06163, -0.704416, 0.704416)),
]
SAWYER_HOME = (0, -1.18, 0, 2.18, 0, 0.57, 3.3161)
SAWYER_FLANGE = ((0, 0, 0.0245), (0, 0, 0, 1))
PANDA_REFERENCE = [
    ((0, 0, 0.333), (1, 0, 0, 0)),
    ((0, 0, 0), (1, -1, 0, 0)),
    ((0, -0.316, 0), (1, 1, 0, 0)),
    ((0.0825, 0, 0), (1, 1, 0, 0)),
    ((-0.0825, 0.384, 0), (1, -1, 0, 0)),
    ((0, 0, 0), (1, 1, 0, 0)),
    ((0.088, 0, 0), (1, 1, 0, 0)),
]
PANDA_HOME = (0, 0, 0, -1.5708, 0, 1.5708, -0.7853)


def _qmul(a, b):
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def _qrot(q, v):
    """Rotate v by unit quaternion q: q v q*."""
    conj = q * np.array([1, -1, -1, -1])
    return _qmul(_qmul(q, np.concatenate([[0.0], v])), conj)[1:]


def _reference_point(chain, home, tail):
    """Compose the chain with quaternions; `tail` is a list of (pos, quat) after the last joint."""
    p, q = np.zeros(3), np.array([1.0, 0, 0, 0])
    for (pos, quat), angle in zip(chain, home, strict=True):
        p = p + _qrot(q, np.array(pos, dtype=float))
        q = _qmul(q, np.array(quat, dtype=float) / np.linalg.norm(quat))
        q = _qmul(q, np.array([np.cos(angle / 2), 0, 0, np.sin(angle / 2)]))
    for pos, quat in tail:
        p = p + _qrot(q, np.array(pos, dtype=float))
        q = _qmul(q, np.array(quat, dtype=float) / np.linalg.norm(quat))
    return p


def test_sawyer_home_tcp_matches_the_reference_chain():
    spec = load_spec("sawyer")
    flange = _reference_point(SAWYER_REFERENCE, SAWYER_HOME, [SAWYER_FLANGE])
    # Our gripper's TCP is tcp_z along the flange's z axis (gripper frame = flange frame on the Sawyer).
    tcp = _reference_point(SAWYER_REFERENCE, SAWYER_HOME, [SAWYER_FLANGE, ((0, 0, spec.gripper.tcp_z), (1, 0, 0, 0))])
    np.testing.assert_allclose(spec.chain().fk(spec.home)[0], tcp, atol=1e-9)
    # Worked once by hand from the table: flange about 0.45 m forward, 0.16 m left, 0.22 m up, facing down.
    np.testing.assert_allclose(flange, [0.4497, 0.1603, 0.2158], atol=5e-4)
    np.testing.assert_allclose(tcp, [0.4497, 0.1603, 0.1108], atol=5e-4)


def test_panda_home_tcp_matches_the_reference_chain():
    spec = load_spec("panda")
    hand = [((0, 0, 0.107), (1, 0, 0, 0)), ((0, 0, 0), (0.9238795, 0, 0, -0.3826834)), ((0, 0, 0.1034), (1, 0, 0, 0))]
    tcp = _reference_point(PANDA_REFERENCE, PANDA_HOME, hand)
    np.testing.assert_allclose(spec.chain().fk(spec.home)[0], tcp, atol=1e-9)
    # By hand, joint 4 at -90° turning the forearm horizontal: x = 0.0825 + 0.384 + 0.088 = 0.5545,
    # y = 0, z = 0.333 + 0.316 + 0.0825 - 0.107 - 0.1034 = 0.5211, the hand pointing down.
    np.testing.assert_allclose(tcp, [0.5545, 0.0, 0.5211], atol=5e-4)


def _random_poses(spec, n, seed):
    rng = np.random.default_rng(seed)
    lo, hi = spec.joint_lower, spec.joint_upper
    return [spec.home] + [rng.uniform(lo, hi) for _ in range(n)]


@pytest.mark.parametrize("arm", ARMS)
def test_fk_matches_mujoco_tcp_site_within_1mm(arm):
    spec = load_spec(arm)
    chain = spec.chain()
    model = mujoco.MjModel.from_xml_string(build_mjcf(spec, cameras=()))
    data = mujoco.MjData(model)
    adr = [model.joint(n).qposadr[0] for n in spec.joint_names]
    for q in _random_poses(spec, 20, seed=1):
        data.qpos[adr] = q
        mujoco.mj_kinematics(model, data)
        pos, rot = chain.fk(q)
        assert np.linalg.norm(pos - data.site(TCP_SITE).xpos) < 1e-3
        assert np.linalg.norm(rotation_error(data.site(TCP_SITE).xmat.reshape(3, 3), rot)) < 1e-3


@pytest.mark.parametrize("arm", ARMS)
def test_jacobian_matches_finite_differences(arm):
    spec = load_spec(arm)
    chain = spec.chain()
    for q in _random_poses(spec, 5, seed=2):
        pos, rot, jac = chain.fk_and_jacobian(q)
        eps = 1e-6
        for i in range(spec.dof):
            dq = np.zeros(spec.dof)
            dq[i] = eps
            p2, r2 = chain.fk(q + dq)
            np.testing.assert_allclose((p2 - pos) / eps, jac[:3, i], atol=1e-5)
            np.testing.assert_allclose(rotation_error(r2, rot) / eps, jac[3:, i], atol=1e-5)


@pytest.mark.parametrize("arm", ARMS)
def test_ik_reaches_poses_near_home(arm):
    spec = load_spec(arm)
    chain = spec.chain()
    rng = np.random.default_rng(3)
    for _ in range(10):
        q_goal = np.clip(spec.home + rng.normal(0, 0.2, spec.dof), spec.joint_lower, spec.joint_upper)
        pos, rot = chain.fk(q_goal)
        q, converged = ik(chain, pos, rot, spec.home, iterations=100)
        assert converged
        p2, r2 = chain.fk(q)
        assert np.linalg.norm(p2 - pos) < 1e-4
        assert np.all(q >= spec.joint_lower) and np.all(q <= spec.joint_upper)


unit = st.floats(-1, 1, allow_nan=False)


@settings(max_examples=200)
@given(st.tuples(unit, unit, unit, unit).filter(lambda q: np.linalg.norm(q) > 1e-3))
def test_quaternion_matrix_round_trip(quat):
    q = np.array(quat) / np.linalg.norm(quat)
    q = -q if q[0] < 0 else q
    back = mat_to_quat(quat_to_mat(q))
    assert np.allclose(back, q, atol=1e-9) or (abs(q[0]) < 1e-9 and np.allclose(back, -q, atol=1e-9))
