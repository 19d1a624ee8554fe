"""Observation → model inputs: the one implementation that training and serving share (DESIGN §3)."""
