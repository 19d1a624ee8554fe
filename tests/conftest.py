"""Shared fixtures: `pac-sim` drivers as child processes, the wire proxy, exported policies, a virtual clock.

Every fixture that starts something stops it at teardown, whatever the test did; tests ask for what they
need instead of copying set-up code between files.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from robots.contract.client import DriverClient  # noqa: E402
from robots.contract.link import Mode  # noqa: E402
from robots.sim.process import start_sim, stop_sim  # noqa: E402
from runtime.clock import VirtualClock  # noqa: E402
from tests.wire_proxy import WireProxy  # noqa: E402

CAMERAS = "front_left,front_right"


@dataclass
class SimProcess:
    robot: str
    proc: subprocess.Popen
    pub: str
    cmd: str


@pytest.fixture
def start_driver() -> Iterator[Callable[..., SimProcess]]:
    """`start_driver(robot, *pac_sim_args)`: a `pac-sim` child on fresh loopback ports.

    At teardown a driver still running is stopped with SIGTERM and must exit cleanly (0).
    """
    started: list[SimProcess] = []

    def start(robot: str = "sawyer", *args: str) -> SimProcess:
        proc, pub, cmd = start_sim(robot, *args)
        started.append(SimProcess(robot, proc, pub, cmd))
        return started[-1]

    yield start
    for sim in started:
        if sim.proc.poll() is None:
            out = stop_sim(sim.proc)
            assert sim.proc.returncode == 0, f"pac-sim did not stop cleanly: {out}"


@pytest.fixture
def lockstep_sim(request, start_driver) -> SimProcess:
    """A lockstep `pac-sim` with both cameras; the arm is the test's parameter (indirect), Sawyer by default."""
    return start_driver(getattr(request, "param", "sawyer"), "--lockstep", "--cameras", CAMERAS)


@pytest.fixture(scope="module", params=["sawyer", "panda"])
def lockstep_driver(request) -> Iterator[tuple[str, DriverClient]]:
    """A state-only lockstep `pac-sim` process and a connected client, shared by a module's tests per arm."""
    proc, pub, cmd = start_sim(request.param, "--lockstep", "--cameras", "none")
    client = DriverClient(pub, cmd)
    try:
        client.wait_ready(timeout_s=30)
        yield request.param, client
    finally:
        client.close()
        out = stop_sim(proc)
        assert proc.returncode == 0, out


@pytest.fixture
def wire_proxy() -> Iterator[Callable[..., WireProxy]]:
    """`wire_proxy(pub, cmd, drop=None)`: a man in the middle recording every command, closed at teardown."""
    proxies: list[WireProxy] = []

    def make(pub: str, cmd: str, drop=None) -> WireProxy:
        proxies.append(WireProxy(pub, cmd, drop))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture(scope="session")
def exported_policy(tmp_path_factory) -> Callable[..., Path]:
    """`exported_policy(robot, mode=..., size="XS", seed=4)`: an exported actor (fp32), made once per session."""
    from policies.export.onnx_export import export_policy
    from policies.model.config import size_config
    from policies.model.perceiver import build_model
    from policies.spec import action_spec, observation_spec
    from policies.tokenizer.language import InstructionTokenizer
    from robots.spec import load_spec

    out = tmp_path_factory.mktemp("policies")
    cache: dict[tuple, Path] = {}

    def get(robot: str = "sawyer", mode: Mode = Mode.CARTESIAN_VELOCITY, size: str = "XS", seed: int = 4) -> Path:
        key = (robot, Mode(mode), size, seed)
        if key not in cache:
            arm = load_spec(robot)
            model = build_model(size_config(size), observation_spec(arm), action_spec(arm, mode), seed=seed)
            path = out / f"{robot}_{Mode(mode).value}_{size}_{seed}.onnx"
            cache[key] = export_policy(model, path, InstructionTokenizer.default())[0].path
        return cache[key]

    return get


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """Time that moves only when slept or advanced: timing assertions are exact on any machine."""
    return VirtualClock()
