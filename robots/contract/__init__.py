"""The wire contract between the robot drivers and the runtime (DESIGN.md section 2)."""
