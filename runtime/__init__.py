"""The 20 Hz control loop, inference backends, safety filter and watchdogs (see DESIGN §1, §4)."""
