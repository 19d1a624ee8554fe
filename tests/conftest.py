"""Shared fixtures: free loopback ports and a `pac-sim` driver process in lockstep for each arm."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from robots.contract.client import DriverClient  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sim(robot: str, *extra: str) -> tuple[subprocess.Popen, str, str]:
    pub, cmd = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "robots.sim.cli", "--robot", robot, "--pub", pub, "--cmd", cmd, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, pub, cmd


def stop_sim(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


@pytest.fixture(scope="module", params=["sawyer", "panda"])
def lockstep_driver(request) -> Iterator[tuple[str, DriverClient]]:
    """A state-only lockstep `pac-sim` process and a connected client; the arm is reset for each test."""
    proc, pub, cmd = start_sim(request.param, "--lockstep", "--cameras", "none")
    client = DriverClient(pub, cmd)
    try:
        client.wait_ready(timeout_s=30)
        yield request.param, client
    finally:
        client.close()
        out = stop_sim(proc)
        assert proc.returncode == 0, out
