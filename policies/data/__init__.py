"""Offline datasets on the training side, in the Minari format (DESIGN §6): collecting them from the task
environments (`pac-collect`, collect.py), checksums sealed into them when written and checked when read
(integrity.py), checking and opening them (dataset.py), camera frames stored as JPEG (frames.py), reading
episodes for training (episodes.py), n-step targets (nstep.py), episodes split across DDP ranks
(sharding.py), and batches of transitions for a DataLoader (transitions.py)."""
