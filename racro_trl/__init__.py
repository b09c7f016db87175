"""racro-trl: RACRO caption reward optimization as a TRL recipe."""

__version__ = "0.1.0"
