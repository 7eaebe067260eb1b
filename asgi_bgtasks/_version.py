"""The package's version (hatch reads it here)."""

__version__ = "0.1.0"
