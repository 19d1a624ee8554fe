"""The pre-flight and a driver's faults: a fault that clears by itself (a sustained overrun while the driver starts
or the host is busy for a moment) is waited out, one that latches (an e-stop) is refused at once, and one that
does not clear in time is refused naming it. Statuses come over a real ZeroMQ socket from a scripted heartbeat.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import zmq

from robots.contract.client import DriverClient
from robots.contract.link import DriverFault
from robots.contract.messages import StatusMsg
from robots.contract.security import private_endpoint
from runtime.config import RunConfig, load_config, with_endpoints
from runtime.preflight import PreflightFailed, check_driver

HEARTBEAT_S = 0.05


class ScriptedHeartbeat:
    """A PUB socket that sends a realtime sawyer status every HEARTBEAT_S, with faults `script(elapsed_s)`."""

    def __init__(self, script) -> None:
        self.pub, self.cmd = private_endpoint("hb-pub"), private_endpoint("hb-cmd")
        self.script = script
        self._stop = threading.Event()
        self._sock = zmq.Context.instance().socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(self.pub)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start, seq = time.monotonic(), 0
        while not self._stop.is_set():
            seq += 1
            faults = list(self.script(time.monotonic() - start))
            status = StatusMsg(seq, "sim", time.monotonic_ns(), "sawyer", "realtime", False, "", -1, -1, "", 0)
            self._sock.send_multipart(replace(status, faults=faults).to_frames())
            time.sleep(HEARTBEAT_S)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def heartbeat() -> Iterator:
    made: list[tuple[ScriptedHeartbeat, DriverClient]] = []

    def start(script) -> DriverClient:
        beat = ScriptedHeartbeat(script)
        client = DriverClient(beat.pub, beat.cmd, source="test")
        made.append((beat, client))
        return client

    yield start
    for beat, client in made:
        client.close()
        beat.close()


def _config(client: DriverClient) -> RunConfig:
    return with_endpoints(load_config(robot="sawyer"), client.pub_endpoint, client.cmd_endpoint)


def test_an_overrun_that_clears_is_waited_out(heartbeat):
    started = time.monotonic()  # before the heartbeat starts: no clean status can come before started + 0.6 s
    client = heartbeat(lambda t: [DriverFault.REALTIME_OVERRUN.value] if t < 0.6 else [])
    check, lockstep = check_driver(client, _config(client), timeout_s=10.0)
    assert not lockstep and "sawyer realtime" in check.detail
    assert client.latest.status.faults == []
    assert time.monotonic() - started >= 0.5  # it did wait for the fault to clear, not pass the first status


def test_an_overrun_that_stays_is_refused_naming_it_and_the_wait(heartbeat):
    client = heartbeat(lambda t: [DriverFault.REALTIME_OVERRUN.value])
    with pytest.raises(PreflightFailed, match=r"realtime_overrun.*still after 0.5 s"):
        check_driver(client, _config(client), timeout_s=0.5)


@pytest.mark.parametrize("latched", [DriverFault.ESTOP, DriverFault.REFLEX, DriverFault.ARM_ERROR])
def test_a_latching_fault_is_refused_at_once_even_beside_an_overrun(heartbeat, latched):
    client = heartbeat(lambda t: [DriverFault.REALTIME_OVERRUN.value, latched.value])
    started = time.monotonic()
    with pytest.raises(PreflightFailed, match=latched.value) as refused:
        check_driver(client, _config(client), timeout_s=30.0)
    assert "still after" not in str(refused.value)
    assert time.monotonic() - started < 25.0  # not the whole wait: waiting cannot clear it


def test_the_dead_mans_hold_is_no_fault_for_the_pre_flight(heartbeat):
    client = heartbeat(lambda t: [DriverFault.COMMAND_TIMEOUT.value])
    check, _ = check_driver(client, _config(client), timeout_s=30.0)
    assert "sawyer" in check.detail
