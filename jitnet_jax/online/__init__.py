"""Algorithm 1 and what drives it: the compiled engine, the host runner, the reference loop, checkpoints, sharding."""
