"""The toy world of seed 003: semi-factored processes, belief-state steering, EM analog,
persona engineering. Modules: processes, beliefs, model, steering, experiments, cli."""
