"""MuJoCo simulation of the arms: models, physics and the sim driver."""
