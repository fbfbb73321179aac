"""promptlab: a local-first prompt lab."""

__version__ = "0.1.0"
