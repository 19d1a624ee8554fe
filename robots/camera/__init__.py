"""Real camera publishers (`pac-camera`): frames from OpenCV or RealSense devices as `image/<camera>` messages."""
