"""Camera intrinsics, hand-eye extrinsics and joint offsets, stored as YAML."""
