"""Robot drivers behind one ZeroMQ contract: arm specs, kinematics, MuJoCo sim, dataset collection."""
