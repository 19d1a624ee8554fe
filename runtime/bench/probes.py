"""What this machine can do at best, measured in the same run as the model: the bounds latency is judged by.

- `matmul_peak`: FLOP/s of a large fp32 matmul on all cores, the work a transformer is made of. A model's
  FLOP bound is its FLOPs per call ÷ this.
- `memory_bandwidth`: bytes/s of a large array copy (read + write), far larger than the caches. A model's
  weight-streaming bound is its weight bytes ÷ this: no call can be faster than reading every weight once
  from memory, unless the weights sit in cache (small models do, and then run under this bound).
- `jpeg_decode_baseline`: decoding one tick's camera frames from the wire, the irreducible part of the
  loop's own overhead.

Each probe is the best of a few repeats: the machine's capability, not its load.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from runtime.bench.stats import LatencyStats, latency_stats


@dataclass(frozen=True)
class MachinePeaks:
    matmul_flops: float  # FLOP/s, fp32, all cores
    memory_bytes_per_s: float  # copy bandwidth, bytes read + written per second
    threads: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def matmul_peak(n: int = 2048, repeats: int = 7, threads: int | None = None) -> float:
    """FLOP/s of an n³ fp32 matmul (torch, `threads` intra-op threads; default all cores), best of `repeats`."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(previous)
    return 2 * n**3 / best


def memory_bandwidth(mbytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s (read + written) of copying an `mbytes` MB array, best of `repeats`."""
    src = np.ones(mbytes * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # both resident before timing
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best


def machine_peaks() -> MachinePeaks:
    return MachinePeaks(matmul_peak(), memory_bandwidth(), os.cpu_count() or 1)


def jpeg_decode_baseline(n: int = 2000, cameras: int = 2, side: int = 128, quality: int = 90) -> LatencyStats:
    """Decoding one tick's camera frames from the wire (`cameras` × side² JPEG at `quality`: the wire
    codec's JPEG decode, the bytes to pixels no loop can skip), per tick."""
    import cv2

    from robots.contract.messages import ImageMsg
    from robots.contract.wire import decode

    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), (5, 5), 0)
    frames = ImageMsg("front_left", 1, "bench", 0, image).to_frames(quality=quality)
    times = np.empty(n)
    for i in range(n):
        t = time.perf_counter_ns()
        for _ in range(cameras):
            decode(frames)
        times[i] = (time.perf_counter_ns() - t) / 1e6
    return latency_stats(times)
