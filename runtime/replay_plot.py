"""`pac-replay DIR --plot run.png`: one picture of a recorded run, drawn from its per-tick records.

TCP path seen from above and its height over time, the actions sent, and the stage timings, with every
hold shaded by its cause, so "why did it stop there, and what was slow" is answered at a glance.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from runtime.replay import Recording  # noqa: E402

STAGES_SHOWN = ("tick", "infer", "tokenize", "guard", "receive", "frame_wait", "send_wait")


def _holds(ticks: list[dict]) -> list[tuple[int, int, str]]:
    """(first, last, cause) for each run of consecutive held ticks with the same first cause."""
    spans: list[tuple[int, int, str]] = []
    for i, t in enumerate(ticks):
        if t["mode"] != "hold":
            continue
        cause = t["causes"][0] if t["causes"] else t["safety"].lower()
        if spans and spans[-1][1] == i - 1 and spans[-1][2] == cause:
            spans[-1] = (spans[-1][0], i, cause)
        else:
            spans.append((i, i, cause))
    return spans


def plot(rec: Recording, out: Path) -> Path:
    """Draw `rec` into the PNG `out`; returns its path."""
    ticks = rec.ticks
    if not ticks:
        raise ValueError(f"{rec.path} has no ticks to draw")
    t = (np.array([r["t_ns"] for r in ticks], dtype=np.int64) - ticks[0]["t_ns"]) / 1e9
    tcp = np.array([r["tcp_pose"][:3] if r["tcp_pose"] else [np.nan] * 3 for r in ticks], dtype=float)
    width = max((len(r["action"]) for r in ticks if r["action"]), default=0)
    actions = np.full((len(ticks), width), np.nan)
    for i, r in enumerate(ticks):
        if r["action"]:
            actions[i, : len(r["action"])] = r["action"]

    fig = plt.figure(figsize=(13, 10), constrained_layout=True)
    grid = fig.add_gridspec(3, 2)
    path_ax, z_ax = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    act_ax, stage_ax = fig.add_subplot(grid[1, :]), fig.add_subplot(grid[2, :])
    s = rec.session
    fig.suptitle(
        f"{s.get('robot', '?')}, {Path(str(s.get('policy', '?'))).name} on {s.get('provider', '?')}, "
        f"{s.get('link', '?')}: {len(ticks)} ticks ({rec.result.get('stop_reason', 'unfinished')})"
    )

    path_ax.plot(tcp[:, 0], tcp[:, 1], lw=1)
    path_ax.plot(tcp[:1, 0], tcp[:1, 1], "go", label="start")
    path_ax.plot(tcp[-1:, 0], tcp[-1:, 1], "rs", label="end")
    path_ax.set(xlabel="x (m)", ylabel="y (m)", title="TCP path, base frame, from above", aspect="equal")
    path_ax.legend(loc="best", fontsize=8)
    z_ax.plot(t, tcp[:, 2])
    z_ax.set(xlabel="run time (s)", ylabel="z (m)", title="TCP height")
    for j in range(width):
        act_ax.plot(t, actions[:, j], lw=1, label=f"a[{j}]")
    act_ax.set(xlabel="run time (s)", ylabel="action (physical units)", title="actions sent (gaps: holds)")
    if width:
        act_ax.legend(loc="upper right", fontsize=7, ncol=min(width, 8))
    for stage in STAGES_SHOWN:
        values = np.array([(r.get("stages_ms") or {}).get(stage) for r in ticks], dtype=float)
        if np.isfinite(values).any():
            stage_ax.plot(t, values, lw=1, label=stage)
    stage_ax.set(xlabel="run time (s)", ylabel="ms", title="stage timings per tick", yscale="log")
    stage_ax.legend(loc="upper right", fontsize=7, ncol=4)

    colours: dict[str, tuple] = {}
    palette = plt.get_cmap("tab10")
    period = float(np.median(np.diff(t))) if len(t) > 1 else 0.05
    for first, last, cause in _holds(ticks):
        colour = colours.setdefault(cause, palette(len(colours) % 10))
        for ax in (z_ax, act_ax, stage_ax):
            ax.axvspan(t[first] - period / 2, t[last] + period / 2, color=colour, alpha=0.2, lw=0)
    if colours:
        handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.3) for c in colours.values()]
        z_ax.legend(handles, [f"hold: {c}" for c in colours], loc="best", fontsize=7)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
