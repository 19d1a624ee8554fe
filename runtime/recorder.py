"""`--record DIR`: one JSON line per tick (state, safety state and causes, the action sent), for replay.

Small and append-only so a crash loses at most the last line; images are not recorded (the driver's
cameras can be recorded by the collection tools instead).
"""

from __future__ import annotations

import json
from pathlib import Path

from robots.contract.link import Mode
from robots.contract.messages import StateMsg
from runtime.guard import Decision
from runtime.safety.causes import names


class Recorder:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "ticks.jsonl"
        self._file = self.path.open("w", buffering=1)

    def tick(self, n: int, decision: Decision, state: StateMsg | None, cmd_seq: int) -> None:
        moving = decision.mode is not Mode.HOLD
        record = {
            "tick": n,
            "safety": decision.state.value,
            "causes": names(decision.causes),
            "mode": decision.mode.value,
            "cmd_seq": cmd_seq,
            "obs_seq": state.seq if state is not None else None,
            "step": state.step if state is not None else None,
            "t_capture_ns": state.t_capture_ns if state is not None else None,
            "q": state.q.tolist() if state is not None else None,
            "tcp_pose": state.tcp_pose.tolist() if state is not None else None,
            "action": decision.action.tolist() if moving else None,
        }
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()
