"""Shared fixtures: free loopback ports and a `pac-sim` driver process in lockstep for each arm."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from robots.contract.client import DriverClient  # noqa: E402
from robots.sim.process import start_sim, stop_sim  # noqa: E402


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
