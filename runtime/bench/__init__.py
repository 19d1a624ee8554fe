"""`pac-bench`: will this policy hold 20 Hz on this machine, and with which settings? One command answers.

Inference mode times every requested backend (and thread/spin setting) in interleaved rounds against this
machine's FLOP and weight-streaming bounds, probed in the same run; end-to-end mode runs the real loop against
the sim driver with cameras. The verdict compares the serving setting's p99 with a budget and recommends the
most conservative setting that would pass. Modules: `stats` (percentiles), `probes` (matmul peak, memory
bandwidth, JPEG decode baseline), `backends` (what runs a policy file), `inference` (interleaved timing and
sweeps), `e2e` (the loop against the sim), `verdict` (budget and recommendation), `report` (table, JSON,
PNG), `cli` (the command).
"""
