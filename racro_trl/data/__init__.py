"""Training data: loading and converting datasets, the synthetic sample, ``racro prepare-data``."""
