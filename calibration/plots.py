"""The intrinsics report image: every detected corner and its residual vector, magnified, on one canvas.

Residuals that all point one way in a region show a distortion model too simple or a bad image; random
ones of a tenth of a pixel are what a good calibration looks like.
"""

from __future__ import annotations

import cv2
import numpy as np

from calibration.intrinsics import IntrinsicsRun

RESIDUAL_GAIN = 50.0  # residual vectors drawn this many times their length


def residual_image(run: IntrinsicsRun, min_width: int = 640) -> np.ndarray:
    r = run.result
    scale = max(1, int(np.ceil(min_width / r.width)))
    canvas = np.full((r.height * scale, r.width * scale, 3), 255, np.uint8)
    for name, det in run.detections.items():
        for p, d in zip(det.image_points, run.residuals[name], strict=True):
            a = tuple(int(round(v)) for v in (p + 0.5) * scale)
            b = tuple(int(round(v)) for v in (p + 0.5 + RESIDUAL_GAIN * d) * scale)
            cv2.circle(canvas, a, 2, (0, 160, 0), -1)
            cv2.line(canvas, a, b, (0, 0, 220), 1)
    text = f"{len(run.detections)} images, RMS {r.rms:.3f} px, residuals x{RESIDUAL_GAIN:g}"
    cv2.putText(canvas, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return canvas
