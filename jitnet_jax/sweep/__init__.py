"""Many members over the engine's step: vmapped/mapped hyperparameter sweeps."""
