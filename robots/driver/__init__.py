"""What every arm driver shares behind the ZeroMQ contract: sockets, sessions, dead-man, status (server.py)."""
