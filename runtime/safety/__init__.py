"""The runtime's safety layer: the action filter, the watchdogs and the loop's safety state machine."""
