"""Training metrics to a CSV file (one row per logged step, columns grown as new metrics appear) and to
TensorBoard (RUN/tb), written by rank 0 only. The CSV is what the plots and RESULTS.md read."""

from __future__ import annotations

import csv
from pathlib import Path


class MetricsLog:
    def __init__(self, run: Path, tensorboard: bool = True):
        self.path = Path(run) / "metrics.csv"
        self.rows: list[dict[str, float]] = []
        if self.path.is_file():  # a resumed run appends to its own history
            with open(self.path, newline="") as f:
                self.rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(run) / "tb"))
            except ImportError:  # TensorBoard is a dependency; a trimmed install still gets the CSV
                self.writer = None

    def log(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        row = {"step": float(step), **{f"{prefix}{k}": float(v) for k, v in values.items()}}
        if self.rows and self.rows[-1]["step"] == step:
            self.rows[-1].update(row)
        else:
            self.rows = [r for r in self.rows if r["step"] < step]  # a resume rewrites steps after its checkpoint
            self.rows.append(row)
        if self.writer is not None:
            for k, v in row.items():
                if k != "step":
                    self.writer.add_scalar(k, v, step)

    def flush(self) -> None:
        columns = ["step"] + sorted({k for r in self.rows for k in r} - {"step"})
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: (int(v) if k == "step" else f"{v:.6g}") for k, v in r.items()})
        tmp.replace(self.path)
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()
