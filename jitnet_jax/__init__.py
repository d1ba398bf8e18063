"""jitnet-jax: online model distillation (JITNet) for efficient video inference, in JAX/Flax."""

__version__ = "0.10.0"
