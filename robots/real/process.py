"""Start a `pac-driver --dry-run` as a child process on fresh private ipc sockets, as robots/sim/process.py does
for `pac-sim`: tests and demos reach it only through the ZeroMQ contract, as they would a real arm's driver."""

from __future__ import annotations

import subprocess
import sys

from robots.contract.security import private_endpoint


def start_dry_run(robot: str, *args: str) -> tuple[subprocess.Popen, str, str]:
    """`pac-driver --robot ROBOT --dry-run ARGS...`; returns (process, pub endpoint, cmd endpoint)."""
    pub, cmd = private_endpoint("dry-pub"), private_endpoint("dry-cmd")
    argv = [sys.executable, "-m", "robots.real.cli", "--robot", robot, "--dry-run", "--pub", pub, "--cmd", cmd, *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, pub, cmd
