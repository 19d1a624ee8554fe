"""Reference tasks (reach, lift, stack) as Gymnasium environments with driver-shaped observations, and the
scripted experts that solve them from privileged scene state."""
