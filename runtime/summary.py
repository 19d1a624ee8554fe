"""The end-of-run summary: printed as a table and written as JSON, from `finally`, so Ctrl-C still reports."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.control import ControlRecord
from runtime.stats import LoopStats

SHOWN_ACTIONS = 10  # operator actions printed in the table (all of them are in the JSON)


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def _ms(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.2f}"


@dataclass(frozen=True)
class RunSummary(LoopStats):
    robot: str = ""
    policy: str = ""
    provider: str = ""
    exit_code: int = 0
    control: str = ""  # the operator endpoint served
    operator_actions: list[dict[str, Any]] = field(default_factory=list)  # each verb: tick, time, who, why, outcome
    control_rejected: dict[str, int] = field(default_factory=dict)  # malformed control requests by reason
    calibration: dict[str, str] = field(default_factory=dict)  # calibration file -> its sha256
    rt_priority: int = 0  # the loop's SCHED_FIFO priority; 0: the time-sharing scheduler

    @classmethod
    def of(
        cls,
        stats: LoopStats,
        robot: str,
        policy: Path,
        provider: str,
        exit_code: int,
        control: ControlRecord | None = None,
        calibration: dict[str, str] | None = None,
        rt_priority: int = 0,
    ) -> RunSummary:
        operator = {}
        if control is not None:
            operator = dict(
                control=control.endpoint,
                operator_actions=[asdict(a) for a in control.actions],
                control_rejected=dict(control.rejected),
            )
        return cls(
            **asdict(stats),
            robot=robot,
            policy=str(policy),
            provider=provider,
            exit_code=exit_code,
            calibration=dict(calibration or {}),
            rt_priority=rt_priority,
            **operator,
        )

    def table(self) -> str:
        lines = [
            f"pac-run summary: {self.robot}, {Path(self.policy).name} on {self.provider}, {self.link}"
            + (f", SCHED_FIFO {self.rt_priority}" if self.rt_priority else ""),
            f"  final state {self.final_state} ({self.stop_reason}); exit code {self.exit_code}"
            + (f"; fault: {self.fault_cause}" if self.fault_cause else ""),
            f"  ticks {self.ticks}   overruns {self.overruns}   commands {self.commands_sent}   holds {self.holds_sent}"
            f"   final hold confirmed: {'yes' if self.final_hold_confirmed else 'NO'}",
            f"  holds by cause: {_counts(self.holds_by_cause)}",
            f"  filter clipped: {_counts(self.filter_clipped)}; rejected: {_counts(self.filter_rejected)}",
            f"  dropped messages: {_counts(self.messages_dropped)}; driver rejected: {_counts(self.driver_rejected)}",
            f"  calibration: {', '.join(f'{Path(p).name} {h[:12]}' for p, h in self.calibration.items()) or 'none'}",
            *self._operator_lines(),
            "",
            f"  {'stage':<12}{'p50 ms':>10}{'p99 ms':>10}{'n':>8}",
        ]
        for stage, v in self.stages_ms.items():
            if v["n"]:
                lines.append(f"  {stage:<12}{_ms(v['p50']):>10}{_ms(v['p99']):>10}{v['n']:>8}")
        a, r = self.obs_age_ms, self.rss_mb
        lines.append(f"  {'obs age':<12}{_ms(a['p50']):>10}{_ms(a['p99']):>10}{a['n']:>8}")
        nan = float("nan")
        lines.append(f"  RSS {_ms(r.get('start', nan))} MB after warm-up → {_ms(r.get('end', nan))} MB at the end")
        if f := self.frame_lag_ms:
            lines.append(
                f"  frames in {_ms(f.get('p50', nan))} ms after capture (p95 {_ms(f.get('p95', nan))}, last "
                f"{f['n']}); ticks start {_ms(f['tick_offset'])} ms after capture"
            )
        return "\n".join(lines)

    def _operator_lines(self) -> list[str]:
        if not self.control:
            return []
        lines = [
            f"  operator actions: {len(self.operator_actions)}; malformed requests: {_counts(self.control_rejected)}"
        ]
        for a in self.operator_actions[:SHOWN_ACTIONS]:
            outcome = "done" if a["accepted"] else "REFUSED"
            lines.append(f"    tick {a['tick']} {a['time']} {a['verb']} by {a['operator']} ({a['reason']}): {outcome}")
        if len(self.operator_actions) > SHOWN_ACTIONS:
            lines.append(f"    ... {len(self.operator_actions) - SHOWN_ACTIONS} more in the JSON")
        return lines

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1, default=float))
