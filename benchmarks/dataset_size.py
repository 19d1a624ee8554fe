"""Bytes per step of a collected vision dataset, frames raw against JPEG (and gzip/lzf for comparison), and
how fast the training reader turns it into batches (issue 11's figures).

Collects Sawyer stacking episodes (mixed quality, both 128² cameras) once, writes them with `--frames raw`
and `--frames jpeg`, and measures the HDF5 files; gzip and lzf are measured on the raw image stacks alone.

    python -m benchmarks.dataset_size [--episodes 20] [--workers 2] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py

from policies.data.collect import collect, dataset_id, write_dataset
from policies.data.frames import JPEG_QUALITY
from policies.data.transitions import TransitionConfig, TransitionDataset, transition_loader

RESULTS = Path(__file__).parent / "results" / "dataset_size.json"


def _filtered_bytes(episodes, compression: str, opts: int | None) -> int:
    """Bytes of the raw (T+1, N_cam, 3, H, W) stacks under an HDF5 filter, one step a chunk."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.hdf5"
        with h5py.File(path, "w") as f:
            for i, e in enumerate(episodes):
                images = e.observations["images"]
                f.create_dataset(
                    f"e{i}", data=images, chunks=(1, *images.shape[1:]), compression=compression, compression_opts=opts
                )
        return path.stat().st_size


def _loader_rate(root: Path, did: str, batch: int, workers: int, batches: int) -> float:
    data = TransitionDataset(root, did, TransitionConfig(batch_size=batch))
    loader = iter(transition_loader(data, num_workers=workers))
    next(loader)  # workers started, first batch out
    started = time.perf_counter()
    drawn = 0
    for _ in range(min(batches, data.num_batches - 1)):
        next(loader)
        drawn += 1
    return drawn * batch / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    episodes = collect("sawyer", "stack", "mixed", args.episodes, args.workers, seed=0)
    steps = sum(e.actions.shape[0] for e in episodes)
    did = dataset_id("sawyer", "stack", "mixed")
    image_bytes = sum(e.observations["images"].nbytes for e in episodes)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for frames in ("raw", "jpeg"):
            root = Path(tmp) / frames
            write_dataset(episodes, root, "sawyer", "stack", "mixed", frames=frames)
            path = root / did / "data" / "main_data.hdf5"
            with h5py.File(path, "r") as f:
                stored = sum(
                    sum(len(x) for c in f[f"episode_{i}/observations/images"].values() for x in c[()])
                    if frames == "jpeg"
                    else f[f"episode_{i}/observations/images"].nbytes
                    for i in range(len(episodes))
                )
            rows[frames] = {"file_bytes_per_step": path.stat().st_size / steps, "image_bytes_per_step": stored / steps}
            rows[frames]["samples_per_s"] = {
                w: _loader_rate(root, did, args.batch, w, batches=6) for w in sorted({0, args.workers})
            }
        for compression, opts in (("gzip", 4), ("lzf", None)):
            rows[f"raw + {compression}"] = {
                "image_bytes_per_step": _filtered_bytes(episodes, compression, opts) / steps
            }
    mean_steps = steps / len(episodes)
    report = {
        "episodes": len(episodes),
        "steps": steps,
        "mean_steps": mean_steps,
        "cameras": "2 x 128x128",
        "jpeg_quality": JPEG_QUALITY,
        "raw_image_bytes_per_step": image_bytes / steps,
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{len(episodes)} episodes, {steps} steps (mean {mean_steps:.0f}), 2 cameras 128², "
        f"JPEG quality {JPEG_QUALITY}"
    )
    print("| storage | image bytes/step | file bytes/step | 1,000 episodes of 400 steps |")
    print("| --- | --- | --- | --- |")
    for name, row in rows.items():
        per_step = row.get("file_bytes_per_step", row["image_bytes_per_step"])
        file = f"{row['file_bytes_per_step']:,.0f}" if "file_bytes_per_step" in row else "-"
        print(f"| {name} | {row['image_bytes_per_step']:,.0f} | {file} | {per_step * 400_000 / 1e9:.1f} GB |")
    for name in ("raw", "jpeg"):
        rates = ", ".join(f"{w} workers {r:,.0f}" for w, r in rows[name]["samples_per_s"].items())
        print(f"loader samples/s ({name}, batch {args.batch}): {rates}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
