"""Reference tasks (reach, lift, stack) as Gymnasium environments, scripted experts, dataset collection."""
