"""Start and stop a `pac-sim` driver as a child process on fresh private ipc sockets (security.private_endpoint).

Tests, benchmarks and the demo all run the driver as its own process, as a real arm's driver would be,
and reach it only through the ZeroMQ contract.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import zmq

from robots.contract.messages import STATUS
from robots.contract.security import private_endpoint

SIM_START_S = 30.0  # a sim just started: imports, model and renderers before its first heartbeat (a loaded 2-core host)
SIM_NICE = 10  # an embedded sim's niceness (pac-run --sim, pac-bench --e2e): it yields the cores to the control loop


def free_loopback_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def start_sim(robot: str, *args: str, capture: bool = True, nice: int = 0) -> tuple[subprocess.Popen, str, str]:
    """`pac-sim --robot ROBOT ARGS...` on fresh ipc sockets only this user can reach; returns (process, pub
    endpoint, cmd endpoint).

    `nice` > 0 lowers the driver's CPU priority: an embedded sim sharing a small machine with the control
    loop should yield to it, as a real arm's driver would not compete for the loop's cores at all. The sim
    always runs on the time-sharing scheduler, even when started by a loop at real-time priority.
    """
    pub, cmd = private_endpoint("sim-pub"), private_endpoint("sim-cmd")
    argv = [sys.executable, "-m", "robots.sim.cli", "--robot", robot, "--pub", pub, "--cmd", cmd, *args]
    out = subprocess.PIPE if capture else subprocess.DEVNULL

    def lower_priority() -> None:  # in the child, before exec
        if hasattr(os, "sched_setscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        if nice:
            os.nice(nice)

    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True, preexec_fn=lower_priority)
    return proc, pub, cmd


def wait_heartbeat(pub: str, timeout_s: float = SIM_START_S) -> None:
    """Until a driver's status comes on `pub` (it has bound its sockets), without opening a session on it;
    TimeoutError naming the endpoint otherwise."""
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, STATUS.encode())
    sock.connect(pub)
    try:
        if not sock.poll(round(timeout_s * 1000)):
            raise TimeoutError(f"no driver heartbeat on {pub} within {timeout_s:g} s")
    finally:
        sock.close(0)


def stop_sim(proc: subprocess.Popen) -> str:
    """SIGTERM, wait, and return what it printed ('' when not captured)."""
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""
