"""`pac-sim-task`: the sim driver that also publishes the `task` topic, the episode's outcome for one task.

Closed-loop evaluation runs a policy through the real runtime loop against this driver and reads success
from the `task` topic, computed after every period from privileged sim state (`scene_of`, as the
environments do) and never given to the policy. It lives here, not in robots/sim/, because the sim does not
import the tasks. It takes every `pac-sim` flag plus `--task`; a reset with a seed lays the objects out as
`PacTaskEnv.reset(seed=...)` does, so an episode replays step for step through the driver.
"""

from __future__ import annotations

import argparse
import sys

import zmq

from robots.contract import messages as msg
from robots.sim import cli
from robots.sim.driver import DriverConfig, SimDriver
from robots.tasks.env import scene_of
from robots.tasks.tasks import TASKS, shaped_reward, success


class TaskSimDriver(SimDriver):
    """A `SimDriver` that publishes a `TaskMsg` for `task` with every period (lockstep: before the state)."""

    def __init__(self, config: DriverConfig, task: str, context: zmq.Context | None = None) -> None:
        if task not in TASKS:  # before the sockets are bound
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        if config.board is not None:
            raise ValueError("--board clears the table for calibration: a task needs its objects (use pac-sim)")
        super().__init__(config, context)
        self.task = TASKS[task]
        self.task_seq = 0

    def task_msg(self) -> msg.TaskMsg:
        """The outcome now: success and the sparse and shaped rewards, as PacTaskEnv.step computes them."""
        scene = scene_of(self.sim, self.spec)
        done = success(self.task.name, scene)
        return msg.TaskMsg(
            seq=self.task_seq,
            source=self.source,
            t_capture_ns=self.now_ns(),
            task=self.task.name,
            success=done,
            reward=float(done),
            shaped_reward=shaped_reward(self.task.name, scene),
            step=self.counters.steps,
        )

    def publish_extra(self) -> None:
        super().publish_extra()
        self.task_seq += 1
        self.pub.send_multipart(self.task_msg().to_frames())

    def topics(self) -> list[str]:
        return [*super().topics(), msg.TASK]


def build_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(prog="pac-sim-task", description=__doc__)
    parser.add_argument("--task", choices=list(TASKS), required=True, help="the task whose outcome to publish")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args)
    try:
        driver = TaskSimDriver(cli.build_config(args), args.task)
    except (KeyError, ValueError) as err:
        print(f"pac-sim-task: {err}", file=sys.stderr)
        return 2
    return cli.run_driver(driver, args)


if __name__ == "__main__":
    sys.exit(main())
