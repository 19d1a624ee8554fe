"""Offline datasets on the training side: collecting them from the task environments (`pac-collect`) and
opening them for training, in the Minari format (DESIGN §6)."""
