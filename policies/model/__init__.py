"""The Perceiver-Actor-Critic network and its size ladder."""
