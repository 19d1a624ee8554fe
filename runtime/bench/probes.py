"""What this machine can do at best, measured in the same run as the model: the bounds latency is judged by.

- `matmul_peak`: FLOP/s of a large fp32 matmul on all cores, the work a transformer is made of. A model's
  FLOP bound is its FLOPs per call ÷ this.
- `memory_bandwidth`: bytes/s of a large array copy (read + write), far larger than the caches. A model's
  weight-streaming bound is its weight bytes ÷ this: no call can be faster than reading every weight once
  from memory, unless the weights sit in cache (small models do, and then run under this bound).
- `gpu_peaks`: the same two on the GPU (an fp16 matmul on its tensor cores, a device-to-device copy), the
  bounds of the GPU backends, which would otherwise be judged against the CPU's.
- `jpeg_decode_baseline`: decoding one tick's camera frames from the wire, the irreducible part of the
  loop's own overhead.

Each probe is the best of a few repeats: the machine's capability, not its load.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from runtime.bench.stats import LatencyStats, latency_stats


@dataclass(frozen=True)
class MachinePeaks:
    matmul_flops: float  # FLOP/s: fp32 on all cores of the CPU, fp16 on a GPU
    memory_bytes_per_s: float  # copy bandwidth, bytes read + written per second
    threads: int  # CPU threads; 0 for a GPU
    device: str = "cpu"  # or the GPU's name

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


def gpu_peaks(n: int = 8192, mbytes: int = 1024, repeats: int = 10) -> MachinePeaks | None:
    """The GPU's fp16 n³ matmul FLOP/s and device-to-device copy bytes/s (read + write), best of `repeats`
    timed with CUDA events; None without a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return None
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    src = torch.empty(mbytes * 2**20, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)

    def best_s(work: Callable[[], object]) -> float:
        for _ in range(3):
            work()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = float("inf")
        for _ in range(repeats):
            start.record()
            work()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        return best

    flops = 2 * n**3 / best_s(lambda: a @ b)
    bandwidth = 2 * src.numel() / best_s(lambda: dst.copy_(src))
    return MachinePeaks(flops, bandwidth, 0, torch.cuda.get_device_name())


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
