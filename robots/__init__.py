"""Robot drivers behind one ZeroMQ contract: arm specs, kinematics, the servo, MuJoCo sim, reference tasks, experts."""
