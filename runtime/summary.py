"""The end-of-run summary: printed as a table and written as JSON, from `finally`, so Ctrl-C still reports."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.loop import STAGES, ControlLoop


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


@dataclass
class RunSummary:
    robot: str
    policy: str
    provider: str
    mode: str  # "lockstep" or "realtime"
    final_state: str
    stop_reason: str
    exit_code: int
    ticks: int
    overruns: int
    overrun_late_ms: list[float]
    commands_sent: int
    holds_sent: int
    inferences: int
    holds_by_cause: dict[str, int]
    transitions: list[dict[str, Any]]
    fault_cause: str
    stages_ms: dict[str, dict[str, float]]  # stage → p50, p99, n
    obs_age_ms: dict[str, float]
    filter_clipped: dict[str, int]
    filter_rejected: dict[str, int]
    messages_dropped: dict[str, int]
    rss_mb: dict[str, float] = field(default_factory=dict)  # after warm-up and at the end
    driver_rejected: dict[str, int] = field(default_factory=dict)
    final_hold_confirmed: bool = False

    @classmethod
    def of(cls, loop: ControlLoop, robot: str, exit_code: int, hold_confirmed: bool) -> RunSummary:
        stages = {}
        for s in STAGES:
            p50, p99, n = loop.timer.percentiles(s)
            stages[s] = {"p50": p50, "p99": p99, "n": n}
        a50, a99, an = loop.obs_age_ms.percentiles("obs_age")
        status = loop.client.latest.status
        return cls(
            robot=robot,
            policy=str(loop.policy.path),
            provider=loop.policy.provider,
            mode="lockstep" if loop.lockstep else "realtime",
            final_state=loop.safety.state.value,
            stop_reason=loop.counters.stop_reason,
            exit_code=exit_code,
            ticks=loop.counters.ticks,
            overruns=loop.pacer.overruns,
            overrun_late_ms=list(loop.pacer.late_ms),
            commands_sent=loop.counters.commands_sent,
            holds_sent=loop.counters.holds_sent,
            inferences=loop.counters.inferences,
            holds_by_cause=dict(loop.safety.holds_by_cause),
            transitions=[
                {"tick": t.tick, "from": t.source.value, "to": t.target.value, "cause": t.cause}
                for t in loop.safety.transitions
            ],
            fault_cause=loop.safety.fault_cause,
            stages_ms=stages,
            obs_age_ms={"p50": a50, "p99": a99, "n": an},
            filter_clipped=dict(loop.counters.clipped),
            filter_rejected=dict(loop.counters.rejected),
            messages_dropped=dict(loop.client.receiver.drops.by_reason),
            driver_rejected=dict(status.commands_rejected) if status is not None else {},
            final_hold_confirmed=hold_confirmed,
            rss_mb=dict(loop.rss_mb),
        )

    def table(self) -> str:
        def f(x: float) -> str:
            return "-" if not np.isfinite(x) else f"{x:.2f}"

        lines = [
            f"pac-run summary: {self.robot}, {Path(self.policy).name} on {self.provider}, {self.mode}",
            f"  final state {self.final_state} ({self.stop_reason}); exit code {self.exit_code}"
            + (f"; fault: {self.fault_cause}" if self.fault_cause else ""),
            f"  ticks {self.ticks}   overruns {self.overruns}   commands {self.commands_sent}   holds {self.holds_sent}"
            f"   final hold confirmed: {'yes' if self.final_hold_confirmed else 'NO'}",
            "  holds by cause: " + (", ".join(f"{k} {v}" for k, v in sorted(self.holds_by_cause.items())) or "none"),
            "  filter clipped: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.filter_clipped.items())) or "none")
            + "; rejected: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.filter_rejected.items())) or "none"),
            "  dropped messages: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.messages_dropped.items())) or "none")
            + "; driver rejected: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.driver_rejected.items())) or "none"),
            "",
            f"  {'stage':<12}{'p50 ms':>10}{'p99 ms':>10}{'n':>8}",
        ]
        for stage, v in self.stages_ms.items():
            if v["n"]:
                lines.append(f"  {stage:<12}{f(v['p50']):>10}{f(v['p99']):>10}{v['n']:>8}")
        a = self.obs_age_ms
        lines.append(f"  {'obs age':<12}{f(a['p50']):>10}{f(a['p99']):>10}{a['n']:>8}")
        r = self.rss_mb
        lines.append(
            f"  RSS {f(r.get('start', float('nan')))} MB after warm-up → {f(r.get('end', float('nan')))} MB at the end"
        )
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1, default=float))
