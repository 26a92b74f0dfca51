"""ltjax: long-tailed visual recognition in JAX and Flax."""

__version__ = "0.1.0"
