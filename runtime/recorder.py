"""`--record DIR`: one JSON line per tick (state, safety state and causes, the action sent), for replay.

Small and append-only so a crash loses at most the last line; images are not recorded (the driver's
cameras can be recorded by the collection tools instead).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from robots.contract.messages import StateMsg


class Recorder:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "ticks.jsonl"
        self._file = self.path.open("w", buffering=1)

    def tick(
        self, n: int, safety: str, causes: list[str], state: StateMsg | None, action: np.ndarray | None, cmd_seq: int
    ) -> None:
        record = {
            "tick": n,
            "safety": safety,
            "causes": causes,
            "cmd_seq": cmd_seq,
            "obs_seq": state.seq if state is not None else None,
            "step": state.step if state is not None else None,
            "t_capture_ns": state.t_capture_ns if state is not None else None,
            "q": state.q.tolist() if state is not None else None,
            "tcp_pose": state.tcp_pose.tolist() if state is not None else None,
            "action": action.tolist() if action is not None else None,
        }
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()
