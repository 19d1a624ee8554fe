"""Offline training of PAC and its baselines (pac-train) and what it writes (checkpoints, metrics)."""
