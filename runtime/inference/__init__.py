"""Serving an exported policy: execution-provider choice, verification, and the model-file pre-flight."""
