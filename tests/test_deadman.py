"""The driver's dead-man is the last word: a runtime killed mid-motion leaves an arm that stops by itself
within command_timeout + one period, measured on the driver's own clock from the states it publishes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np

from robots.contract.client import DriverClient
from robots.contract.link import DEFAULT_LINK

COMMANDER = """
import sys, time
import numpy as np
from robots.contract.client import DriverClient
from robots.contract.link import Mode
client = DriverClient(sys.argv[1], sys.argv[2], source="doomed-runtime")
client.wait_ready(30)
client.claim(10)
action = np.array([0.0, 0.05, 0.0, 0.0, 0.0])  # vy 5 cm/s, gripper open
while True:
    client.poll(0)
    client.send_command(Mode.CARTESIAN_VELOCITY, action, time.monotonic_ns() + 50_000_000)
    print("sent", flush=True)
    time.sleep(0.05)
"""


def test_killing_the_runtime_mid_motion_stops_the_arm_within_the_command_timeout(start_driver):
    sim = start_driver("sawyer", "--cameras", "none")  # real time: the dead-man runs on the driver's clock
    watcher = DriverClient(sim.pub, sim.cmd, source="watcher")
    runtime = subprocess.Popen(
        [sys.executable, "-c", COMMANDER, sim.pub, sim.cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        watcher.wait_ready(30)
        for _ in range(20):  # a second of commands: the arm is moving
            assert runtime.stdout.readline().startswith("sent")
        end = time.monotonic() + 5
        while time.monotonic() < end and np.abs(watcher.poll(20).state.dq).max() < 0.01:
            pass
        assert np.abs(watcher.latest.state.dq).max() >= 0.01, "the arm never moved"
        runtime.send_signal(signal.SIGKILL)
        killed_ns = time.monotonic_ns()
        runtime.wait(10)
        states = []
        end = time.monotonic() + 2
        while time.monotonic() < end:
            state = watcher.poll(5).state
            if not states or state.seq != states[-1].seq:
                states.append(state)
        status = watcher.poll(200).status
    finally:
        runtime.kill()
        watcher.close()
    bound_ns = killed_ns + round((DEFAULT_LINK.command_timeout_ms / 1e3 + DEFAULT_LINK.period_s) * 1e9)
    after = [s for s in states if s.t_capture_ns >= bound_ns]
    assert len(after) > 10, "the driver published no states after the bound"
    speeds = [np.abs(s.dq).max() for s in after]
    assert max(speeds) < 0.01, f"still moving {max(speeds):.3f} rad/s at {(after[0].t_capture_ns - killed_ns) / 1e6} ms"
    assert status.holding and status.hold_cause == "command_timeout"
