"""`pac-camera`: real frames (a synthetic pattern, a video file written here) through the real encoder and
socket, stamped on the driver's clock at the configured rate, and relayed by the arm's driver.

Rates are checked on a fake clock, so nothing depends on this machine's speed.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import zmq

from robots.camera import cli as pac_camera
from robots.camera.publisher import CameraConfig, CameraPublisher
from robots.camera.source import OpenCvSource, SyntheticSource
from robots.contract import messages as msg
from robots.contract.security import private_endpoint
from robots.contract.wire import decode
from robots.driver.relay import CameraRelay


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000_000

    def __call__(self) -> int:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += round(seconds * 1e9)


def _subscriber(endpoint: str) -> zmq.Socket:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"image/")
    sub.connect(endpoint)
    return sub


def _receive(sub: zmq.Socket, send, count: int, timeout_s: float = 20.0) -> list[msg.ImageMsg]:
    """Call `send` until `count` frames arrived (a PUB drops what it sends before the SUB's connection is up)."""
    got: list[msg.ImageMsg] = []
    end = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < end:
        send()
        while sub.poll(20):
            got.append(msg.ImageMsg.from_envelope(decode(sub.recv_multipart())))
    return got[:count]


def test_frames_are_jpeg_of_the_configured_size_stamped_at_the_configured_rate():
    clock = FakeClock()
    endpoint = private_endpoint("cam")
    config = CameraConfig("front_left", endpoint, rate_hz=15.0, width=96, height=64)
    stamps: list[int] = []
    sub = _subscriber(endpoint)
    timing = []  # non-empty once the timed frames start

    def sleep(seconds: float) -> None:  # the publisher waits for its next deadline: take what arrived meanwhile
        clock.sleep(seconds)
        while timing and sub.poll(100):
            stamps.append(msg.ImageMsg.from_envelope(decode(sub.recv_multipart())).t_capture_ns)

    publisher = CameraPublisher(config, SyntheticSource(96, 64, clock=clock), clock=clock, sleep=sleep)
    try:
        frames = _receive(sub, lambda: publisher.run(frames=publisher.seq + 1), 5)
        timing.append(True)
        publisher.run(frames=publisher.seq + 10)  # ten more frames, paced on the fake clock
    finally:
        sub.close(0)
        publisher.close()
    assert len(frames) == 5
    assert all(f.camera == "front_left" and f.image.shape == (64, 96, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.seq for f in frames] == sorted(f.seq for f in frames)
    assert len(stamps) == 10 and np.all(np.diff(stamps) == round(1e9 / 15.0))  # one period apart, no drift
    assert publisher.overruns == 0


def test_a_video_file_is_read_through_opencv_and_stamped_on_this_hosts_monotonic_clock(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (160, 120))
    for i in range(10):
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:, :, 2] = 200  # red in BGR
        frame[:, : 16 * (i + 1), 1] = 120
        writer.write(frame)
    writer.release()
    source = OpenCvSource(str(path), 80, 60)
    before = time.monotonic_ns()
    image, t = source.grab()
    after = time.monotonic_ns()
    source.close()
    assert image.shape == (60, 80, 3) and before <= t <= after
    assert image[..., 0].mean() > 150 and image[..., 2].mean() < 60  # RGB: red first


def test_the_driver_relays_a_cameras_frames_on_its_own_stream():
    ctx = zmq.Context.instance()
    cam_endpoint, driver_endpoint = private_endpoint("cam"), private_endpoint("drv")
    publisher = CameraPublisher(CameraConfig("front_right", cam_endpoint), SyntheticSource(128, 128))
    relay = CameraRelay(ctx, [cam_endpoint])
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(driver_endpoint)
    sub = _subscriber(driver_endpoint)
    sent: list[int] = []
    try:
        frames = _receive(sub, lambda: (sent.append(publisher.publish_one()), relay.forward(pub)), 3)
    finally:
        for s in (sub, pub):
            s.close(0)
        relay.close()
        publisher.close()
    assert len(frames) == 3 and all(f.camera == "front_right" and f.source == "camera/front_right" for f in frames)
    assert {f.t_capture_ns for f in frames} <= set(sent)  # the camera's own capture stamps, untouched


def test_a_realsense_without_pyrealsense2_says_what_to_install(capsys):
    pytest.importorskip("pytest")
    try:
        import pyrealsense2  # noqa: F401
    except ImportError:
        assert pac_camera.main(["--device", "realsense:123456", "--name", "front_left"]) == pac_camera.EXIT_NO_SDK
        assert "pac-runtime[realsense]" in capsys.readouterr().err
    else:
        pytest.skip("pyrealsense2 is installed here")


def test_a_missing_device_is_a_clear_error(capsys):
    assert pac_camera.main(["--device", "/dev/video97", "--name", "front_left"]) == pac_camera.EXIT_NO_CAMERA
    assert "/dev/video97" in capsys.readouterr().err
