"""robots/sim/process.py: a started sim is waited for by its heartbeat before anyone talks to it."""

from __future__ import annotations

import pytest

from robots.contract.client import DriverClient
from robots.contract.security import private_endpoint
from robots.sim.process import start_sim, stop_sim, wait_heartbeat


def test_wait_heartbeat_returns_once_a_fresh_sim_publishes_and_the_driver_then_answers_at_once():
    sim, pub, cmd = start_sim("sawyer", "--cameras", "none", capture=True)
    try:
        wait_heartbeat(pub)
        client = DriverClient(pub, cmd, source="test")
        try:
            assert client.wait_ready(timeout_s=5.0).seq >= 0  # the 5 s pac-run gives a running driver suffice now
        finally:
            client.close()
    finally:
        stop_sim(sim)


def test_wait_heartbeat_on_a_silent_endpoint_times_out_naming_it():
    with pytest.raises(TimeoutError, match="nobody"):
        wait_heartbeat(private_endpoint("nobody"), timeout_s=0.3)
